#pragma once
// How the elements of a list of tensors are split into parts of work: blocks
// on the CPU, units on CUDA (whose plan is in cuda/launch_plan.h).
//
// Both backends see a group of tensors as one virtual concatenation of their
// elements and cut it into near-equal contiguous ranges, one per part (on CUDA
// each tensor also carries a fixed cost). A part can cover many small tensors
// or part of a big one. The cut depends only
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

// Number of blocks for `total` elements: about `per_block` each, between 1 and max_blocks.
int64_t block_count(int64_t total, int64_t per_block, int64_t max_blocks);

// Calls visit(s, lo, hi) for the pieces of part `part` of `parts`: elements
// [lo, hi) of segment s, in order, for segments that end at ends[0..count)
// in the concatenation (non-decreasing; empty segments get no piece).
//
// The parts are near-equal ranges of a cost axis on which each segment costs
// `weight` (its fixed cost, in elements) followed by its elements, so a part
// holds at most about part_size / weight segments however small they are.
// weight == 0 splits the elements themselves. Every element lands in exactly
// one part, and the split depends on nothing but the counts.
#if defined(__CUDACC__)
#pragma nv_exec_check_disable
#endif
template <class Visit>
TOTALNORM_HD void for_each_weighted_piece(const int64_t* ends, int64_t count, int64_t weight, int64_t parts,
                                          int64_t part, Visit&& visit) {
  if (count == 0) return;
  const int64_t from = split_point(ends[count - 1] + count * weight, parts, part);
  const int64_t to = split_point(ends[count - 1] + count * weight, parts, part + 1);
  if (from >= to) return;
  // The first segment whose cost range ends past `from`.
  int64_t lo_s = 0;
  int64_t hi_s = count - 1;
  while (lo_s < hi_s) {
    const int64_t mid = lo_s + (hi_s - lo_s) / 2;
    if (ends[mid] + (mid + 1) * weight > from) {
      hi_s = mid;
    } else {
      lo_s = mid + 1;
    }
  }
  for (int64_t s = lo_s; s < count; ++s) {
    const int64_t start = s == 0 ? 0 : ends[s - 1];
    const int64_t first_element = start + (s + 1) * weight;  // cost position of its element 0
    if (first_element - weight >= to) break;
    const int64_t n = ends[s] - start;
    const int64_t lo = from - first_element < 0 ? 0 : (from - first_element > n ? n : from - first_element);
    const int64_t hi = to - first_element < 0 ? 0 : (to - first_element > n ? n : to - first_element);
    if (lo < hi) visit(s, lo, hi);
  }
}

// Calls visit(s, lo, hi) for the pieces of block b of `blocks`: the plain split
// of the elements (the tail of one segment, whole segments, the head of another).
#if defined(__CUDACC__)
#pragma nv_exec_check_disable
#endif
template <class Visit>
TOTALNORM_HD void for_each_piece(const int64_t* ends, int64_t count, int64_t blocks, int64_t b, Visit&& visit) {
  for_each_weighted_piece(ends, count, 0, blocks, b, visit);
}

}  // namespace totalnorm
