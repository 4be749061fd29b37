// No totalnorm op is differentiable, by design: like torch's get_total_norm and
// clip_grad_norm_ (both run under no_grad), they run below autograd, so inputs
// may require grad and results never do. Each op's Autograd kernel is one
// unboxed wrapper (BelowAutograd): a boxed kernel would box and unbox every
// tensor of a list on each C++ call, which at thousands of gradients costs more
// than reading them.

#include <torch/csrc/autograd/VariableTypeUtils.h>
#include <torch/library.h>

#include <type_traits>

#include "../dispatch.h"

namespace totalnorm {
namespace {

// Calls the op named `Name` below autograd. kWritesFirst: the first argument
// is a Tensor(a!)[] the op writes; skipping ADInplaceOrView skips its version
// bump, so the wrapper bumps the version of each of its tensors.
template <const char* Name, bool kWritesFirst, class Signature>
struct BelowAutograd;

template <const char* Name, bool kWritesFirst, class R, class... Args>
struct BelowAutograd<Name, kWritesFirst, R(Args...)> {
  static R call(Args... args) {
    static const auto op = ops::handle<R(Args...)>(Name);
    if constexpr (std::is_void_v<R>) {
      {
        at::AutoDispatchBelowADInplaceOrView guard;
        op.call(args...);
      }
      bump(args...);
    } else {
      R out = [&] {
        at::AutoDispatchBelowADInplaceOrView guard;
        return op.call(args...);
      }();
      bump(args...);
      return out;
    }
  }

  template <class First, class... Rest>
  static void bump(const First& first, const Rest&...) {
    if constexpr (kWritesFirst) {
      for (const at::Tensor& t : first) torch::autograd::increment_version(t);
    }
  }
};

constexpr char kTotalNorm[] = "totalnorm::total_norm";
constexpr char kClipGradNorm[] = "totalnorm::clip_grad_norm_";
constexpr char kPartials[] = "totalnorm::partials";
constexpr char kCombine[] = "totalnorm::combine";
constexpr char kFinalize[] = "totalnorm::finalize";
constexpr char kFinalizeClip[] = "totalnorm::finalize_clip";
constexpr char kScale[] = "totalnorm::scale_";
constexpr char kTotalNormPerTensor[] = "totalnorm::total_norm_per_tensor";
constexpr char kClipGradNormPerTensor[] = "totalnorm::clip_grad_norm_per_tensor_";
constexpr char kPartialsPerTensor[] = "totalnorm::partials_per_tensor";
constexpr char kCombinePerTensor[] = "totalnorm::combine_per_tensor";
constexpr char kFinalizePerTensor[] = "totalnorm::finalize_per_tensor";

}  // namespace

TORCH_LIBRARY_IMPL(totalnorm, Autograd, m) {
  m.impl("total_norm", TORCH_FN((BelowAutograd<kTotalNorm, false, ops::TotalNormFn>::call)));
  m.impl("clip_grad_norm_", TORCH_FN((BelowAutograd<kClipGradNorm, true, ops::ClipGradNormFn>::call)));
  m.impl("partials", TORCH_FN((BelowAutograd<kPartials, false, ops::PartialsFn>::call)));
  m.impl("combine", TORCH_FN((BelowAutograd<kCombine, false, ops::CombineFn>::call)));
  m.impl("finalize", TORCH_FN((BelowAutograd<kFinalize, false, ops::FinalizeFn>::call)));
  m.impl("finalize_clip", TORCH_FN((BelowAutograd<kFinalizeClip, false, ops::FinalizeClipFn>::call)));
  m.impl("scale_", TORCH_FN((BelowAutograd<kScale, true, ops::ScaleFn>::call)));
  m.impl("total_norm_per_tensor",
         TORCH_FN((BelowAutograd<kTotalNormPerTensor, false, ops::TotalNormPerTensorFn>::call)));
  m.impl("clip_grad_norm_per_tensor_",
         TORCH_FN((BelowAutograd<kClipGradNormPerTensor, true, ops::ClipGradNormPerTensorFn>::call)));
  m.impl("partials_per_tensor", TORCH_FN((BelowAutograd<kPartialsPerTensor, false, ops::PartialsPerTensorFn>::call)));
  m.impl("combine_per_tensor", TORCH_FN((BelowAutograd<kCombinePerTensor, false, ops::CombinePerTensorFn>::call)));
  m.impl("finalize_per_tensor",
         TORCH_FN((BelowAutograd<kFinalizePerTensor, false, ops::FinalizePerTensorFn>::call)));
}

}  // namespace totalnorm
