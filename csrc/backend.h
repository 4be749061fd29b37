#pragma once
// The contract between the device-independent driver (total_norm.cpp) and the
// device backends (cpu/, cuda/). A backend reduces the tensors of one device to
// float64 partials; the driver combines the partials of every device on the
// first tensor's device and asks that backend to finalize them.

#include <ATen/core/Tensor.h>
#include <c10/core/DeviceType.h>

#include <optional>

#include "norm_math.h"

namespace totalnorm {

struct Backend {
  // Reduces tensors that all live on one device of this backend to a 1-D
  // float64 tensor of partials on that device, not yet finalized.
  at::Tensor (*partials)(at::TensorList tensors, Order order, double p);
  // Combines the partials in order, finalizes the norm and rounds it once to
  // `out`. With max_norm set, also returns the clip coefficient
  // clamp(max_norm / (norm + 1e-6), max=1), computed on the device in `out`
  // arithmetic and held exactly in a 0-dim float64 tensor.
  std::pair<at::Tensor, at::Tensor> (*finalize)(const at::Tensor& partials, Order order,
                                                double p, at::ScalarType out,
                                                std::optional<double> max_norm);
  // Multiplies every tensor (all on one device of this backend) in place by the
  // 0-dim coefficient `coef` living on that device.
  void (*scale_)(at::TensorList tensors, const at::Tensor& coef);
};

// Called once per backend from its TORCH_LIBRARY_IMPL block.
void register_backend(c10::DeviceType type, const Backend& backend);

// The backend for a device type, or nullptr when none is compiled in.
const Backend* find_backend(c10::DeviceType type);

// The kernels every backend registers for its dispatch key: they validate the
// arguments, group the tensors by device and drive the backends.
at::Tensor total_norm_kernel(at::TensorList tensors, double norm_type, bool error_if_nonfinite,
                             std::optional<at::ScalarType> dtype);
at::Tensor clip_grad_norm_kernel(at::TensorList grads, double max_norm, double norm_type,
                                 bool error_if_nonfinite);

}  // namespace totalnorm
