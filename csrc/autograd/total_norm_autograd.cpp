// The norm is not differentiable here, by design: like torch's own
// get_total_norm and clip_grad_norm_ (both run under no_grad), the ops run
// below autograd, so inputs may require grad and the result never does.

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/VariableTypeUtils.h>
#include <torch/library.h>

#include "../backend.h"

namespace totalnorm {
namespace {

at::Tensor total_norm_autograd(at::TensorList tensors, double norm_type, bool error_if_nonfinite,
                               std::optional<at::ScalarType> dtype) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("totalnorm::total_norm", "")
                             .typed<decltype(total_norm_kernel)>();
  at::AutoDispatchBelowADInplaceOrView guard;
  return op.call(tensors, norm_type, error_if_nonfinite, dtype);
}

at::Tensor clip_grad_norm_autograd(at::TensorList grads, double max_norm, double norm_type,
                                   bool error_if_nonfinite) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("totalnorm::clip_grad_norm_", "")
                             .typed<decltype(clip_grad_norm_kernel)>();
  at::Tensor total;
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    total = op.call(grads, max_norm, norm_type, error_if_nonfinite);
  }
  // Skipping ADInplaceOrView skips its version bump; do it for the mutated grads.
  for (const auto& g : grads) torch::autograd::increment_version(g);
  return total;
}

}  // namespace

TORCH_LIBRARY_IMPL(totalnorm, Autograd, m) {
  m.impl("total_norm", &total_norm_autograd);
  m.impl("clip_grad_norm_", &clip_grad_norm_autograd);
}

}  // namespace totalnorm
