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

#include "../strided.h"

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

// A launch's table as the kernels read it from one int64 array: `count` ends,
// `count` data pointers and, with layouts, `count` layout indices (-1: dense)
// followed by the Layouts they index.
struct TableView {
  const int64_t* ends;
  const void* const* data;
  const int64_t* layout_of;  // null without layouts
  const Layout* layouts;

  TOTALNORM_HD static TableView of(const int64_t* table, int64_t count, bool with_layouts) {
    return TableView{table, reinterpret_cast<const void* const*>(table + count),
                     with_layouts ? table + 2 * count : nullptr,
                     with_layouts ? reinterpret_cast<const Layout*>(table + 3 * count) : nullptr};
  }
  // The layout of tensor t, null for a dense one.
  TOTALNORM_HD const Layout* layout(int64_t t) const {
    return layout_of != nullptr && layout_of[t] >= 0 ? layouts + layout_of[t] : nullptr;
  }
};

// The array TableView reads, for the plan's tensors: data[i] and layout_of[i]
// (index into layouts, -1 for dense) of the i-th span the plan was made from.
// with_layouts: whether any of them is strided (the array then has the layout part).
std::vector<int64_t> encode_table(const Plan& plan, const std::vector<const void*>& data,
                                  const std::vector<int64_t>& layout_of, const std::vector<Layout>& layouts,
                                  bool* with_layouts);

// Blocks to launch for `units` units: as many as are resident at once
// (sms * blocks_per_sm, at least one), never more than there are units.
int64_t grid_size(int64_t units, int64_t sms, int64_t blocks_per_sm);

}  // namespace totalnorm
