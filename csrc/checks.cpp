#include "checks.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/MemoryOverlap.h>
#include <c10/core/DispatchKey.h>
#include <c10/util/Exception.h>

#include <cmath>

#include "elements.h"

namespace totalnorm {

namespace {

// A device is supported when a backend registered the per-device step for it.
bool has_backend(const c10::Device& device) {
  static const auto op = c10::Dispatcher::singleton().findSchemaOrThrow("totalnorm::partials", "");
  return op.hasKernelForDispatchKey(c10::computeDispatchKey(std::nullopt, at::kStrided, device));
}

}  // namespace

void check_norm_type(const char* fn, double norm_type) {
  TORCH_CHECK(!std::isnan(norm_type), fn, ": norm_type must not be NaN; use a number, inf or -inf");
}

void check_arguments(const char* fn, const char* arg, at::TensorList tensors, double norm_type,
                     std::optional<at::ScalarType> dtype) {
  check_norm_type(fn, norm_type);
  TORCH_CHECK_TYPE(!dtype || at::isFloatingType(*dtype), fn,
                   ": dtype must be a floating dtype (float16, bfloat16, float32 or float64), got ",
                   *dtype);
  for (size_t i = 0; i < tensors.size(); ++i) {
    const at::Tensor& t = tensors[i];
    TORCH_CHECK(t.defined(), fn, ": ", arg, "[", i, "] is an undefined tensor");
    TORCH_CHECK(t.layout() == at::kStrided, fn, ": ", arg, "[", i, "] has layout ", t.layout(),
                "; only dense (strided) tensors are accepted");
    TORCH_CHECK_TYPE(elem_of(t.scalar_type()).has_value(), fn, ": ", arg, "[", i, "] has dtype ",
                     t.scalar_type(),
                     "; accepted dtypes are float16, bfloat16, float32, float64, complex64 and "
                     "complex128");
    // One dispatcher look-up per run of tensors on the same device.
    TORCH_CHECK((i > 0 && t.device() == tensors[i - 1].device()) || has_backend(t.device()), fn, ": ", arg, "[",
                i, "] is on device ", t.device(), ", which this build of totalnorm does not support");
    TORCH_CHECK(t.is_meta() == tensors[0].is_meta(), fn, ": ", arg, "[", i, "] is on device ",
                t.device(), " but ", arg, "[0] is on ", tensors[0].device(),
                "; meta tensors have no values to combine with real ones");
  }
}

void check_writable(const char* fn, const char* arg, at::TensorList tensors) {
  for (size_t i = 0; i < tensors.size(); ++i) {
    TORCH_CHECK(at::has_internal_overlap(tensors[i]) != at::MemOverlap::Yes, fn, ": ", arg, "[", i,
                "] has elements that share memory (an expanded view); it cannot be scaled in place");
  }
}

void check_one_device(const char* fn, const char* arg, at::TensorList tensors) {
  for (size_t i = 1; i < tensors.size(); ++i) {
    TORCH_CHECK(tensors[i].device() == tensors[0].device(), fn, ": ", arg, "[", i, "] is on ",
                tensors[i].device(), " but ", arg, "[0] is on ", tensors[0].device(),
                "; this step takes the tensors of one device");
  }
}

void check_partials(const char* fn, const at::Tensor& partials) {
  const c10::SymInt& n = partials.sym_numel();  // symbolic under torch.compile's dynamic shapes
  TORCH_CHECK(partials.scalar_type() == at::kDouble && n % 2 == 0 && n > 0, fn,
              ": partials must be a non-empty float64 tensor of (count, accumulation) pairs, got ",
              partials.scalar_type(), " with ", n, " elements");
}

void check_per_tensor_partials(const char* fn, const at::Tensor& partials, bool rows) {
  const int64_t dims = rows ? 3 : 2;
  TORCH_CHECK(partials.scalar_type() == at::kDouble && partials.dim() == dims &&
                  partials.sym_size(dims - 1) == 2 && (!rows || partials.sym_size(0) >= 1),
              fn, ": partials must be a float64 tensor of per-tensor (count, accumulation) pairs of shape ",
              rows ? "[rows >= 1, n, 2]" : "[n, 2]", ", got ", partials.scalar_type(), " of shape ",
              partials.sym_sizes());
}

void check_coef(const char* fn, const at::Tensor& coef, const c10::Device& device) {
  TORCH_CHECK(coef.dim() == 0 && at::isFloatingType(coef.scalar_type()), fn,
              ": coef must be a 0-dim floating tensor, got ", coef.dim(), "-dim ", coef.scalar_type());
  TORCH_CHECK(coef.device() == device, fn, ": coef is on ", coef.device(), " but the tensors are on ",
              device);
}

void check_finite(const char* fn, const at::Tensor& total, double norm_type, bool error_if_nonfinite) {
  if (!error_if_nonfinite || total.is_meta()) return;
  const double value = total.item<double>();
  TORCH_CHECK(std::isfinite(value), fn, ": the total norm of order ", norm_type, " is ", value,
              " and error_if_nonfinite=True; pass error_if_nonfinite=False to get the non-finite norm "
              "back (clipping by it would zero or NaN the gradients)");
}

bool is_aligned(const at::Tensor& t) {
  const size_t part = c10::elementSize(c10::toRealValueType(t.scalar_type()));
  return reinterpret_cast<uintptr_t>(t.const_data_ptr()) % part == 0;
}

at::ScalarType result_dtype(at::TensorList tensors, std::optional<at::ScalarType> dtype) {
  if (dtype) return *dtype;
  at::ScalarType out = c10::toRealValueType(tensors[0].scalar_type());
  for (const auto& t : tensors) out = c10::promoteTypes(out, c10::toRealValueType(t.scalar_type()));
  return out;
}

}  // namespace totalnorm
