#pragma once
// How the CUDA backend splits the tensors of one element type into units of
// work. Plain C++ (no CUDA, no torch): compiled into every build of the
// library, so its unit tests (test_plan.cpp) run without nvcc.
//
// A unit is a range of the tensors' concatenation (plan.h's weighted split):
// each tensor costs `tensor_cost` elements on top of its elements, so many
// tiny tensors spread over many units instead of serialising in one. The
// units, and the order their partials merge in, depend on the element counts
// only: every GPU model gives the same bits. How many blocks run the units
// (grid_size) depends on the GPU, which does not change which unit reads what.

#include <cstdint>
#include <vector>

namespace totalnorm {

struct PlanLimits {
  int64_t tensor_cost;  // what a tensor costs in elements, on top of its elements
  int64_t per_unit;     // cost a unit should cover
  int64_t max_units;    // bound of the partials buffer
};

// One launch over the non-empty tensors of one element type.
struct Plan {
  std::vector<int64_t> tensors;  // indices of the non-empty tensors, in list order
  std::vector<int64_t> ends;     // exclusive end of each of them in the concatenation
  int64_t units = 0;             // one partial each; 0 when every tensor is empty
};

Plan plan_units(const std::vector<int64_t>& numels, const PlanLimits& limits);

// Blocks to launch for `units` units: as many as are resident at once
// (sms * blocks_per_sm, at least one), never more than there are units.
int64_t grid_size(int64_t units, int64_t sms, int64_t blocks_per_sm);

}  // namespace totalnorm
