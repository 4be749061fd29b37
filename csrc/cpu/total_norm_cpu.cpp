// The CPU backend: one parallel region over all tensors of a call. The elements
// of all tensors, seen as one concatenation, are cut into fixed blocks (plan.h);
// threads take whole blocks and each block writes one float64 partial, so the
// result does not depend on the number of threads.

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstdlib>
#include <cstring>
#include <vector>

#include "../backend.h"
#include "../plan.h"
#include "kernels.h"

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
const Kernels& loops() {
  static const Kernels chosen = [] {
#if defined(TOTALNORM_HAVE_AVX2_KERNELS)
    const char* forced = std::getenv("TOTALNORM_CPU_ISA");
    const bool portable_only = forced != nullptr && std::strcmp(forced, "portable") == 0;
    if (!portable_only && has_avx2()) return avx2::kernels();
#endif
    return portable::kernels();
  }();
  return chosen;
}

ElemKind elem_kind(at::ScalarType t) {
  switch (t) {
    case at::kHalf:
      return ElemKind::Half;
    case at::kBFloat16:
      return ElemKind::BFloat16;
    case at::kFloat:
      return ElemKind::Float;
    case at::kDouble:
      return ElemKind::Double;
    case at::kComplexFloat:
      return ElemKind::ComplexFloat;
    case at::kComplexDouble:
      return ElemKind::ComplexDouble;
    default:
      TORCH_INTERNAL_ASSERT(false, "unchecked dtype ", t);
  }
}

// The tensors' elements as one concatenation of dense storage spans. Dense
// layouts in any order (transposed, channels_last) are used in place; layouts
// with gaps or overlaps are copied into `copies` (for reading) or listed in
// `not_dense` (for scaling, which must write the tensor itself).
struct Concatenation {
  std::vector<void*> data;
  std::vector<at::ScalarType> dtypes;
  std::vector<int64_t> ends;  // exclusive end of each span in the concatenation
  std::vector<at::Tensor> copies;
  std::vector<at::Tensor> not_dense;
  int64_t total = 0;

  Concatenation(at::TensorList tensors, bool copy_not_dense) {
    for (const auto& t : tensors) {
      if (t.numel() == 0) continue;
      if (!t.is_non_overlapping_and_dense() && !copy_not_dense) {
        not_dense.push_back(t);
        continue;
      }
      const at::Tensor& dense =
          t.is_non_overlapping_and_dense() ? t : copies.emplace_back(t.contiguous());
      data.push_back(dense.data_ptr());
      dtypes.push_back(dense.scalar_type());
      total += dense.numel();
      ends.push_back(total);
    }
  }

  int64_t blocks() const { return block_count(total, kBlockElements, kMaxBlocks); }

  // Calls visit(span, lo, hi) for the pieces of block b, in order.
  template <class Visit>
  void for_each_piece(int64_t blocks, int64_t b, Visit&& visit) const {
    int64_t pos = split_point(total, blocks, b);
    const int64_t stop = split_point(total, blocks, b + 1);
    if (pos >= stop) return;
    for (int64_t s = find_segment(ends.data(), static_cast<int64_t>(ends.size()), pos); pos < stop; ++s) {
      const int64_t start = s == 0 ? 0 : ends[s - 1];
      const int64_t until = std::min(ends[s], stop);
      visit(s, pos - start, until - start);
      pos = until;
    }
  }
};

at::Tensor partials_cpu(at::TensorList tensors, Order order, double p) {
  const Concatenation cat(tensors, /*copy_not_dense=*/true);
  const int64_t blocks = cat.blocks();
  at::Tensor partials = at::empty({blocks}, at::TensorOptions().dtype(at::kDouble));
  double* out = partials.mutable_data_ptr<double>();
  const Kernels& k = loops();
  at::parallel_for(0, blocks, 1, [&](int64_t first, int64_t last) {
    for (int64_t b = first; b < last; ++b) {
      double acc = identity_of(order);
      cat.for_each_piece(blocks, b, [&](int64_t s, int64_t lo, int64_t hi) {
        acc = combine_partials(order, acc, k.reduce(order, p, elem_kind(cat.dtypes[s]), cat.data[s], lo, hi));
      });
      out[b] = acc;
    }
  });
  return partials;
}

std::pair<at::Tensor, at::Tensor> finalize_cpu(const at::Tensor& partials, Order order, double p,
                                               at::ScalarType out, std::optional<double> max_norm) {
  const at::Tensor values = partials.contiguous();
  const double* v = values.const_data_ptr<double>();
  double acc = identity_of(order);
  for (int64_t i = 0; i < values.numel(); ++i) acc = combine_partials(order, acc, v[i]);
  const double norm = finalize_norm(order, acc, p);
  at::Tensor total = at::empty({}, at::TensorOptions().dtype(out));
  at::Tensor coef;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out, "finalize_cpu", [&] {
    // A plain conversion: a norm beyond the dtype's range becomes inf, as in torch.
    const auto rounded = static_cast<scalar_t>(norm);
    *total.mutable_data_ptr<scalar_t>() = rounded;
    if (max_norm) {
      const scalar_t c = clip_coefficient<scalar_t, at::opmath_type<scalar_t>>(rounded, *max_norm);
      coef = at::scalar_tensor(static_cast<double>(c), at::TensorOptions().dtype(at::kDouble));
    }
  });
  return {total, coef};
}

// g *= coef in g's opmath type (float for half and bfloat16), as torch's CPU
// mul_ does with a 0-dim coefficient: the coefficient is not rounded to g's dtype.
template <class T>
void scale_span(T* data, int64_t lo, int64_t hi, double coef) {
  using opmath = at::opmath_type<T>;
  const opmath c = static_cast<opmath>(coef);
  for (int64_t i = lo; i < hi; ++i) data[i] = static_cast<T>(static_cast<opmath>(data[i]) * c);
}

void scale_cpu(at::TensorList tensors, const at::Tensor& coef) {
  const double c = coef.item<double>();
  const Concatenation cat(tensors, /*copy_not_dense=*/false);
  for (const auto& t : cat.not_dense) t.mul_(coef);
  const int64_t blocks = cat.blocks();
  at::parallel_for(0, blocks, 1, [&](int64_t first, int64_t last) {
    for (int64_t b = first; b < last; ++b) {
      cat.for_each_piece(blocks, b, [&](int64_t s, int64_t lo, int64_t hi) {
        const at::ScalarType dtype = cat.dtypes[s];
        // A complex element is two reals scaled alike.
        const int64_t parts = at::isComplexType(dtype) ? 2 : 1;
        AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, c10::toRealValueType(dtype), "scale", [&] {
          scale_span(static_cast<scalar_t*>(cat.data[s]), parts * lo, parts * hi, c);
        });
      });
    }
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(totalnorm, CPU, m) {
  register_backend(c10::DeviceType::CPU, Backend{&partials_cpu, &finalize_cpu, &scale_cpu});
  m.impl("total_norm", &total_norm_kernel);
  m.impl("clip_grad_norm_", &clip_grad_norm_kernel);
}

}  // namespace totalnorm::cpu
