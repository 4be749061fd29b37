// The operator schemas, the device-independent driver every backend registers,
// and the typed C++ API that calls the operators through the dispatcher.

#include <totalnorm/totalnorm.h>

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <array>
#include <cmath>
#include <utility>

#include "backend.h"
#include "checks.h"

namespace totalnorm {

namespace {

std::array<std::optional<Backend>, static_cast<size_t>(c10::DeviceType::COMPILE_TIME_MAX_DEVICE_TYPES)>&
backends() {
  static std::array<std::optional<Backend>,
                    static_cast<size_t>(c10::DeviceType::COMPILE_TIME_MAX_DEVICE_TYPES)>
      table;
  return table;
}

const Backend& backend_for(const c10::Device& device) {
  const Backend* backend = find_backend(device.type());
  TORCH_INTERNAL_ASSERT(backend != nullptr, "no backend for ", device);
  return *backend;
}

// Tensors split by device, in order of first appearance.
std::vector<std::pair<c10::Device, std::vector<at::Tensor>>> group_by_device(at::TensorList tensors) {
  std::vector<std::pair<c10::Device, std::vector<at::Tensor>>> groups;
  for (const auto& t : tensors) {
    auto it = std::find_if(groups.begin(), groups.end(),
                           [&](const auto& g) { return g.first == t.device(); });
    if (it == groups.end()) {
      groups.emplace_back(t.device(), std::vector<at::Tensor>{});
      it = groups.end() - 1;
    }
    it->second.push_back(t);
  }
  return groups;
}

bool on_one_device(at::TensorList tensors) {
  for (const auto& t : tensors) {
    if (t.device() != tensors[0].device()) return false;
  }
  return true;
}

int64_t total_numel(at::TensorList tensors) {
  int64_t n = 0;
  for (const auto& t : tensors) n += t.numel();
  return n;
}

// The norm (and clip coefficient, when max_norm is set) on the first tensor's
// device. Each device reduces its own tensors; partials meet on the first.
std::pair<at::Tensor, at::Tensor> reduce(at::TensorList tensors, double p, at::ScalarType out,
                                         std::optional<double> max_norm) {
  const Order order = classify_order(p);
  const c10::Device first = tensors[0].device();
  if (total_numel(tensors) == 0) {
    return {at::zeros({}, at::TensorOptions().dtype(out).device(first)), at::Tensor()};
  }
  const Backend& home = backend_for(first);
  if (on_one_device(tensors)) {
    return home.finalize(home.partials(tensors, order, p), order, p, out, max_norm);
  }
  std::vector<at::Tensor> partials;
  for (const auto& [device, group] : group_by_device(tensors)) {
    partials.push_back(backend_for(device).partials(group, order, p).to(first));
  }
  return home.finalize(at::cat(partials), order, p, out, max_norm);
}

void check_finite(const char* fn, const at::Tensor& total, double p) {
  const double value = total.item<double>();
  TORCH_CHECK(std::isfinite(value), fn, ": the total norm of order ", p, " is ", value,
              ", so it cannot be used to clip; pass error_if_nonfinite=False to get the "
              "non-finite norm back instead of this error");
}

at::Tensor empty_list_norm() {
  return at::zeros({}, at::TensorOptions().dtype(at::get_default_dtype()));
}

}  // namespace

void register_backend(c10::DeviceType type, const Backend& backend) {
  backends()[static_cast<size_t>(type)] = backend;
}

const Backend* find_backend(c10::DeviceType type) {
  const auto& slot = backends()[static_cast<size_t>(type)];
  return slot ? &*slot : nullptr;
}

at::Tensor total_norm_kernel(at::TensorList tensors, double norm_type, bool error_if_nonfinite,
                             std::optional<at::ScalarType> dtype) {
  check_arguments("total_norm", "tensors", tensors, norm_type, dtype, /*backends=*/true);
  if (tensors.empty()) return empty_list_norm();
  auto total = reduce(tensors, norm_type, result_dtype(tensors, dtype), std::nullopt).first;
  if (error_if_nonfinite) check_finite("total_norm", total, norm_type);
  return total;
}

at::Tensor clip_grad_norm_kernel(at::TensorList grads, double max_norm, double norm_type,
                                 bool error_if_nonfinite) {
  check_arguments("clip_grad_norm_", "grads", grads, norm_type, std::nullopt, /*backends=*/true);
  if (grads.empty()) return empty_list_norm();
  auto [total, coef] = reduce(grads, norm_type, result_dtype(grads, std::nullopt), max_norm);
  if (error_if_nonfinite) check_finite("clip_grad_norm_", total, norm_type);
  if (!coef.defined()) return total;  // every gradient is empty: nothing to scale
  if (on_one_device(grads)) {
    backend_for(grads[0].device()).scale_(grads, coef);
  } else {
    for (const auto& [device, group] : group_by_device(grads)) {
      backend_for(device).scale_(group, coef.to(device));
    }
  }
  return total;
}

TORCH_LIBRARY(totalnorm, m) {
  m.def(
      "total_norm(Tensor[] tensors, float norm_type=2.0, bool error_if_nonfinite=False, "
      "ScalarType? dtype=None) -> Tensor");
  m.def(
      "clip_grad_norm_(Tensor(a!)[] grads, float max_norm, float norm_type=2.0, "
      "bool error_if_nonfinite=False) -> Tensor");
}

// An empty list carries no dispatch key; this kernel answers it (SPEC: zero).
TORCH_LIBRARY_IMPL(totalnorm, CompositeExplicitAutograd, m) {
  m.impl("total_norm", &total_norm_kernel);
  m.impl("clip_grad_norm_", &clip_grad_norm_kernel);
}

at::Tensor total_norm(at::TensorList tensors, double norm_type, bool error_if_nonfinite,
                      std::optional<at::ScalarType> dtype) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("totalnorm::total_norm", "")
                             .typed<decltype(total_norm_kernel)>();
  return op.call(tensors, norm_type, error_if_nonfinite, dtype);
}

namespace {

std::vector<at::Tensor> defined_grads(const std::vector<at::Tensor>& parameters) {
  std::vector<at::Tensor> grads;
  grads.reserve(parameters.size());
  for (const auto& param : parameters) {
    if (param.defined() && param.grad().defined()) grads.push_back(param.grad());
  }
  return grads;
}

}  // namespace

at::Tensor get_total_norm(const std::vector<at::Tensor>& parameters, double norm_type,
                          bool error_if_nonfinite) {
  auto grads = defined_grads(parameters);
  if (grads.empty() && !parameters.empty()) {
    check_arguments("get_total_norm", "parameters", {}, norm_type, std::nullopt, false);
    return at::zeros({}, parameters[0].options());
  }
  return total_norm(grads, norm_type, error_if_nonfinite);
}

at::Tensor clip_grad_norm_(const std::vector<at::Tensor>& parameters, double max_norm,
                           double norm_type, bool error_if_nonfinite) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("totalnorm::clip_grad_norm_", "")
                             .typed<decltype(clip_grad_norm_kernel)>();
  return op.call(defined_grads(parameters), max_norm, norm_type, error_if_nonfinite);
}

bool ensure_registered() {
  return c10::Dispatcher::singleton().findSchema({"totalnorm::total_norm", ""}).has_value();
}

}  // namespace totalnorm
