#pragma once
// How the CUDA kernels cut a piece of a tensor into 16-byte groups of
// elements, and read a group whose bytes do not start on a 16-byte boundary.
// Plain C++ (no CUDA, no torch), shared by host and device code and
// unit-tested on the CPU (test_plan.cpp).
//
// A group is the elements [g * per_group, (g + 1) * per_group) of a tensor's
// logical order (per_group = 16 / element size). The reduce kernel combines a
// group's contributions into one term, so which elements share a group
// decides the bits of the norm: it must follow the elements' logical index
// only, never their address, for a view to give the bits of its clone (a
// clone starts 16-byte aligned).

#include <cstdint>

#include "../norm_math.h"

namespace totalnorm {

// Elements [lo, hi) of one tensor: one by one up to the first multiple of
// per_group (the head), then whole groups, then the rest one by one (the tail).
struct GroupSplit {
  int64_t head_end;    // elements [lo, head_end) one by one
  int64_t groups;      // group k covers [head_end + k * per_group, head_end + (k + 1) * per_group)
  int64_t tail_start;  // elements [tail_start, hi) one by one
};

TOTALNORM_HD GroupSplit split_into_groups(int64_t lo, int64_t hi, int64_t per_group) {
  const int64_t to_boundary = (per_group - lo % per_group) % per_group;
  const int64_t head_end = lo + (hi - lo < to_boundary ? hi - lo : to_boundary);
  const int64_t groups = (hi - head_end) / per_group;
  return GroupSplit{head_end, groups, head_end + groups * per_group};
}

// The 16 bytes that start `shift` bytes into the 16-byte chunk `first` and
// continue into the next chunk `second`; shift in [0, 16). V holds four 32-bit
// words x, y, z, w in memory order (uint4 on the device), little-endian. Lets
// a group whose address is shift bytes past a 16-byte boundary be read with
// two aligned 16-byte loads.
template <class V>
TOTALNORM_HD V join_chunks(const V& first, const V& second, int shift) {
  uint32_t w0, w1, w2, w3, w4;  // the five words the result's bytes lie in
  switch (shift / 4) {
    case 0:
      w0 = first.x, w1 = first.y, w2 = first.z, w3 = first.w, w4 = second.x;
      break;
    case 1:
      w0 = first.y, w1 = first.z, w2 = first.w, w3 = second.x, w4 = second.y;
      break;
    case 2:
      w0 = first.z, w1 = first.w, w2 = second.x, w3 = second.y, w4 = second.z;
      break;
    default:
      w0 = first.w, w1 = second.x, w2 = second.y, w3 = second.z, w4 = second.w;
      break;
  }
  const int bits = (shift % 4) * 8;
  auto funnel = [bits](uint32_t lo, uint32_t hi) { return bits == 0 ? lo : (lo >> bits) | (hi << (32 - bits)); };
  V out{};
  out.x = funnel(w0, w1);
  out.y = funnel(w1, w2);
  out.z = funnel(w2, w3);
  out.w = funnel(w3, w4);
  return out;
}

}  // namespace totalnorm
