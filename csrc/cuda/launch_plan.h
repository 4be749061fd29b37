#pragma once
// How the CUDA backend groups the tensors of one element type into launches.
// Plain C++ (no CUDA, no torch): compiled into every build of the library, so
// its unit tests (test_plan.cpp) run without nvcc.

#include <cstdint>
#include <vector>

namespace totalnorm {

// One kernel launch of the CUDA backend: up to `max_tensors` tensors of one dtype.
struct Launch {
  int64_t first = 0;           // position of its first tensor in Plan::tensors
  int64_t count = 0;           // number of tensors it reads
  int64_t elements = 0;        // their total element count
  int64_t blocks = 0;          // grid size: one partial per block
  int64_t partial_offset = 0;  // where its partials start in the workspace
};

struct PlanLimits {
  int64_t max_tensors;  // tensors one launch's parameter table holds
  int64_t per_block;    // elements a block should read
  int64_t max_blocks;   // grid size that fills the device
};

struct Plan {
  std::vector<int64_t> tensors;  // indices of the non-empty tensors, in list order
  std::vector<Launch> launches;
  int64_t partials = 0;  // total partial slots over all launches
};

// Plans the launches for tensors of the given element counts (empty ones skipped).
Plan plan_launches(const std::vector<int64_t>& numels, const PlanLimits& limits);

}  // namespace totalnorm
