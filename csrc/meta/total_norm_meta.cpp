// Shape and dtype functions: what torch.compile, torch.export and fake tensors
// run instead of the kernels. They check the arguments exactly like the kernels.

#include <ATen/ATen.h>
#include <torch/library.h>

#include "../backend.h"
#include "../checks.h"

namespace totalnorm {
namespace {

at::Tensor empty_norm(const char* fn, const char* arg, at::TensorList tensors, double norm_type,
                      std::optional<at::ScalarType> dtype) {
  check_arguments(fn, arg, tensors, norm_type, dtype, /*backends=*/false);
  if (tensors.empty()) return at::empty({}, at::TensorOptions().dtype(at::get_default_dtype()));
  return at::empty({}, at::TensorOptions().dtype(result_dtype(tensors, dtype)).device(tensors[0].device()));
}

at::Tensor total_norm_meta(at::TensorList tensors, double norm_type, bool,
                           std::optional<at::ScalarType> dtype) {
  return empty_norm("total_norm", "tensors", tensors, norm_type, dtype);
}

at::Tensor clip_grad_norm_meta(at::TensorList grads, double, double norm_type, bool) {
  return empty_norm("clip_grad_norm_", "grads", grads, norm_type, std::nullopt);
}

}  // namespace

TORCH_LIBRARY_IMPL(totalnorm, Meta, m) {
  m.impl("total_norm", &total_norm_meta);
  m.impl("clip_grad_norm_", &clip_grad_norm_meta);
}

}  // namespace totalnorm
