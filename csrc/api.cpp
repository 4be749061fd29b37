// The C++ API of include/totalnorm/totalnorm.h: every function is a call
// through the dispatcher, so C++, Python and TorchScript run the same kernels.

#include <totalnorm/totalnorm.h>

#include <ATen/ATen.h>

#include "checks.h"
#include "dispatch.h"
#include "driver.h"

namespace totalnorm {

at::Tensor total_norm(at::TensorList tensors, double norm_type, bool error_if_nonfinite,
                      std::optional<at::ScalarType> dtype) {
  static const auto op = ops::handle<ops::TotalNormFn>("totalnorm::total_norm");
  return op.call(tensors, norm_type, error_if_nonfinite, dtype);
}

at::Tensor get_total_norm(const std::vector<at::Tensor>& parameters, double norm_type,
                          bool error_if_nonfinite) {
  auto grads = defined_grads(parameters);
  if (grads.empty() && !parameters.empty()) {
    check_norm_type("get_total_norm", norm_type);
    return at::zeros({}, parameters[0].options());
  }
  return total_norm(grads, norm_type, error_if_nonfinite);
}

at::Tensor clip_grad_norm_(const std::vector<at::Tensor>& parameters, double max_norm,
                           double norm_type, bool error_if_nonfinite) {
  static const auto op = ops::handle<ops::ClipGradNormFn>("totalnorm::clip_grad_norm_");
  return op.call(defined_grads(parameters), max_norm, norm_type, error_if_nonfinite);
}

PerTensorNorms total_norm_per_tensor(at::TensorList tensors, double norm_type, bool error_if_nonfinite,
                                     std::optional<at::ScalarType> dtype) {
  static const auto op = ops::handle<ops::TotalNormPerTensorFn>("totalnorm::total_norm_per_tensor");
  auto [total, per_tensor] = op.call(tensors, norm_type, error_if_nonfinite, dtype);
  return {total, per_tensor};
}

PerTensorNorms get_total_norm_per_tensor(const std::vector<at::Tensor>& parameters, double norm_type,
                                         bool error_if_nonfinite) {
  auto grads = defined_grads(parameters);
  if (grads.empty() && !parameters.empty()) {
    check_norm_type("get_total_norm_per_tensor", norm_type);
    return {at::zeros({}, parameters[0].options()), at::empty({0}, parameters[0].options())};
  }
  return total_norm_per_tensor(grads, norm_type, error_if_nonfinite);
}

PerTensorNorms clip_grad_norm_per_tensor_(const std::vector<at::Tensor>& parameters, double max_norm,
                                          double norm_type, bool error_if_nonfinite) {
  static const auto op = ops::handle<ops::ClipGradNormPerTensorFn>("totalnorm::clip_grad_norm_per_tensor_");
  auto [total, per_tensor] = op.call(defined_grads(parameters), max_norm, norm_type, error_if_nonfinite);
  return {total, per_tensor};
}

at::Tensor partials(at::TensorList tensors, double norm_type) {
  static const auto op = ops::handle<ops::PartialsFn>("totalnorm::partials");
  return op.call(tensors, norm_type);
}

at::Tensor combine(const at::Tensor& partials, double norm_type) {
  static const auto op = ops::handle<ops::CombineFn>("totalnorm::combine");
  return op.call(partials, norm_type);
}

at::Tensor finalize(const at::Tensor& partials, double norm_type, at::ScalarType dtype,
                    bool error_if_nonfinite) {
  static const auto op = ops::handle<ops::FinalizeFn>("totalnorm::finalize");
  return op.call(partials, norm_type, dtype, error_if_nonfinite);
}

std::tuple<at::Tensor, at::Tensor> finalize_clip(const at::Tensor& partials, double norm_type,
                                                 at::ScalarType dtype, double max_norm,
                                                 bool error_if_nonfinite) {
  static const auto op = ops::handle<ops::FinalizeClipFn>("totalnorm::finalize_clip");
  return op.call(partials, norm_type, dtype, max_norm, error_if_nonfinite);
}

std::tuple<at::Tensor, at::Tensor> partials_per_tensor(at::TensorList tensors, double norm_type) {
  static const auto op = ops::handle<ops::PartialsPerTensorFn>("totalnorm::partials_per_tensor");
  return op.call(tensors, norm_type);
}

at::Tensor combine_per_tensor(const at::Tensor& partials, double norm_type) {
  static const auto op = ops::handle<ops::CombinePerTensorFn>("totalnorm::combine_per_tensor");
  return op.call(partials, norm_type);
}

at::Tensor finalize_per_tensor(const at::Tensor& partials, double norm_type, at::ScalarType dtype) {
  static const auto op = ops::handle<ops::FinalizePerTensorFn>("totalnorm::finalize_per_tensor");
  return op.call(partials, norm_type, dtype);
}

void scale_(at::TensorList tensors, const at::Tensor& coef) {
  static const auto op = ops::handle<ops::ScaleFn>("totalnorm::scale_");
  op.call(tensors, coef);
}

bool ensure_registered() {
  return c10::Dispatcher::singleton().findSchema({"totalnorm::total_norm", ""}).has_value();
}

}  // namespace totalnorm
