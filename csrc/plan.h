#pragma once
// How the elements of a list of tensors are split into blocks of work (the
// CUDA backend's grouping into launches is in cuda/launch_plan.h).
//
// Both backends see a group of tensors as one virtual concatenation of their
// elements and cut it into near-equal contiguous ranges, one per block. A block
// range can cover many small tensors or part of a big one. The cut depends only
// on the element counts, never on the thread count or stream, which is what
// makes the result bitwise reproducible. Plain C++ (no torch), usable from
// device code, and unit-tested on the CPU.

#include <cstdint>

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

// Calls visit(s, lo, hi) for the pieces of block b of `blocks`: elements [lo, hi)
// of segment s, in order, for segments of a concatenation of `total` elements
// that end at ends[0..count), strictly increasing (the tail of one segment,
// whole segments, the head of another).
#if defined(__CUDACC__)
#pragma nv_exec_check_disable
#endif
template <class Visit>
TOTALNORM_HD void for_each_piece(const int64_t* ends, int64_t count, int64_t total, int64_t blocks, int64_t b,
                                 Visit&& visit) {
  int64_t pos = split_point(total, blocks, b);
  const int64_t stop = split_point(total, blocks, b + 1);
  if (pos >= stop) return;
  for (int64_t s = find_segment(ends, count, pos); pos < stop; ++s) {
    const int64_t start = s == 0 ? 0 : ends[s - 1];
    const int64_t until = ends[s] < stop ? ends[s] : stop;
    visit(s, pos - start, until - start);
    pos = until;
  }
}

}  // namespace totalnorm
