// The CUDA backend: per call one reduction launch per element type, whatever
// the number of tensors, and one launch to merge.
//
// Kernels and launches:
// - reduce_kernel<order, storage type>: the tensors of one element type are
//   seen as one concatenation and cut into units (launch_plan.h): near-equal
//   ranges in which every tensor also costs a fixed number of elements, so
//   that thousands of tiny tensors spread over many units. Within a unit, a
//   piece of a tensor large enough for the whole block is read by the whole
//   block; smaller pieces go to the block's warps in turn, so a unit of sixteen
//   tiny tensors costs one memory round trip, not sixteen. Elements are read
//   in 16-byte groups formed by their logical index (vector_groups.h), dense
//   or strided (strided.h), so a view has the bits of its clone. Each unit
//   writes one float64 accumulation: the unit partials, one buffer per call
//   (reduce_units), the launches of all element types one after another in it.
// - fold_kernel: one block merges rows in a fixed order. It reads the unit
//   partials directly (stride 1) or (count, accumulation) rows (stride 2), and
//   writes a pair and/or the norm rounded once and the clip coefficient.
// - scale_kernel<type, coef type>: grads *= coef in place, one launch per
//   element type, over the same units.
//
// Per call: total_norm on one GPU = reduce launches + one fold (units to the
// norm); clip_grad_norm_ adds the scale launches; the partials op = reduce
// launches + one fold (units to a pair); combine, finalize and finalize_clip
// = one fold of pairs. Lists over several devices go through driver.cpp's
// composite path (partials per device, then finalize).
//
// The grid is sized from the occupancy API and its blocks take units in turn,
// which changes the schedule but not what any unit reads or the order units
// merge in: every GPU gives the same bits. The table of tensors travels in the
// kernel's parameters up to 64 tensors, and in a device table beyond (cached
// per list and stream; one made during graph capture lives as long as the
// graph). No floating-point atomics, no host synchronisation.

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <array>
#include <algorithm>
#include <atomic>
#include <optional>
#include <cstdlib>
#include <cstring>
#include <list>
#include <mutex>
#include <vector>

#include "../checks.h"
#include "../driver.h"
#include "../elements.h"
#include "../plan.h"
#include "../strided.h"
#include "launch_plan.h"
#include "vector_groups.h"

namespace totalnorm::cuda {
namespace {

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
// Blocks of the reduce and scale kernels each SM must hold at once
// (__launch_bounds__). 2 caps registers at 64 a thread and, compiled for sm_90
// with nvcc 13, makes every reduce kernel spill (180-260 bytes stored); 1 lets
// ptxas use 94-124 registers without a spill. Kept a macro so a GPU run can
// compare the two (-DTOTALNORM_MIN_BLOCKS=2).
#ifndef TOTALNORM_MIN_BLOCKS
#define TOTALNORM_MIN_BLOCKS 1
#endif
constexpr int kMinBlocks = TOTALNORM_MIN_BLOCKS;
// The split into units (launch_plan.h): a unit covers about 32,768 elements'
// worth of cost, a tensor costs 2,048 on top of its elements (so a unit holds
// at most about 16 tensors, one per warp), and at most 2,048 units (partials).
constexpr PlanLimits kLimits{/*tensor_cost=*/2048, /*per_unit=*/1 << 15, /*max_units=*/2048};
// A piece of at least this many elements is read by the whole block; a smaller
// one by one warp.
constexpr int64_t kBlockPiece = 2048;
// Tensors whose table travels in the kernel's parameters, and strided layouts
// among them; beyond either, a device table.
constexpr int kInline = 64;
constexpr int kInlineLayouts = 16;

struct TensorTable {
  int64_t count;   // non-empty tensors
  int64_t units;   // units of the split, one partial each
  // Device table (TableView): `count` ends, `count` data pointers, and
  // with_layouts: `count` layout indices (-1: dense) and the Layouts they
  // index. Or null, and the inline arrays hold the same.
  const int64_t* ends;
  int64_t with_layouts;
  int64_t inline_ends[kInline];
  const void* inline_data[kInline];
  int64_t inline_layout_of[kInline];
  Layout inline_layouts[kInlineLayouts];
};
static_assert(sizeof(TensorTable) <= 4096, "the table must fit the classic kernel-parameter limit");

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

// Which threads of the block read a piece: the whole block for large pieces,
// warp (k mod kWarps) for the k-th piece of the unit otherwise.
struct Team {
  bool member;
  int rank;
  int size;
};

__device__ Team team_for(int64_t elements, int64_t k) {
  if (elements >= kBlockPiece) return Team{true, static_cast<int>(threadIdx.x), static_cast<int>(blockDim.x)};
  const int warp = static_cast<int>(threadIdx.x) / 32;
  return Team{warp == static_cast<int>(k % kWarps), static_cast<int>(threadIdx.x) % 32, 32};
}

// Calls visit(data, layout, lo, hi, team) for each piece of unit u of the
// table's split; layout is null for a dense tensor.
template <class Visit>
__device__ void for_each_unit_piece(const TensorTable& table, int64_t u, Visit&& visit) {
  const TableView view =
      table.ends != nullptr
          ? TableView::of(table.ends, table.count, table.with_layouts != 0)
          : TableView{table.inline_ends, table.inline_data, table.with_layouts ? table.inline_layout_of : nullptr,
                      table.inline_layouts};
  int64_t k = 0;
  totalnorm::for_each_weighted_piece(view.ends, table.count, kLimits.tensor_cost, table.units, u,
                                     [&](int64_t t, int64_t lo, int64_t hi) {
                                       const Team team = team_for(hi - lo, k++);
                                       if (team.member) visit(view.data[t], view.layout(t), lo, hi, team);
                                     });
}

// --- Walking a piece -----------------------------------------------------------
//
// A piece (elements [lo, hi) of one tensor, in logical order) is cut into a
// head, 16-byte groups and a tail by the elements' logical index
// (vector_groups.h), never by their address, so a view and its clone form the
// same groups. A team member takes head and tail elements rank, rank + size,
// ... and groups rank, rank + size, ... in that order.

constexpr int kLoadsInFlight = 4;  // aligned groups loaded before the first is used

// Group v of [0, groups) for each v of the member's share, in order:
// on_group(v, load(v)), with U loads issued before their groups are used.
template <int U, class Load, class OnGroup>
__device__ __forceinline__ void for_each_group(int64_t groups, Team team, Load&& load, OnGroup&& on_group) {
  const int64_t stride = team.size;
  int64_t v = team.rank;
  for (; v + (U - 1) * stride < groups; v += U * stride) {
    uint4 raw[U];
#pragma unroll
    for (int k = 0; k < U; ++k) raw[k] = load(v + k * stride);
#pragma unroll
    for (int k = 0; k < U; ++k) on_group(v + k * stride, raw[k]);
  }
  for (; v < groups; v += stride) on_group(v, load(v));
}

// The 16 bytes of the group at `at`, element by element (no alignment needed).
template <class S>
__device__ __forceinline__ uint4 gather_group(const S* at) {
  S elems[16 / sizeof(S)];
#pragma unroll
  for (size_t k = 0; k < 16 / sizeof(S); ++k) elems[k] = at[k];
  uint4 raw;
  memcpy(&raw, elems, sizeof(raw));
  return raw;
}

// Reads a dense piece: on_element(S) for head and tail elements, on_group(uint4)
// for each group. A 16-byte aligned piece loads each group with one aligned
// load; otherwise each group is joined from the two aligned 16-byte chunks it
// straddles (the first and last group of the piece element by element, so no
// byte outside the piece is read).
template <class S, class OnElement, class OnGroup>
__device__ void read_dense(const S* data, int64_t lo, int64_t hi, Team team, OnElement&& on_element,
                           OnGroup&& on_group) {
  constexpr int64_t kPer = 16 / sizeof(S);
  const GroupSplit split = split_into_groups(lo, hi, kPer);
  for (int64_t i = lo + team.rank; i < split.head_end; i += team.size) on_element(data[i]);
  const S* body = data + split.head_end;
  const int shift = static_cast<int>(reinterpret_cast<uintptr_t>(body) % 16);
  auto use = [&](int64_t, const uint4& raw) { on_group(raw); };
  if (shift == 0) {
    const uint4* groups = reinterpret_cast<const uint4*>(body);
    for_each_group<kLoadsInFlight>(split.groups, team, [&](int64_t v) { return __ldg(groups + v); }, use);
  } else {
    const uint4* chunks = reinterpret_cast<const uint4*>(reinterpret_cast<const char*>(body) - shift);
    const int64_t last = split.groups - 1;
    for_each_group<kLoadsInFlight / 2>(
        split.groups, team,
        [&](int64_t v) {
          if (v == 0 || v == last) return gather_group(body + v * kPer);
          return join_chunks(__ldg(chunks + v), __ldg(chunks + v + 1), shift);
        },
        use);
  }
  for (int64_t i = split.tail_start + team.rank; i < hi; i += team.size) on_element(data[i]);
}

// Walks a strided piece in logical order: on_element(S*) for head and tail
// elements, and on_group(next) for each group, where each call of next()
// returns the group's next element's address. A LayoutCursor (strided.h)
// follows the member from group to group: no division per element.
template <class S, class OnElement, class OnGroup>
__device__ void walk_strided(S* data, const Layout& layout, int64_t lo, int64_t hi, Team team,
                             OnElement&& on_element, OnGroup&& on_group) {
  constexpr int64_t kPer = 16 / sizeof(S);
  const GroupSplit split = split_into_groups(lo, hi, kPer);
  for (int64_t i = lo + team.rank; i < split.head_end; i += team.size) on_element(data + offset_of(layout, i));
  // After a group's elements, on to the member's next group: the same move for
  // every member, kept in shared memory (one slot a warp: the lanes of a warp
  // always walk one piece together) rather than in 14 more registers.
  __shared__ LayoutCursor to_next_of_warp[kWarps];
  LayoutCursor& to_next = to_next_of_warp[threadIdx.x / 32];
  __syncwarp();  // the lanes are done with the previous piece's move
  if (threadIdx.x % 32 == 0) to_next = LayoutCursor::at(layout, (team.size - 1) * kPer);
  __syncwarp();
  if (team.rank < split.groups) {
    LayoutCursor at = LayoutCursor::at(layout, split.head_end + team.rank * kPer);
    auto next = [&] {
      S* x = data + at.offset;
      at.step_one(layout);
      return x;
    };
    for (int64_t v = team.rank; v < split.groups; v += team.size) {
      on_group(next);
      at.advance(layout, to_next);
    }
  }
  for (int64_t i = split.tail_start + team.rank; i < hi; i += team.size) on_element(data + offset_of(layout, i));
}

// The contributions of a group's elements combined into one term.
template <Order O, class S>
__device__ __forceinline__ double group_term(const uint4& raw, double p) {
  constexpr int kPer = 16 / sizeof(S);
  S elems[kPer];
  memcpy(elems, &raw, sizeof(raw));
  double term = contribution<O>(elems[0], p);
#pragma unroll
  for (int k = 1; k < kPer; ++k) term = NormOp<O>::combine(term, contribution<O>(elems[k], p));
  return term;
}

// One launch per storage type S: unit u's accumulation goes to partials[u].
template <Order O, class S>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    reduce_kernel(const __grid_constant__ TensorTable table, double p, double* __restrict__ partials) {
  using Op = NormOp<O>;
  // Sums cascade in three levels, so that a thread's hundreds of terms do not
  // round hundreds of times in a row: each group's (or lone element's)
  // contributions form one term, `run` adds 32 terms, `mid` adds 32 runs, `acc`
  // adds the rest. The counts follow this thread's element positions in the
  // unit only. Max, min and counts (exact) use `acc` alone.
  constexpr bool kCascade = O == Order::One || O == Order::Two || O == Order::General;
  for (int64_t u = blockIdx.x; u < table.units; u += gridDim.x) {
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
    auto add_element = [&](S x) { add_term(contribution<O>(x, p)); };
    auto add_group = [&](const uint4& raw) { add_term(group_term<O, S>(raw, p)); };
    for_each_unit_piece(table, u, [&](const void* data, const Layout* layout, int64_t lo, int64_t hi, Team team) {
      const S* elems = static_cast<const S*>(data);
      if (layout == nullptr) return read_dense(elems, lo, hi, team, add_element, add_group);
      walk_strided(
          const_cast<S*>(elems), *layout, lo, hi, team, [&](const S* x) { add_element(*x); },
          [&](auto next) {
            S group[16 / sizeof(S)];
#pragma unroll
            for (S& x : group) x = *next();
            uint4 raw;
            memcpy(&raw, group, sizeof(raw));
            add_group(raw);
          });
    });
    if constexpr (kCascade) acc += mid + run;
    acc = block_reduce(acc, Op::identity, [](double a, double b) { return Op::combine(a, b); });
    if (threadIdx.x == 0) partials[u] = acc;
  }
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

// Scales a dense piece in place, element by element up to the first 16-byte
// boundary, then by aligned 16-byte vectors, then the tail. Each element is
// scaled on its own, so grouping by address changes no bit here.
template <class T, class Scale>
__device__ void scale_dense(T* data, int64_t lo, int64_t hi, Team team, Scale&& scale) {
  constexpr int64_t kPer = 16 / sizeof(T);
  const auto misalign = reinterpret_cast<uintptr_t>(data + lo) % 16;
  const int64_t head = min(hi - lo, static_cast<int64_t>((16 - misalign) % 16 / sizeof(T)));
  for (int64_t i = lo + team.rank; i < lo + head; i += team.size) scale(data[i]);
  const int64_t body = lo + head;
  const int64_t vectors = (hi - body) / kPer;
  uint4* vec = reinterpret_cast<uint4*>(data + body);
  for_each_group<kLoadsInFlight>(vectors, team, [&](int64_t v) { return vec[v]; },
                                 [&](int64_t v, uint4 raw) {
                                   T elems[kPer];
                                   memcpy(elems, &raw, sizeof(raw));
#pragma unroll
                                   for (T& x : elems) scale(x);
                                   memcpy(&raw, elems, sizeof(raw));
                                   vec[v] = raw;
                                 });
  for (int64_t i = body + vectors * kPer + team.rank; i < hi; i += team.size) scale(data[i]);
}

// data *= coef for every element, in the element type's opmath, like torch's
// _foreach_mul_ on CUDA, which first rounds the coefficient to the data's dtype.
template <class T, class Coef>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    scale_kernel(const __grid_constant__ TensorTable table, const Coef* __restrict__ coef) {
  using opmath = at::opmath_type<T>;
  const opmath c = static_cast<opmath>(static_cast<T>(*coef));
  auto scale = [c](T& x) { x = static_cast<T>(static_cast<opmath>(x) * c); };
  for (int64_t u = blockIdx.x; u < table.units; u += gridDim.x) {
    for_each_unit_piece(table, u, [&](const void* data, const Layout* layout, int64_t lo, int64_t hi, Team team) {
      T* elems = static_cast<T*>(const_cast<void*>(data));
      if (layout == nullptr) return scale_dense(elems, lo, hi, team, scale);
      walk_strided(elems, *layout, lo, hi, team, [&](T* x) { scale(*x); }, [&](auto next) {
#pragma unroll
        for (size_t k = 0; k < 16 / sizeof(T); ++k) scale(*next());
      });
    });
  }
}

// The tensors of one storage type, as dense spans. The spans only point at the
// memory: whoever fills them keeps the tensors (and any copies) alive.
struct Spans {
  std::vector<const void*> data;
  std::vector<int64_t> numels;
  std::vector<int64_t> layout_of;  // index into layouts, -1 for a dense span
  std::vector<Layout> layouts;

  void add(const void* d, int64_t n, const Layout* layout) {
    data.push_back(d);
    numels.push_back(n);
    layout_of.push_back(layout != nullptr ? static_cast<int64_t>(layouts.size()) : -1);
    if (layout != nullptr) layouts.push_back(*layout);
  }
};

// The strided layout of a non-dense tensor the kernels can walk in place.
std::optional<Layout> layout_of(const at::Tensor& t) {
  Layout layout{};
  if (!collapse_layout(t.sizes().data(), t.strides().data(), t.dim(), &layout)) return std::nullopt;
  return layout;
}

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
    const Elem s = storage_of(t.scalar_type(), order);
    const bool as_pairs = t.is_complex() && (s == Elem::Float || s == Elem::Double);
    // The kernels load whole storage elements (a complex number read as one is
    // 8 or 16 bytes), so the start must be aligned to one.
    const size_t storage_bytes = c10::elementSize(as_pairs ? c10::toRealValueType(t.scalar_type()) : t.scalar_type());
    const bool aligned = reinterpret_cast<uintptr_t>(t.const_data_ptr()) % storage_bytes == 0;
    auto& spans = g.spans[static_cast<size_t>(s)];
    if (aligned && t.is_non_overlapping_and_dense()) {
      spans.add(t.const_data_ptr(), t.numel() * (as_pairs ? 2 : 1), nullptr);
      continue;
    }
    // Layouts with gaps (or repeats) are walked in place; complex numbers read as
    // real pairs, misaligned starts and layouts of more than kMaxDims
    // dimensions are read from a contiguous copy.
    const std::optional<Layout> layout = aligned && !as_pairs ? layout_of(t) : std::nullopt;
    if (layout) {
      spans.add(t.const_data_ptr(), t.numel(), &*layout);
      continue;
    }
    const at::Tensor& dense = g.copies.emplace_back(t.clone(at::MemoryFormat::Contiguous));
    spans.add(dense.const_data_ptr(), dense.numel() * (as_pairs ? 2 : 1), nullptr);
  }
  return g;
}

// Device tables of tensors for lists beyond the parameters' room, cached per
// list (its encoded table, compared in full: ends, data pointers, layouts) and
// stream: a training loop that passes the same gradients every step uploads
// their table once. A table
// made while the stream is being captured into a CUDA graph is not cached: the
// graph holds it (a CUDA user object) and releases it when it is destroyed.
class TableCache {
 public:
  static TableCache& instance() {
    static auto* cache = new TableCache();  // never destroyed: tables may outlive static destruction order
    return *cache;
  }

  // Frees the tables of graphs destroyed since the last call (cheap when there are none).
  void release_dead() {
    if (!has_dead_.load(std::memory_order_acquire)) return;
    std::vector<Upload*> dead;
    {
      const std::lock_guard<std::mutex> lock(dead_mutex_);
      dead.swap(dead_);
      has_dead_.store(false, std::memory_order_release);
    }
    for (Upload* up : dead) delete up;
  }

  // The device copy of `host` (an encoded table, launch_plan.h) for launches on the
  // current stream. The caller holds the returned tensor until its launch is
  // enqueued (another thread may evict the entry meanwhile).
  at::Tensor get(const std::vector<int64_t>& host, const c10::Device& device) {
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device.index());
    cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
    unsigned long long capture_id = 0;
    cudaGraph_t graph = nullptr;
    C10_CUDA_CHECK(cudaStreamGetCaptureInfo(stream, &status, &capture_id, &graph));
    if (status == cudaStreamCaptureStatusActive) return held_by_graph(upload(host, device), graph);
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      for (auto it = entries_.begin(); it != entries_.end(); ++it) {
        if (it->device == device.index() && it->stream == stream && it->key == host) {
          entries_.splice(entries_.begin(), entries_, it);
          return entries_.front().table;
        }
      }
    }
    // Uploaded outside the lock (allocations may take other locks, the GIL
    // among them); two threads missing on the same list both upload, harmlessly.
    at::Tensor table = upload(host, device).table;
    at::Tensor evicted;  // released after the lock: freeing may take the allocator's lock
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      entries_.push_front(Entry{device.index(), stream, host, table});
      // An evicted table goes back to the caching allocator, to be reused in the
      // order of the stream it was made on, after the launches that read it.
      if (entries_.size() > kCapacity) {
        evicted = std::move(entries_.back().table);
        entries_.pop_back();
      }
    }
    return table;
  }

 private:
  static constexpr size_t kCapacity = 16;

  struct Entry {
    c10::DeviceIndex device;
    cudaStream_t stream;
    std::vector<int64_t> key;
    at::Tensor table;
  };

  struct Upload {
    at::Tensor table;    // on the device
    at::Tensor staging;  // the pinned source of the copy
  };

  // Through pinned memory and a copy on the current stream, which under
  // capture becomes a node of the graph (re-read at every replay, so the graph
  // keeps the staging buffer too; eagerly, torch's pinned allocator keeps it
  // until the copy is done).
  static Upload upload(const std::vector<int64_t>& host, const c10::Device& device) {
    const auto n = static_cast<int64_t>(host.size());
    Upload up;
    up.staging = at::empty({n}, at::TensorOptions().dtype(at::kLong).pinned_memory(true));
    std::memcpy(up.staging.mutable_data_ptr<int64_t>(), host.data(), host.size() * sizeof(int64_t));
    up.table = at::empty({n}, at::TensorOptions().dtype(at::kLong).device(device));
    up.table.copy_(up.staging, /*non_blocking=*/true);
    return up;
  }

  at::Tensor held_by_graph(Upload up, cudaGraph_t graph) {
    at::Tensor table = up.table;
    auto* owned = new Upload(std::move(up));
    cudaUserObject_t object = nullptr;
    C10_CUDA_CHECK(cudaUserObjectCreate(&object, owned, &on_graph_released, 1, cudaUserObjectNoDestructorSync));
    const cudaError_t retained = cudaGraphRetainUserObject(graph, object, 1, cudaGraphUserObjectMove);
    if (retained != cudaSuccess) {
      C10_CUDA_CHECK(cudaUserObjectRelease(object, 1));  // hands `owned` to on_graph_released
      C10_CUDA_CHECK(retained);
    }
    return table;
  }

  // Runs on a CUDA-internal thread once the graph (and its executions) are
  // gone: it may make no CUDA call, so it only queues the table for release.
  static void CUDART_CB on_graph_released(void* owned) {
    TableCache& cache = instance();
    const std::lock_guard<std::mutex> lock(cache.dead_mutex_);
    cache.dead_.push_back(static_cast<Upload*>(owned));
    cache.has_dead_.store(true, std::memory_order_release);
  }

  std::mutex mutex_;
  std::list<Entry> entries_;  // most recently used first
  std::mutex dead_mutex_;
  std::vector<Upload*> dead_;
  std::atomic<bool> has_dead_{false};
};

// The table of a plan's tensors, in the kernels' parameters or in a device
// table, which `keep` holds until the launch is enqueued. Up to 64 tensors with
// up to 16 strided layouts among them travel in the parameters.
TensorTable make_table(const Spans& spans, const Plan& plan, const c10::Device& device, at::Tensor& keep) {
  TableCache::instance().release_dead();
  TensorTable table{};
  table.count = static_cast<int64_t>(plan.tensors.size());
  table.units = plan.units;
  const auto layouts = std::count_if(plan.tensors.begin(), plan.tensors.end(),
                                     [&](int64_t i) { return spans.layout_of[static_cast<size_t>(i)] >= 0; });
  table.with_layouts = layouts > 0 ? 1 : 0;
  if (table.count <= kInline && layouts <= kInlineLayouts) {
    for (int64_t k = 0, next = 0; k < table.count; ++k) {
      const auto i = static_cast<size_t>(plan.tensors[static_cast<size_t>(k)]);
      table.inline_ends[k] = plan.ends[static_cast<size_t>(k)];
      table.inline_data[k] = spans.data[i];
      const int64_t index = spans.layout_of[i];
      table.inline_layout_of[k] = index >= 0 ? next : -1;
      if (index >= 0) table.inline_layouts[next++] = spans.layouts[static_cast<size_t>(index)];
    }
    table.ends = nullptr;
    return table;
  }
  bool with_layouts = false;
  keep = TableCache::instance().get(encode_table(plan, spans.data, spans.layout_of, spans.layouts, &with_layouts),
                                    device);
  table.ends = keep.const_data_ptr<int64_t>();
  return table;
}

// SMs the grid is sized for; TOTALNORM_CUDA_SM_COUNT overrides the device's
// count (tests use it to check that the bits do not depend on it).
int64_t sm_count(const c10::Device& device) {
  if (const char* forced = std::getenv("TOTALNORM_CUDA_SM_COUNT")) {
    const long n = std::strtol(forced, nullptr, 10);
    if (n > 0) return n;
  }
  int sms = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device.index()));
  return sms;
}

// Blocks of `kernel` resident on one SM of the current device, from the
// occupancy API, once per kernel and device.
template <auto kKernel>
int64_t blocks_per_sm(const c10::Device& device) {
  static std::array<std::atomic<int>, 64> known{};  // 0: not asked yet
  auto& slot = known.at(static_cast<size_t>(device.index()));
  int blocks = slot.load(std::memory_order_relaxed);
  if (blocks == 0) {
    C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kKernel, kThreads, 0));
    blocks = std::max(blocks, 1);
    slot.store(blocks, std::memory_order_relaxed);
  }
  return blocks;
}

template <auto kKernel>
int64_t grid_for(const TensorTable& table, const c10::Device& device) {
  return grid_size(table.units, sm_count(device), blocks_per_sm<kKernel>(device));
}

template <Order O, class S>
void launch_reduce(const Spans& spans, const Plan& plan, double p, double* partials, const c10::Device& device,
                   cudaStream_t stream) {
  at::Tensor keep;
  const TensorTable table = make_table(spans, plan, device, keep);
  constexpr auto kernel = &reduce_kernel<O, S>;
  kernel<<<grid_for<kernel>(table, device), kThreads, 0, stream>>>(table, p, partials);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <Order O>
void launch_reduce_storage(Elem s, const Spans& spans, const Plan& plan, double p, double* ws,
                           const c10::Device& device, cudaStream_t stream) {
  switch (s) {
    case Elem::Half:
      return launch_reduce<O, HalfBits>(spans, plan, p, ws, device, stream);
    case Elem::BFloat16:
      return launch_reduce<O, BFloat16Bits>(spans, plan, p, ws, device, stream);
    case Elem::Float:
      return launch_reduce<O, float>(spans, plan, p, ws, device, stream);
    case Elem::Double:
      return launch_reduce<O, double>(spans, plan, p, ws, device, stream);
    case Elem::ComplexFloat:
      if constexpr (O != Order::Two) return launch_reduce<O, float2>(spans, plan, p, ws, device, stream);
      break;
    case Elem::ComplexDouble:
      if constexpr (O != Order::Two) return launch_reduce<O, double2>(spans, plan, p, ws, device, stream);
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

// The unit partials of one device's tensors: every storage type's reduce
// launch writes its units' accumulations into one float64 buffer, in storage
// type order, and `count` is the number of elements read. The launches are
// enqueued on the current stream; the caller folds the buffer (launch_fold,
// stride 1) into a pair, or straight into the norm.
struct UnitPartials {
  at::Tensor values;
  int64_t count = 0;
};

UnitPartials reduce_units(at::TensorList tensors, Order order, double norm_type) {
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const Grouped grouped = group_by_storage(tensors, order);
  std::array<Plan, kElemCount> plans;
  int64_t slots = 0;
  for (size_t s = 0; s < plans.size(); ++s) {
    plans[s] = plan_units(grouped.spans[s].numels, kLimits);
    slots += plans[s].units;
  }
  UnitPartials out;
  out.values = at::empty({slots}, at::TensorOptions().dtype(at::kDouble).device(tensors[0].device()));
  double* ws = out.values.mutable_data_ptr<double>();
  for (size_t s = 0; s < plans.size(); ++s) {
    if (plans[s].units == 0) continue;
    dispatch_order(order, [&](auto o) {
      launch_reduce_storage<decltype(o)::value>(static_cast<Elem>(s), grouped.spans[s], plans[s], norm_type, ws,
                                                tensors[0].device(), stream);
    });
    ws += plans[s].units;
  }
  for (const auto& t : tensors) out.count += t.numel();
  return out;
}

at::Tensor partials_cuda(at::TensorList tensors, double norm_type) {
  check_arguments("partials", "tensors", tensors, norm_type, std::nullopt);
  check_one_device("partials", "tensors", tensors);
  const Order order = classify_order(norm_type);
  const c10::cuda::CUDAGuard guard(tensors[0].device());
  const UnitPartials units = reduce_units(tensors, order, norm_type);
  at::Tensor pair = at::empty({2}, units.values.options());
  launch_fold(units.values, 1, static_cast<double>(units.count), order, norm_type, &pair, nullptr, std::nullopt,
              nullptr);
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

// tensors *= coef, one launch per element type (the checks done by the caller).
void scale_tensors(at::TensorList tensors, const at::Tensor& coef) {
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  // Real gradients by element type, dense or strided without shared elements;
  // torch's own mul_ takes misaligned starts, layouts of more than kMaxDims
  // dimensions or that may share elements, 0-dim gradients (multiplied in the
  // promotion of both dtypes) and complex ones (multiplied by the complex number
  // (coef, 0): inf * 0 is NaN in both parts).
  std::array<Spans, kElemCount> spans;
  std::array<at::ScalarType, kElemCount> dtypes{};
  for (const auto& t : tensors) {
    if (t.numel() == 0) continue;
    const bool dense = t.is_non_overlapping_and_dense();
    std::optional<Layout> layout = dense ? std::nullopt : layout_of(t);
    if (layout && !is_non_overlapping(*layout)) layout.reset();  // blocks would race on shared elements
    if (!is_aligned(t) || t.dim() == 0 || t.is_complex() || (!dense && !layout)) {
      t.mul_(coef);
      continue;
    }
    const auto k = static_cast<size_t>(elem_of(t.scalar_type()).value());
    dtypes[k] = t.scalar_type();
    spans[k].add(t.data_ptr(), t.numel(), layout ? &*layout : nullptr);
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, coef.scalar_type(), "totalnorm_scale_coef", [&] {
    using coef_t = scalar_t;
    for (size_t k = 0; k < spans.size(); ++k) {
      if (spans[k].numels.empty()) continue;
      const Plan plan = plan_units(spans[k].numels, kLimits);
      at::Tensor keep;
      const TensorTable table = make_table(spans[k], plan, coef.device(), keep);
      AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtypes[k], "totalnorm_scale", [&] {
        constexpr auto kernel = &scale_kernel<scalar_t, coef_t>;
        kernel<<<grid_for<kernel>(table, coef.device()), kThreads, 0, stream>>>(table, coef.const_data_ptr<coef_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    }
  });
}

void scale_cuda(at::TensorList tensors, const at::Tensor& coef) {
  check_arguments("scale_", "tensors", tensors, 0.0, std::nullopt);
  check_one_device("scale_", "tensors", tensors);
  check_writable("scale_", "tensors", tensors);
  if (tensors.empty()) return;
  check_coef("scale_", coef, tensors[0].device());
  const c10::cuda::CUDAGuard guard(coef.device());
  scale_tensors(tensors, coef);
}

// total_norm and clip_grad_norm_ of a list on one CUDA device, fused: the
// reduce launches, then one fold launch that reads the unit partials directly
// and writes the norm (and the clip coefficient), then for clipping the scale
// launches. A list over several devices takes the composite path (driver.cpp),
// which meets per-device partials on the first tensor's device.
bool on_one_cuda_device(at::TensorList tensors) {
  if (tensors.empty() || !tensors[0].defined() || !tensors[0].is_cuda()) return false;
  return std::all_of(tensors.begin(), tensors.end(),
                     [&](const at::Tensor& t) { return t.defined() && t.device() == tensors[0].device(); });
}

at::Tensor total_norm_cuda(at::TensorList tensors, double norm_type, bool error_if_nonfinite,
                           std::optional<at::ScalarType> dtype) {
  if (!on_one_cuda_device(tensors)) return total_norm_by_device(tensors, norm_type, error_if_nonfinite, dtype);
  check_arguments("total_norm", "tensors", tensors, norm_type, dtype);
  const c10::cuda::CUDAGuard guard(tensors[0].device());
  const Order order = classify_order(norm_type);
  const UnitPartials units = reduce_units(tensors, order, norm_type);
  at::Tensor total = at::empty({}, units.values.options().dtype(result_dtype(tensors, dtype)));
  launch_fold(units.values, 1, static_cast<double>(units.count), order, norm_type, nullptr, &total, std::nullopt,
              nullptr);
  check_finite("total_norm", total, norm_type, error_if_nonfinite);
  return total;
}

at::Tensor clip_grad_norm_cuda(at::TensorList grads, double max_norm, double norm_type, bool error_if_nonfinite) {
  if (!on_one_cuda_device(grads)) return clip_grad_norm_by_device(grads, max_norm, norm_type, error_if_nonfinite);
  // Every check that can fail runs before the first gradient is written.
  check_arguments("clip_grad_norm_", "grads", grads, norm_type, std::nullopt);
  check_writable("clip_grad_norm_", "grads", grads);
  const c10::cuda::CUDAGuard guard(grads[0].device());
  const Order order = classify_order(norm_type);
  const UnitPartials units = reduce_units(grads, order, norm_type);
  at::Tensor total = at::empty({}, units.values.options().dtype(result_dtype(grads, std::nullopt)));
  at::Tensor coef = at::empty_like(total);
  launch_fold(units.values, 1, static_cast<double>(units.count), order, norm_type, nullptr, &total, max_norm, &coef);
  check_finite("clip_grad_norm_", total, norm_type, error_if_nonfinite);
  scale_tensors(grads, coef);
  return total;
}

}  // namespace

TORCH_LIBRARY_IMPL(totalnorm, CUDA, m) {
  m.impl("partials", &partials_cuda);
  m.impl("combine", &combine_cuda);
  m.impl("finalize", &finalize_cuda);
  m.impl("finalize_clip", &finalize_clip_cuda);
  m.impl("scale_", &scale_cuda);
  m.impl("total_norm", &total_norm_cuda);
  m.impl("clip_grad_norm_", &clip_grad_norm_cuda);
}

}  // namespace totalnorm::cuda
