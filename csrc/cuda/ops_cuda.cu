// The CUDA backend: a multi-tensor reduction in one launch per element type
// and table of up to 2040 tensors.
//
// The tensors of one element type are seen as one concatenation (plan.h) and cut
// into near-equal ranges, one per block; the table of tensors travels by value
// as a __grid_constant__ kernel parameter (up to 2040 tensors a launch), so
// there is no host-to-device copy and CUDA-graph capture records it as is. Each
// block writes one float64 accumulation; one more single-block launch merges
// them in a fixed order into the device's (count, accumulation) pair, and
// finalize merges pairs, finalizes and rounds once. No floating-point
// atomics, no host synchronisation.

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <array>
#include <vector>

#include "../checks.h"
#include "../elements.h"
#include "../plan.h"
#include "launch_plan.h"

namespace totalnorm::cuda {
namespace {

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
// Elements a block should read: enough to amortise its start, few enough that a
// 2,000-tensor step of ~17M elements still fills an H100 (132 SMs x 4 blocks);
// past 2,048 blocks the blocks grow instead.
constexpr int64_t kBlockElements = 1 << 15;
constexpr int64_t kMaxBlocks = 2048;
// Table sizes: the large one fills the 32,764-byte kernel-parameter limit.
constexpr int kSmallTable = 64;
constexpr int kLargeTable = 2040;

template <int Cap>
struct TensorTable {
  int64_t count;
  int64_t elements;
  int64_t ends[Cap];  // exclusive end of each tensor in the concatenation
  const void* data[Cap];
};
static_assert(sizeof(TensorTable<kLargeTable>) + 2 * sizeof(void*) <= 32764,
              "the table must fit in the kernel-parameter space");

// Storage types of the elements (half and bfloat16 read as raw bits).
struct HalfBits {
  uint16_t bits;
};
struct BFloat16Bits {
  uint16_t bits;
};

__device__ __forceinline__ double widen(float x) { return x; }
__device__ __forceinline__ double widen(HalfBits x) { return __half2float(__ushort_as_half(x.bits)); }
__device__ __forceinline__ double widen(BFloat16Bits x) {
  return __uint_as_float(static_cast<uint32_t>(x.bits) << 16);
}

template <Order O>
__device__ __forceinline__ double contribution(float x, double p) {
  return NormOp<O>::contribution(fabs(widen(x)), p);
}
template <Order O>
__device__ __forceinline__ double contribution(double x, double p) {
  return NormOp<O>::contribution(fabs(x), p);
}
template <Order O>
__device__ __forceinline__ double contribution(HalfBits x, double p) {
  return NormOp<O>::contribution(fabs(widen(x)), p);
}
template <Order O>
__device__ __forceinline__ double contribution(BFloat16Bits x, double p) {
  return NormOp<O>::contribution(fabs(widen(x)), p);
}
template <Order O>
__device__ __forceinline__ double contribution(float2 z, double p) {
  return complex_contribution<O>(z.x, z.y, p);
}
template <Order O>
__device__ __forceinline__ double contribution(double2 z, double p) {
  return complex_contribution<O>(z.x, z.y, p);
}

// Fixed-shape block reduction: the same tree for the same inputs, every run.
template <class Combine>
__device__ double block_reduce(double v, double identity, Combine combine) {
  __shared__ double warp_partials[kWarps];
  __syncthreads();  // a previous call's readers are done with warp_partials
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  for (int offset = 16; offset > 0; offset /= 2) v = combine(v, __shfl_down_sync(0xffffffffu, v, offset));
  if (lane == 0) warp_partials[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < kWarps ? warp_partials[lane] : identity;
    for (int offset = 16; offset > 0; offset /= 2) v = combine(v, __shfl_down_sync(0xffffffffu, v, offset));
  }
  return v;  // meaningful in thread 0
}

// Calls visit(data, lo, hi) for each piece of this block's range of the
// concatenation (plan.h).
template <int Cap, class Visit>
__device__ void for_each_table_piece(const TensorTable<Cap>& table, Visit&& visit) {
  totalnorm::for_each_piece(table.ends, table.count, table.elements, gridDim.x, blockIdx.x,
                            [&](int64_t t, int64_t lo, int64_t hi) { visit(table.data[t], lo, hi); });
}

// This thread's share of elements [lo, hi) of `data`: one element at a time up
// to the first 16-byte boundary, then 16-byte vectors with four loads in flight,
// then the tail. on_element(S*) and on_vector(uint4* address, uint4 value).
template <class S, bool kReadOnly, class OnElement, class OnVector>
__device__ void visit_slice(S* data, int64_t lo, int64_t hi, OnElement&& on_element, OnVector&& on_vector) {
  constexpr int64_t kVec = 16 / sizeof(S);
  const int64_t stride = blockDim.x;
  const auto misalign = reinterpret_cast<uintptr_t>(data + lo) % 16;
  const int64_t head = min(hi - lo, static_cast<int64_t>((16 - misalign) % 16 / sizeof(S)));
  for (int64_t i = lo + threadIdx.x; i < lo + head; i += stride) on_element(data + i);
  const int64_t body = lo + head;
  const int64_t vectors = (hi - body) / kVec;
  uint4* vec = reinterpret_cast<uint4*>(data + body);
  auto load = [](const uint4* at) { return kReadOnly ? __ldg(at) : *at; };
  int64_t v = threadIdx.x;
  for (; v + 3 * stride < vectors; v += 4 * stride) {
    uint4 raw[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) raw[k] = load(vec + v + k * stride);
#pragma unroll
    for (int k = 0; k < 4; ++k) on_vector(vec + v + k * stride, raw[k]);
  }
  for (; v < vectors; v += stride) on_vector(vec + v, load(vec + v));
  for (int64_t i = body + vectors * kVec + threadIdx.x; i < hi; i += stride) on_element(data + i);
}

template <Order O, class S, int Cap>
__global__ void __launch_bounds__(kThreads)
    reduce_kernel(const __grid_constant__ TensorTable<Cap> table, double p, double* __restrict__ partials) {
  using Op = NormOp<O>;
  // Sums cascade in three levels, so that a thread's hundreds of terms (2,048
  // blocks over 1e9 elements) do not round hundreds of times in a row:
  // each vector's (or lone element's) contributions form one term, `run` adds
  // 32 terms, `mid` adds 32 runs, `acc` adds the rest. The counts follow this
  // thread's element positions only. Max, min and counts (exact) use `acc` alone.
  constexpr bool kCascade = O == Order::One || O == Order::Two || O == Order::General;
  double acc = Op::identity;
  double run = 0.0;
  double mid = 0.0;
  int run_terms = 0;
  int mid_runs = 0;
  auto add_term = [&](double term) {
    if constexpr (kCascade) {
      run += term;
      if (++run_terms == 32) {
        mid += run;
        run = 0.0;
        run_terms = 0;
        if (++mid_runs == 32) {
          acc += mid;
          mid = 0.0;
          mid_runs = 0;
        }
      }
    } else {
      acc = Op::combine(acc, term);
    }
  };
  for_each_table_piece(table, [&](const void* data, int64_t lo, int64_t hi) {
    visit_slice<S, true>(
        static_cast<S*>(const_cast<void*>(data)), lo, hi,
        [&](const S* x) { add_term(contribution<O>(*x, p)); },
        [&](const uint4*, const uint4& raw) {
          S elems[16 / sizeof(S)];
          memcpy(elems, &raw, sizeof(raw));
          constexpr int kElems = 16 / sizeof(S);
          double term = contribution<O>(elems[0], p);
#pragma unroll
          for (int k = 1; k < kElems; ++k) term = Op::combine(term, contribution<O>(elems[k], p));
          add_term(term);
        });
  });
  if constexpr (kCascade) acc += mid + run;
  acc = block_reduce(acc, Op::identity, [](double a, double b) { return Op::combine(a, b); });
  if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

// Merges partials in a fixed order in one block (at most a few per thread:
// 2,048 blocks a launch, one row a device or rank). `values` holds bare block
// accumulations (stride 1, covering `count` elements in all) or (count,
// accumulation) rows (stride 2). Writes the merged pair to `pair` and/or the
// norm rounded once to Out to `total`, and the clip coefficient to `coef`.
template <class Out>
__global__ void __launch_bounds__(kThreads)
    fold_kernel(const double* __restrict__ values, int64_t n, int stride, double count, Order order, double p,
                double* pair, Out* total, double max_norm, Out* coef) {
  Partial part{0.0, identity_of(order)};
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const Partial next = stride == 2 ? Partial{values[2 * i], values[2 * i + 1]} : Partial{0.0, values[i]};
    part = merge_partials(order, part, next);
  }
  part.acc = block_reduce(part.acc, identity_of(order), [order](double a, double b) { return combine_partials(order, a, b); });
  part.count = block_reduce(part.count, 0.0, [](double a, double b) { return a + b; });
  if (threadIdx.x == 0) {
    if (stride == 1) part.count = count;
    if (pair != nullptr) {
      pair[0] = part.count;
      pair[1] = part.acc;
    }
    if (total != nullptr) {
      // Rounded once, through the same conversion torch's .to(dtype) uses.
      const Out norm = static_cast<Out>(finalize_partial(order, part, p));
      *total = norm;
      if (coef != nullptr) *coef = clip_coefficient<Out, at::opmath_type<Out>>(norm, max_norm);
    }
  }
}

// data *= coef for every element, in the element type's opmath, like torch's
// _foreach_mul_ on CUDA, which first rounds the coefficient to the data's dtype.
template <class T, class Coef, int Cap>
__global__ void __launch_bounds__(kThreads)
    scale_kernel(const __grid_constant__ TensorTable<Cap> table, const Coef* __restrict__ coef) {
  using opmath = at::opmath_type<T>;
  const opmath c = static_cast<opmath>(static_cast<T>(*coef));
  auto scale = [c](T& x) { x = static_cast<T>(static_cast<opmath>(x) * c); };
  for_each_table_piece(table, [&](const void* data, int64_t lo, int64_t hi) {
    visit_slice<T, false>(
        static_cast<T*>(const_cast<void*>(data)), lo, hi, [&](T* x) { scale(*x); },
        [&](uint4* at, uint4 raw) {
          T elems[16 / sizeof(T)];
          memcpy(elems, &raw, sizeof(raw));
#pragma unroll
          for (T& x : elems) scale(x);
          memcpy(&raw, elems, sizeof(raw));
          *at = raw;
        });
  });
}

// The tensors of one storage type, as dense spans. The spans only point at the
// memory: whoever fills them keeps the tensors (and any copies) alive.
struct Spans {
  std::vector<const void*> data;
  std::vector<int64_t> numels;
};

// Where a tensor's elements go: p = 2 reads complex numbers as real pairs.
Elem storage_of(at::ScalarType t, Order order) {
  const Elem e = elem_of(t).value();
  if (order == Order::Two && e == Elem::ComplexFloat) return Elem::Float;
  if (order == Order::Two && e == Elem::ComplexDouble) return Elem::Double;
  return e;
}

// The spans of every storage type, with the copies of the tensors that could
// not be read in place (the spans point into them).
struct Grouped {
  std::array<Spans, kElemCount> spans;
  std::vector<at::Tensor> copies;
};

Grouped group_by_storage(at::TensorList tensors, Order order) {
  Grouped g;
  for (const auto& t : tensors) {
    if (t.numel() == 0) continue;
    // The kernels load typed values: layouts with gaps and misaligned starts are read from a copy.
    const bool in_place = t.is_non_overlapping_and_dense() && is_aligned(t);
    const at::Tensor& dense = in_place ? t : g.copies.emplace_back(t.clone(at::MemoryFormat::Contiguous));
    const Elem s = storage_of(t.scalar_type(), order);
    const bool as_pairs = t.is_complex() && (s == Elem::Float || s == Elem::Double);
    auto& spans = g.spans[static_cast<size_t>(s)];
    spans.data.push_back(dense.const_data_ptr());
    spans.numels.push_back(dense.numel() * (as_pairs ? 2 : 1));
  }
  return g;
}

// The split of the work depends on the element counts only, never on the GPU:
// every model (and MIG slice) merges the same blocks in the same order, so all
// give the same bits. 2,048 blocks run in whole-enough waves on any current GPU
// (3.9 waves at 4 blocks an SM on an H100, 4.7 on an A100).
constexpr PlanLimits kLimits{kLargeTable, kBlockElements, kMaxBlocks};

// Fills a table from one launch of a plan and hands it to `launch`.
template <int Cap, class Launcher>
void with_table(const Spans& spans, const Plan& plan, const Launch& l, Launcher&& launch) {
  TensorTable<Cap> table;
  table.count = l.count;
  table.elements = l.elements;
  int64_t end = 0;
  for (int64_t k = 0; k < l.count; ++k) {
    const int64_t i = plan.tensors[l.first + k];
    end += spans.numels[i];
    table.ends[k] = end;
    table.data[k] = spans.data[i];
  }
  launch(table);
}

// Hands `launch` the table of one launch, in the smallest table type that holds it.
template <class Launcher>
void with_launch_table(const Spans& spans, const Plan& plan, const Launch& l, Launcher&& launch) {
  if (l.count <= kSmallTable) {
    with_table<kSmallTable>(spans, plan, l, launch);
  } else {
    with_table<kLargeTable>(spans, plan, l, launch);
  }
}

template <Order O, class S>
void launch_reduce(const Spans& spans, const Plan& plan, double p, double* workspace, cudaStream_t stream) {
  for (const Launch& l : plan.launches) {
    with_launch_table(spans, plan, l, [&](const auto& table) {
      constexpr int cap = sizeof(table.ends) / sizeof(table.ends[0]);
      reduce_kernel<O, S, cap><<<l.blocks, kThreads, 0, stream>>>(table, p, workspace + l.partial_offset);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
}

template <Order O>
void launch_reduce_storage(Elem s, const Spans& spans, const Plan& plan, double p, double* ws,
                           cudaStream_t stream) {
  switch (s) {
    case Elem::Half:
      return launch_reduce<O, HalfBits>(spans, plan, p, ws, stream);
    case Elem::BFloat16:
      return launch_reduce<O, BFloat16Bits>(spans, plan, p, ws, stream);
    case Elem::Float:
      return launch_reduce<O, float>(spans, plan, p, ws, stream);
    case Elem::Double:
      return launch_reduce<O, double>(spans, plan, p, ws, stream);
    case Elem::ComplexFloat:
      if constexpr (O != Order::Two) return launch_reduce<O, float2>(spans, plan, p, ws, stream);
      break;
    case Elem::ComplexDouble:
      if constexpr (O != Order::Two) return launch_reduce<O, double2>(spans, plan, p, ws, stream);
      break;
  }
  TORCH_INTERNAL_ASSERT(false, "unexpected storage for this order");
}

void launch_fold(const at::Tensor& values, int stride, double count, Order order, double p, at::Tensor* pair,
                 at::Tensor* total, std::optional<double> max_norm, at::Tensor* coef) {
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const at::ScalarType out = total != nullptr ? total->scalar_type() : at::kDouble;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out, "totalnorm_fold", [&] {
    fold_kernel<scalar_t><<<1, kThreads, 0, stream>>>(
        values.const_data_ptr<double>(), values.numel() / stride, stride, count, order, p,
        pair != nullptr ? pair->mutable_data_ptr<double>() : nullptr,
        total != nullptr ? total->mutable_data_ptr<scalar_t>() : nullptr, max_norm.value_or(0.0),
        coef != nullptr ? coef->mutable_data_ptr<scalar_t>() : nullptr);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

at::Tensor partials_cuda(at::TensorList tensors, double norm_type) {
  check_arguments("partials", "tensors", tensors, norm_type, std::nullopt);
  check_one_device("partials", "tensors", tensors);
  const Order order = classify_order(norm_type);
  const c10::cuda::CUDAGuard guard(tensors[0].device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const Grouped grouped = group_by_storage(tensors, order);
  std::array<Plan, kElemCount> plans;
  int64_t slots = 0;
  for (size_t s = 0; s < plans.size(); ++s) {
    plans[s] = plan_launches(grouped.spans[s].numels, kLimits);
    slots += plans[s].partials;
  }
  const auto options = at::TensorOptions().dtype(at::kDouble).device(tensors[0].device());
  at::Tensor workspace = at::empty({slots}, options);
  double* ws = workspace.mutable_data_ptr<double>();
  for (size_t s = 0; s < plans.size(); ++s) {
    if (plans[s].launches.empty()) continue;
    dispatch_order(order, [&](auto o) {
      launch_reduce_storage<decltype(o)::value>(static_cast<Elem>(s), grouped.spans[s], plans[s], norm_type, ws,
                                                stream);
    });
    ws += plans[s].partials;
  }
  int64_t count = 0;
  for (const auto& t : tensors) count += t.numel();
  at::Tensor pair = at::empty({2}, options);
  launch_fold(workspace, 1, static_cast<double>(count), order, norm_type, &pair, nullptr, std::nullopt, nullptr);
  return pair;
}

at::Tensor combine_cuda(const at::Tensor& partials, double norm_type) {
  check_norm_type("combine", norm_type);
  check_partials("combine", partials);
  const c10::cuda::CUDAGuard guard(partials.device());
  at::Tensor pair = at::empty({2}, partials.options());
  launch_fold(partials.contiguous(), 2, 0.0, classify_order(norm_type), norm_type, &pair, nullptr, std::nullopt,
              nullptr);
  return pair;
}

std::tuple<at::Tensor, at::Tensor> finalize_on_cuda(const char* fn, const at::Tensor& partials, double norm_type,
                                                    at::ScalarType dtype, std::optional<double> max_norm,
                                                    bool error_if_nonfinite) {
  check_arguments(fn, "partials", {}, norm_type, dtype);
  check_partials(fn, partials);
  const c10::cuda::CUDAGuard guard(partials.device());
  at::Tensor total = at::empty({}, partials.options().dtype(dtype));
  at::Tensor coef = max_norm ? at::empty_like(total) : at::Tensor();
  launch_fold(partials.contiguous(), 2, 0.0, classify_order(norm_type), norm_type, nullptr, &total, max_norm,
              max_norm ? &coef : nullptr);
  check_finite(fn, total, norm_type, error_if_nonfinite);
  return {total, coef};
}

at::Tensor finalize_cuda(const at::Tensor& partials, double norm_type, at::ScalarType dtype,
                         bool error_if_nonfinite) {
  return std::get<0>(finalize_on_cuda("finalize", partials, norm_type, dtype, std::nullopt, error_if_nonfinite));
}

std::tuple<at::Tensor, at::Tensor> finalize_clip_cuda(const at::Tensor& partials, double norm_type,
                                                      at::ScalarType dtype, double max_norm,
                                                      bool error_if_nonfinite) {
  return finalize_on_cuda("finalize_clip", partials, norm_type, dtype, max_norm, error_if_nonfinite);
}

void scale_cuda(at::TensorList tensors, const at::Tensor& coef) {
  check_arguments("scale_", "tensors", tensors, 0.0, std::nullopt);
  check_one_device("scale_", "tensors", tensors);
  check_writable("scale_", "tensors", tensors);
  if (tensors.empty()) return;
  check_coef("scale_", coef, tensors[0].device());
  const c10::cuda::CUDAGuard guard(coef.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  // Dense real gradients by element type; torch's own mul_ takes layouts with
  // gaps, misaligned starts, 0-dim gradients (multiplied in the promotion of both dtypes) and
  // complex ones (multiplied by the complex number (coef, 0): inf * 0 is NaN in both parts).
  std::array<Spans, kElemCount> spans;
  std::array<at::ScalarType, kElemCount> dtypes{};
  for (const auto& t : tensors) {
    if (t.numel() == 0) continue;
    if (!t.is_non_overlapping_and_dense() || !is_aligned(t) || t.dim() == 0 || t.is_complex()) {
      t.mul_(coef);
      continue;
    }
    const auto k = static_cast<size_t>(elem_of(t.scalar_type()).value());
    dtypes[k] = t.scalar_type();
    spans[k].data.push_back(t.data_ptr());
    spans[k].numels.push_back(t.numel());
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, coef.scalar_type(), "totalnorm_scale_coef", [&] {
    using coef_t = scalar_t;
    for (size_t k = 0; k < spans.size(); ++k) {
      if (spans[k].numels.empty()) continue;
      const Plan plan = plan_launches(spans[k].numels, kLimits);
      AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtypes[k], "totalnorm_scale", [&] {
        for (const Launch& l : plan.launches) {
          with_launch_table(spans[k], plan, l, [&](const auto& table) {
            constexpr int cap = sizeof(table.ends) / sizeof(table.ends[0]);
            scale_kernel<scalar_t, coef_t, cap>
                <<<l.blocks, kThreads, 0, stream>>>(table, coef.const_data_ptr<coef_t>());
            C10_CUDA_KERNEL_LAUNCH_CHECK();
          });
        }
      });
    }
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(totalnorm, CUDA, m) {
  m.impl("partials", &partials_cuda);
  m.impl("combine", &combine_cuda);
  m.impl("finalize", &finalize_cuda);
  m.impl("finalize_clip", &finalize_clip_cuda);
  m.impl("scale_", &scale_cuda);
}

}  // namespace totalnorm::cuda
