// Meta kernels of the per-device steps: what fake tensors (torch.compile,
// torch.export) run. total_norm and clip_grad_norm_ need none of their own:
// their composite kernel runs these on meta tensors. Each checks its arguments
// like the real kernels.

#include <ATen/ATen.h>
#include <torch/library.h>

#include "../checks.h"

namespace totalnorm {
namespace {

at::Tensor pair_like(const at::Tensor& like) { return at::empty({2}, like.options().dtype(at::kDouble)); }

at::Tensor partials_meta(at::TensorList tensors, double norm_type) {
  check_arguments("partials", "tensors", tensors, norm_type, std::nullopt);
  check_one_device("partials", "tensors", tensors);
  return at::empty({2}, at::TensorOptions().dtype(at::kDouble).device(at::kMeta));
}

at::Tensor combine_meta(const at::Tensor& partials, double norm_type) {
  check_norm_type("combine", norm_type);
  check_partials("combine", partials);
  return pair_like(partials);
}

at::Tensor finalize_meta(const at::Tensor& partials, double norm_type, at::ScalarType dtype, bool) {
  check_arguments("finalize", "partials", {}, norm_type, dtype);
  check_partials("finalize", partials);
  return at::empty({}, partials.options().dtype(dtype));
}

std::tuple<at::Tensor, at::Tensor> finalize_clip_meta(const at::Tensor& partials, double norm_type,
                                                      at::ScalarType dtype, double, bool) {
  at::Tensor total = finalize_meta(partials, norm_type, dtype, false);
  return {total, at::empty_like(total)};
}

void scale_meta(at::TensorList tensors, const at::Tensor& coef) {
  check_arguments("scale_", "tensors", tensors, 0.0, std::nullopt);
  check_one_device("scale_", "tensors", tensors);
  check_writable("scale_", "tensors", tensors);
  if (!tensors.empty()) check_coef("scale_", coef, tensors[0].device());
}

std::tuple<at::Tensor, at::Tensor> partials_per_tensor_meta(at::TensorList tensors, double norm_type) {
  check_arguments("partials_per_tensor", "tensors", tensors, norm_type, std::nullopt);
  check_one_device("partials_per_tensor", "tensors", tensors);
  const auto options = at::TensorOptions().dtype(at::kDouble).device(at::kMeta);
  return {at::empty({2}, options), at::empty({static_cast<int64_t>(tensors.size()), 2}, options)};
}

at::Tensor combine_per_tensor_meta(const at::Tensor& partials, double norm_type) {
  check_norm_type("combine_per_tensor", norm_type);
  check_per_tensor_partials("combine_per_tensor", partials, /*rows=*/true);
  return at::empty_symint({partials.sym_size(1), 2}, partials.options());
}

at::Tensor finalize_per_tensor_meta(const at::Tensor& partials, double norm_type, at::ScalarType dtype) {
  check_arguments("finalize_per_tensor", "partials", {}, norm_type, dtype);
  check_per_tensor_partials("finalize_per_tensor", partials, /*rows=*/false);
  return at::empty_symint({partials.sym_size(0)}, partials.options().dtype(dtype));
}

}  // namespace

TORCH_LIBRARY_IMPL(totalnorm, Meta, m) {
  m.impl("partials", &partials_meta);
  m.impl("combine", &combine_meta);
  m.impl("finalize", &finalize_meta);
  m.impl("finalize_clip", &finalize_clip_meta);
  m.impl("scale_", &scale_meta);
  m.impl("partials_per_tensor", &partials_per_tensor_meta);
  m.impl("combine_per_tensor", &combine_per_tensor_meta);
  m.impl("finalize_per_tensor", &finalize_per_tensor_meta);
}

}  // namespace totalnorm
