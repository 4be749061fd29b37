#pragma once
// How the elements of a list of tensors are split into blocks of work.
//
// Both backends see a group of tensors as one virtual concatenation of their
// elements and cut it into near-equal contiguous ranges, one per block. A block
// range can cover many small tensors or part of a big one. The cut depends only
// on the element counts, never on the thread count or stream, which is what
// makes the result bitwise reproducible. Plain C++ (no torch), usable from
// device code, and unit-tested on the CPU.

#include <cstdint>
#include <vector>

#include "norm_math.h"

namespace totalnorm {

// Start of part b of `parts` near-equal parts of [0, total); b == parts gives total.
TOTALNORM_HD int64_t split_point(int64_t total, int64_t parts, int64_t b) {
  const int64_t q = total / parts;
  const int64_t r = total % parts;
  return b * q + (b < r ? b : r);
}

// Index of the segment holding element `pos`, given each segment's exclusive
// end in the concatenation (`ends` increasing, pos < ends[n - 1]).
TOTALNORM_HD int64_t find_segment(const int64_t* ends, int64_t n, int64_t pos) {
  int64_t lo = 0;
  int64_t hi = n - 1;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (ends[mid] > pos) {
      hi = mid;
    } else {
      lo = mid + 1;
    }
  }
  return lo;
}

// Number of blocks for `total` elements: about `per_block` each, between 1 and max_blocks.
int64_t block_count(int64_t total, int64_t per_block, int64_t max_blocks);

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
