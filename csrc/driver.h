#pragma once
// The device-level plumbing shared by the single-process ops (driver.cpp) and
// the across-ranks C++ API (distributed.cpp).

#include <ATen/core/Tensor.h>

#include <optional>
#include <tuple>
#include <utility>
#include <vector>

namespace totalnorm {

// The gradients of the parameters that have one, in order.
std::vector<at::Tensor> defined_grads(const std::vector<at::Tensor>& parameters);

// Tensors split by device, in order of first appearance.
std::vector<std::pair<c10::Device, std::vector<at::Tensor>>> group_by_device(at::TensorList tensors);

// One (count, accumulation) pair per device, on the first tensor's device: a
// [2] tensor for one device, a [devices, 2] stack of rows otherwise.
at::Tensor partials_by_device(at::TensorList tensors, double norm_type);

// partials_per_tensor over devices: the totals as partials_by_device gives them,
// and one pair per tensor, in list order, on the first tensor's device.
std::tuple<at::Tensor, at::Tensor> partials_per_tensor_by_device(at::TensorList tensors, double norm_type);

// scale_ of each device's tensors by the coefficient, copied to that device.
void scale_by_device_(at::TensorList tensors, const at::Tensor& coef);

// total_norm and clip_grad_norm_ from the per-device steps (partials, finalize
// or finalize_clip, scale_), for any list: the kernels of every backend without
// its own (CompositeExplicitAutograd). The CUDA backend fuses lists on one GPU
// and hands the others here.
at::Tensor total_norm_by_device(at::TensorList tensors, double norm_type, bool error_if_nonfinite,
                                std::optional<at::ScalarType> dtype);
at::Tensor clip_grad_norm_by_device(at::TensorList grads, double max_norm, double norm_type,
                                    bool error_if_nonfinite);

}  // namespace totalnorm
