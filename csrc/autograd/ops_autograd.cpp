// No totalnorm op is differentiable, by design: like torch's get_total_norm and
// clip_grad_norm_ (both run under no_grad), they run below autograd, so inputs
// may require grad and results never do. One boxed kernel serves every op.

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/VariableTypeUtils.h>
#include <torch/library.h>

namespace totalnorm {
namespace {

void below_autograd(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  // The tensors of arguments the schema marks as written (Tensor(a!)[]).
  std::vector<at::Tensor> written;
  const auto& arguments = op.schema().arguments();
  const size_t first = stack->size() - arguments.size();
  for (size_t i = 0; i < arguments.size(); ++i) {
    const auto* alias = arguments[i].alias_info();
    if (alias == nullptr || !alias->isWrite()) continue;
    const c10::IValue& value = (*stack)[first + i];
    if (value.isTensorList()) {
      for (const at::Tensor& t : value.toTensorList()) written.push_back(t);
    } else if (value.isTensor()) {
      written.push_back(value.toTensor());
    }
  }
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    op.callBoxed(stack);
  }
  // Skipping ADInplaceOrView skips its version bump; do it for what was written.
  for (const auto& t : written) torch::autograd::increment_version(t);
}

}  // namespace

TORCH_LIBRARY_IMPL(totalnorm, Autograd, m) {
  for (const char* name : {"total_norm", "clip_grad_norm_", "partials", "combine", "finalize", "finalize_clip",
                           "scale_"}) {
    m.impl(name, torch::CppFunction::makeFromBoxedFunction<&below_autograd>());
  }
}

}  // namespace totalnorm
