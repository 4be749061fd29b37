// The CPU kernels of the per-device steps. partials runs one parallel region
// over all tensors of a call: their elements, seen as one concatenation, are
// cut into fixed blocks (plan.h); threads take whole blocks, each block writes
// one float64 accumulation, and the blocks are merged in block order, so the
// result does not depend on the number of threads.

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstdlib>
#include <cstring>
#include <vector>

#include "../checks.h"
#include "../elements.h"
#include "../plan.h"
#include "loops.h"

namespace totalnorm::cpu {
namespace {

// Elements per block: large enough to amortise the per-block work, small enough
// to balance two threads on a few MB. The cap bounds the partials buffer.
constexpr int64_t kBlockElements = 1 << 16;
constexpr int64_t kMaxBlocks = 4096;

#if defined(TOTALNORM_HAVE_AVX2_KERNELS)
bool has_avx2() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
         __builtin_cpu_supports("f16c") && __builtin_cpu_supports("bmi2");
}
#endif

// TOTALNORM_CPU_ISA=portable forces the portable loops (tests compare the two).
const Loops& chosen_loops() {
  static const Loops chosen = [] {
#if defined(TOTALNORM_HAVE_AVX2_KERNELS)
    const char* forced = std::getenv("TOTALNORM_CPU_ISA");
    const bool portable_only = forced != nullptr && std::strcmp(forced, "portable") == 0;
    if (!portable_only && has_avx2()) return avx2::loops();
#endif
    return portable::loops();
  }();
  return chosen;
}

// The tensors' elements as one concatenation of dense storage spans. Dense
// layouts in any order (transposed, channels_last) are used in place. For
// reading, layouts with gaps or overlaps are copied into `copies`; for scaling,
// which must write the tensor itself, they, misaligned tensors (the loops use
// typed pointers), 0-dim tensors (which torch multiplies in the promotion of
// both dtypes) and complex ones (torch's complex product, whose signed zeros and
// NaNs depend on its own code path) are left to torch's mul_ in `by_torch`.
// Reading is by memcpy, so misaligned data is read in place.
struct Concatenation {
  std::vector<void*> data;
  std::vector<at::ScalarType> dtypes;
  std::vector<int64_t> index;  // the list position of each span's tensor
  std::vector<int64_t> ends;  // exclusive end of each span in the concatenation
  std::vector<at::Tensor> copies;
  std::vector<at::Tensor> by_torch;
  int64_t total = 0;

  Concatenation(at::TensorList tensors, bool copy_not_dense) {
    for (size_t i = 0; i < tensors.size(); ++i) {
      const at::Tensor& t = tensors[i];
      if (t.numel() == 0) continue;
      if ((t.dim() == 0 || t.is_complex() || !t.is_non_overlapping_and_dense() || !is_aligned(t)) &&
          !copy_not_dense) {
        by_torch.push_back(t);
        continue;
      }
      const at::Tensor& dense =
          t.is_non_overlapping_and_dense() ? t : copies.emplace_back(t.contiguous());
      data.push_back(dense.data_ptr());
      dtypes.push_back(dense.scalar_type());
      index.push_back(static_cast<int64_t>(i));
      total += dense.numel();
      ends.push_back(total);
    }
  }

  int64_t blocks() const { return block_count(total, kBlockElements, kMaxBlocks); }

  // Elements of span s.
  int64_t size_of(int64_t s) const {
    const auto i = static_cast<size_t>(s);
    return ends[i] - (i == 0 ? 0 : ends[i - 1]);
  }

  // Calls visit(span, lo, hi) for the pieces of block b, in order.
  template <class Visit>
  void for_each_piece(int64_t blocks, int64_t b, Visit&& visit) const {
    totalnorm::for_each_piece(ends.data(), static_cast<int64_t>(ends.size()), blocks, b, visit);
  }
};

// One piece's accumulation: elements of span `span`, in concatenation order.
struct Piece {
  int64_t span;
  double acc;
};

// The concatenation reduced block by block (threads take whole blocks) and the
// blocks merged in block order. With keep_pieces, also every piece's own
// accumulation, in concatenation order: the per-tensor op and the total-only op
// share this one function, so their totals are the same bits.
double reduce_blocks(const Concatenation& cat, Order order, double norm_type, std::vector<Piece>* pieces) {
  const int64_t blocks = cat.blocks();
  std::vector<double> block_acc(static_cast<size_t>(blocks));
  std::vector<std::vector<Piece>> block_pieces(pieces != nullptr ? static_cast<size_t>(blocks) : 0);
  const Loops& k = chosen_loops();
  at::parallel_for(0, blocks, 1, [&](int64_t first, int64_t last) {
    for (int64_t b = first; b < last; ++b) {
      Merged acc(order);  // a block may hold thousands of small tensors
      cat.for_each_piece(blocks, b, [&](int64_t s, int64_t lo, int64_t hi) {
        const double v = k.reduce(order, norm_type, elem_of(cat.dtypes[s]).value(), cat.data[s], lo, hi);
        acc.add(v);
        if (pieces != nullptr) block_pieces[static_cast<size_t>(b)].push_back(Piece{s, v});
      });
      block_acc[static_cast<size_t>(b)] = acc.total();
    }
  });
  Merged acc(order);
  for (double a : block_acc) acc.add(a);
  if (pieces != nullptr) {
    for (const auto& in_block : block_pieces) pieces->insert(pieces->end(), in_block.begin(), in_block.end());
  }
  return acc.total();
}

at::Tensor pair(double count, double acc) {
  at::Tensor out = at::empty({2}, at::TensorOptions().dtype(at::kDouble));
  out.mutable_data_ptr<double>()[0] = count;
  out.mutable_data_ptr<double>()[1] = acc;
  return out;
}

at::Tensor partials_cpu(at::TensorList tensors, double norm_type) {
  check_arguments("partials", "tensors", tensors, norm_type, std::nullopt);
  check_one_device("partials", "tensors", tensors);
  const Order order = classify_order(norm_type);
  const Concatenation cat(tensors, /*copy_not_dense=*/true);
  const double acc = reduce_blocks(cat, order, norm_type, nullptr);
  return pair(static_cast<double>(cat.total), acc);
}

// The total pair (partials_cpu's bits) and each tensor's pair: the pieces of
// one tensor are consecutive in concatenation order and merge in that order,
// so an entry does not depend on the thread count either. An empty tensor's
// pair is (0, identity).
std::tuple<at::Tensor, at::Tensor> partials_per_tensor_cpu(at::TensorList tensors, double norm_type) {
  check_arguments("partials_per_tensor", "tensors", tensors, norm_type, std::nullopt);
  check_one_device("partials_per_tensor", "tensors", tensors);
  const Order order = classify_order(norm_type);
  const Concatenation cat(tensors, /*copy_not_dense=*/true);
  std::vector<Piece> pieces;
  const double acc = reduce_blocks(cat, order, norm_type, &pieces);
  const auto n = static_cast<int64_t>(tensors.size());
  at::Tensor rows = at::empty({n, 2}, at::TensorOptions().dtype(at::kDouble));
  double* row = rows.mutable_data_ptr<double>();
  for (int64_t i = 0; i < n; ++i) {
    row[2 * i] = 0.0;
    row[2 * i + 1] = identity_of(order);
  }
  for (size_t first = 0; first < pieces.size();) {
    const int64_t s = pieces[first].span;
    Merged merged(order);
    size_t next = first;
    for (; next < pieces.size() && pieces[next].span == s; ++next) merged.add(pieces[next].acc);
    const int64_t i = cat.index[static_cast<size_t>(s)];
    row[2 * i] = static_cast<double>(cat.size_of(s));
    row[2 * i + 1] = merged.total();
    first = next;
  }
  return {pair(static_cast<double>(cat.total), acc), rows};
}

// The rows of `partials`, merged in order.
Partial merged(const at::Tensor& partials, Order order) {
  const at::Tensor rows = partials.contiguous();
  const double* v = rows.const_data_ptr<double>();
  double count = 0.0;
  Merged acc(order);
  for (int64_t i = 0; i < rows.numel(); i += 2) {
    count += v[i];
    acc.add(v[i + 1]);
  }
  return Partial{count, acc.total()};
}

at::Tensor combine_cpu(const at::Tensor& partials, double norm_type) {
  check_norm_type("combine", norm_type);
  check_partials("combine", partials);
  const Partial total = merged(partials, classify_order(norm_type));
  return pair(total.count, total.acc);
}

// [rows, n, 2] -> [n, 2]: entry j's pairs merged over the rows in row order.
at::Tensor combine_per_tensor_cpu(const at::Tensor& partials, double norm_type) {
  check_norm_type("combine_per_tensor", norm_type);
  check_per_tensor_partials("combine_per_tensor", partials, /*rows=*/true);
  const Order order = classify_order(norm_type);
  const at::Tensor in = partials.contiguous();
  const int64_t rows = in.size(0);
  const int64_t n = in.size(1);
  const double* v = in.const_data_ptr<double>();
  at::Tensor out = at::empty({n, 2}, in.options());
  double* o = out.mutable_data_ptr<double>();
  for (int64_t j = 0; j < n; ++j) {
    double count = 0.0;
    Merged acc(order);
    for (int64_t r = 0; r < rows; ++r) {
      count += v[2 * (r * n + j)];
      acc.add(v[2 * (r * n + j) + 1]);
    }
    o[2 * j] = count;
    o[2 * j + 1] = acc.total();
  }
  return out;
}

// The norm rounded once to `dtype`; with max_norm, also the clip coefficient in `dtype`.
std::tuple<at::Tensor, at::Tensor> finalize_on_cpu(const char* fn, const at::Tensor& partials, double norm_type,
                                                   at::ScalarType dtype, std::optional<double> max_norm,
                                                   bool error_if_nonfinite) {
  check_arguments(fn, "partials", {}, norm_type, dtype);
  check_partials(fn, partials);
  const Order order = classify_order(norm_type);
  const double norm = finalize_partial(order, merged(partials, order), norm_type);
  at::Tensor total = at::empty({}, at::TensorOptions().dtype(dtype));
  at::Tensor coef;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "finalize_cpu", [&] {
    // A plain conversion: a norm beyond the dtype's range becomes inf, as in torch.
    const auto rounded = static_cast<scalar_t>(norm);
    *total.mutable_data_ptr<scalar_t>() = rounded;
    if (max_norm) {
      coef = at::empty({}, at::TensorOptions().dtype(dtype));
      *coef.mutable_data_ptr<scalar_t>() = clip_coefficient<scalar_t, at::opmath_type<scalar_t>>(rounded, *max_norm);
    }
  });
  check_finite(fn, total, norm_type, error_if_nonfinite);
  return {total, coef};
}

at::Tensor finalize_cpu(const at::Tensor& partials, double norm_type, at::ScalarType dtype,
                        bool error_if_nonfinite) {
  return std::get<0>(finalize_on_cpu("finalize", partials, norm_type, dtype, std::nullopt, error_if_nonfinite));
}

std::tuple<at::Tensor, at::Tensor> finalize_clip_cpu(const at::Tensor& partials, double norm_type,
                                                     at::ScalarType dtype, double max_norm,
                                                     bool error_if_nonfinite) {
  return finalize_on_cpu("finalize_clip", partials, norm_type, dtype, max_norm, error_if_nonfinite);
}

// [n, 2] -> [n]: each pair finalized (no elements: 0) and rounded once to dtype.
at::Tensor finalize_per_tensor_cpu(const at::Tensor& partials, double norm_type, at::ScalarType dtype) {
  check_arguments("finalize_per_tensor", "partials", {}, norm_type, dtype);
  check_per_tensor_partials("finalize_per_tensor", partials, /*rows=*/false);
  const Order order = classify_order(norm_type);
  const at::Tensor in = partials.contiguous();
  const double* v = in.const_data_ptr<double>();
  const int64_t n = in.size(0);
  at::Tensor out = at::empty({n}, at::TensorOptions().dtype(dtype));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "finalize_per_tensor_cpu", [&] {
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    for (int64_t j = 0; j < n; ++j) {
      o[j] = static_cast<scalar_t>(finalize_partial(order, Partial{v[2 * j], v[2 * j + 1]}, norm_type));
    }
  });
  return out;
}

// g *= coef with the rounding of torch's CPU `g.mul_(coef)` for a dense real g
// of at least one dimension: the 0-dim coefficient is read in g's opmath type
// (float for half and bfloat16), not rounded to g's dtype first.
template <class T>
void scale_span(T* data, int64_t lo, int64_t hi, double coef) {
  using opmath = at::opmath_type<T>;
  const opmath c = static_cast<opmath>(coef);
  for (int64_t i = lo; i < hi; ++i) data[i] = static_cast<T>(static_cast<opmath>(data[i]) * c);
}

void scale_cpu(at::TensorList tensors, const at::Tensor& coef) {
  check_arguments("scale_", "tensors", tensors, 0.0, std::nullopt);
  check_one_device("scale_", "tensors", tensors);
  check_writable("scale_", "tensors", tensors);
  if (tensors.empty()) return;
  check_coef("scale_", coef, tensors[0].device());
  const double c = coef.item<double>();
  const Concatenation cat(tensors, /*copy_not_dense=*/false);
  // torch's own mul_ for layouts the loop does not cover; for a 0-dim g it
  // computes in the promotion of both dtypes (float64 for a float32 g and a float64 norm).
  for (const auto& t : cat.by_torch) t.mul_(coef);
  const int64_t blocks = cat.blocks();
  at::parallel_for(0, blocks, 1, [&](int64_t first, int64_t last) {
    for (int64_t b = first; b < last; ++b) {
      cat.for_each_piece(blocks, b, [&](int64_t s, int64_t lo, int64_t hi) {
        const at::ScalarType dtype = cat.dtypes[s];
        AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "scale", [&] {
          scale_span(static_cast<scalar_t*>(cat.data[s]), lo, hi, c);
        });
      });
    }
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(totalnorm, CPU, m) {
  m.impl("partials", &partials_cpu);
  m.impl("combine", &combine_cpu);
  m.impl("finalize", &finalize_cpu);
  m.impl("finalize_clip", &finalize_clip_cpu);
  m.impl("scale_", &scale_cpu);
  m.impl("partials_per_tensor", &partials_per_tensor_cpu);
  m.impl("combine_per_tensor", &combine_per_tensor_cpu);
  m.impl("finalize_per_tensor", &finalize_per_tensor_cpu);
}

}  // namespace totalnorm::cpu
