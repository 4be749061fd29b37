#pragma once
// Typed handles of the totalnorm operators, for code that calls them through
// the dispatcher (the C++ API, the driver, the autograd kernels).

#include <ATen/core/dispatch/Dispatcher.h>

#include <optional>
#include <tuple>
#include <vector>

namespace totalnorm::ops {

template <class Signature>
c10::TypedOperatorHandle<Signature> handle(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

using TotalNormFn = at::Tensor(at::TensorList, double, bool, std::optional<at::ScalarType>);
using ClipGradNormFn = at::Tensor(at::TensorList, double, double, bool);
using PartialsFn = at::Tensor(at::TensorList, double);
using CombineFn = at::Tensor(const at::Tensor&, double);
using FinalizeFn = at::Tensor(const at::Tensor&, double, at::ScalarType, bool);
using FinalizeClipFn = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, double, at::ScalarType, double, bool);
using ScaleFn = void(at::TensorList, const at::Tensor&);
using TotalNormPerTensorFn = std::tuple<at::Tensor, at::Tensor>(at::TensorList, double, bool,
                                                                std::optional<at::ScalarType>);
using ClipGradNormPerTensorFn = std::tuple<at::Tensor, at::Tensor>(at::TensorList, double, double, bool);
using PartialsPerTensorFn = std::tuple<at::Tensor, at::Tensor>(at::TensorList, double);
using CombinePerTensorFn = at::Tensor(const at::Tensor&, double);
using FinalizePerTensorFn = at::Tensor(const at::Tensor&, double, at::ScalarType);

}  // namespace totalnorm::ops
