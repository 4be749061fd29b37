#pragma once
// Strided layouts the CUDA kernels read (and scale) in place, so that a
// gradient with gaps in its layout costs no copy and no launch of its own.
// Elements are visited in logical (row-major) order, the order of the
// contiguous copy they replace (ops_cuda.cu's visit_piece also groups them as
// it would group the copy's, so the norm has the copy's bits). Plain C++,
// shared by host and device code and unit-tested on the CPU (test_plan.cpp).

#include <cstdint>

#include "norm_math.h"

namespace totalnorm {

constexpr int kMaxDims = 6;

// Sizes and strides in elements, outermost dimension first, after collapse_layout.
struct Layout {
  int64_t dims;
  int64_t sizes[kMaxDims];
  int64_t strides[kMaxDims];
};
constexpr int64_t kLayoutWords = 1 + 2 * kMaxDims;  // int64 words of a Layout in a device table
static_assert(sizeof(Layout) == kLayoutWords * sizeof(int64_t), "a Layout is a plain array of int64");

// Offset, in elements, of the i-th element in logical order: a division per
// dimension, so the kernels call it once per piece, not per element (see
// LayoutCursor).
TOTALNORM_HD int64_t offset_of(const Layout& layout, int64_t i) {
  int64_t offset = 0;
  for (int64_t d = layout.dims - 1; d >= 0; --d) {
    const int64_t size = layout.sizes[d];
    offset += (i % size) * layout.strides[d];
    i /= size;
  }
  return offset;
}

// A position in a layout's logical order, walked without division: the
// multi-index, innermost dimension first (index[k] is dimension dims - 1 - k),
// and the offset in elements of the element there. The outermost index never
// wraps, so a cursor moved past the end keeps a consistent (unused) offset.
// at() places one with a division per dimension; step_one() and advance()
// move it with one compare (and rarely a carry) per dimension.
struct LayoutCursor {
  int64_t index[kMaxDims];
  int64_t offset;

  // The cursor at logical element i (also the digits of an advance by i).
  TOTALNORM_HD static LayoutCursor at(const Layout& layout, int64_t i) {
    LayoutCursor c{};
#if defined(__CUDACC__)
#pragma unroll
#endif
    for (int k = 0; k < kMaxDims; ++k) {
      const int64_t d = layout.dims - 1 - k;
      if (d < 0) break;
      const int64_t size = layout.sizes[d];
      c.index[k] = d == 0 ? i : i % size;  // the outermost takes what is left
      c.offset += c.index[k] * layout.strides[d];
      if (d > 0) i /= size;
    }
    return c;
  }

  // To the next element in logical order.
  TOTALNORM_HD void step_one(const Layout& layout) {
#if defined(__CUDACC__)
#pragma unroll
#endif
    for (int k = 0; k < kMaxDims; ++k) {
      const int64_t d = layout.dims - 1 - k;
      offset += layout.strides[d];
      if (++index[k] < layout.sizes[d] || d == 0) return;
      index[k] = 0;  // wraps: carry into the next dimension out
      offset -= layout.sizes[d] * layout.strides[d];
    }
  }

  // Forward by the element count whose cursor (LayoutCursor::at) is `by`:
  // its indices are added digit by digit, with carries.
  TOTALNORM_HD void advance(const Layout& layout, const LayoutCursor& by) {
    offset += by.offset;
    int64_t carry = 0;
#if defined(__CUDACC__)
#pragma unroll
#endif
    for (int k = 0; k < kMaxDims; ++k) {
      const int64_t d = layout.dims - 1 - k;
      if (d < 0) break;
      int64_t i = index[k] + by.index[k] + carry;
      offset += carry * layout.strides[d];
      carry = d > 0 && i >= layout.sizes[d] ? 1 : 0;
      if (carry) {
        i -= layout.sizes[d];
        offset -= layout.sizes[d] * layout.strides[d];
      }
      index[k] = i;
    }
  }
};

// The layout of a non-empty tensor with these sizes and strides, with size-1
// dimensions dropped and dimensions that continue each other merged; false
// when more than kMaxDims remain.
inline bool collapse_layout(const int64_t* sizes, const int64_t* strides, int64_t ndim, Layout* out) {
  int64_t inner_size[kMaxDims];    // innermost first while collecting
  int64_t inner_stride[kMaxDims];
  int64_t dims = 0;
  for (int64_t d = ndim - 1; d >= 0; --d) {
    if (sizes[d] == 1) continue;
    if (dims > 0 && strides[d] == inner_stride[dims - 1] * inner_size[dims - 1]) {
      inner_size[dims - 1] *= sizes[d];  // continues the dimension inside it
      continue;
    }
    if (dims == kMaxDims) return false;
    inner_size[dims] = sizes[d];
    inner_stride[dims] = strides[d];
    ++dims;
  }
  if (dims == 0) {  // a single element
    inner_size[0] = 1;
    inner_stride[0] = 1;
    dims = 1;
  }
  out->dims = dims;
  for (int64_t k = 0; k < kMaxDims; ++k) {
    out->sizes[k] = k < dims ? inner_size[dims - 1 - k] : 1;
    out->strides[k] = k < dims ? inner_stride[dims - 1 - k] : 0;
  }
  return true;
}

// Whether no two elements of the layout share memory: with dimensions ordered by
// stride, each stride passes the extent of the dimensions inside it. Layouts
// this cannot prove (torch's "too hard" overlaps) count as overlapping.
inline bool is_non_overlapping(const Layout& layout) {
  int64_t order[kMaxDims];
  for (int64_t d = 0; d < layout.dims; ++d) order[d] = d;
  for (int64_t i = 1; i < layout.dims; ++i) {  // insertion sort by stride
    for (int64_t j = i; j > 0 && layout.strides[order[j]] < layout.strides[order[j - 1]]; --j) {
      const int64_t swap = order[j];
      order[j] = order[j - 1];
      order[j - 1] = swap;
    }
  }
  int64_t extent = 0;  // span of the dimensions so far, in elements, minus one
  for (int64_t k = 0; k < layout.dims; ++k) {
    const int64_t d = order[k];
    if (layout.sizes[d] == 1) continue;
    if (layout.strides[d] <= extent) return false;
    extent += (layout.sizes[d] - 1) * layout.strides[d];
  }
  return true;
}

}  // namespace totalnorm
