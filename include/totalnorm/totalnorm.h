#pragma once
// totalnorm: the global p-norm of a list of tensors as a PyTorch operator.
//
// Every function here goes through the PyTorch dispatcher, so C++ programs,
// Python (torch.ops.totalnorm) and TorchScript all run the same registered op.
// A program that calls nothing from this header but loads TorchScript models
// using the op must still link libtotalnorm; see totalnorm::ensure_registered().

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>

#include <optional>
#include <tuple>
#include <vector>

namespace totalnorm {

// The p-norm of all elements of all `tensors`, as if they were concatenated:
// torch.linalg.vector_norm(cat([t.flatten() for t in tensors]).double(), p),
// rounded once to `dtype` (default: the promoted real dtype of the inputs).
// norm_type may be any non-NaN value, including 0 and +/-infinity. An empty list
// gives a CPU zero of the default dtype. With error_if_nonfinite a NaN or
// infinite result raises (this reads the result on the host).
at::Tensor total_norm(at::TensorList tensors, double norm_type = 2.0,
                      bool error_if_nonfinite = false,
                      std::optional<at::ScalarType> dtype = std::nullopt);

// The norm of the gradients of `parameters` (what Module::parameters() returns);
// parameters without a gradient are skipped. No parameters: a CPU zero of the
// default dtype; no gradients: a zero on the first parameter's device and dtype.
at::Tensor get_total_norm(const std::vector<at::Tensor>& parameters, double norm_type = 2.0,
                          bool error_if_nonfinite = false);

// Computes the gradients' total norm, then scales every gradient in place by
// clamp(max_norm / (norm + 1e-6), max=1) without reading the norm on the host.
// Returns the norm before clipping, like torch::nn::utils::clip_grad_norm_.
//
// There is no C++ counterpart of Python's clip_grad_norm_(..., optimizer=): the
// torch::optim classes (Adam, AdamW, SGD) have no fused step and take no grad_scale
// or found_inf. A C++ loop that calls ATen's fused kernels itself
// (at::_fused_adamw_, at::_fused_adam_, at::_fused_sgd_, whose optional grad_scale
// and found_inf arguments are 0-dim float32 tensors) can fold the clip the same way:
// grad_scale = the reciprocal of finalize_clip's coefficient, found_inf = 1.0 where
// the norm is not finite (docs/semantics.md, Clipping folded into a fused optimizer).
at::Tensor clip_grad_norm_(const std::vector<at::Tensor>& parameters, double max_norm,
                           double norm_type = 2.0, bool error_if_nonfinite = false);

// A total norm with every listed tensor's own norm, from one read of the bytes.
// per_tensor is 1-D, one entry per tensor in order, in the total's dtype and on
// its device; total is bitwise what the total-only function returns. (C++ has
// Python's per_tensor=True as these *_per_tensor functions: a return type
// cannot depend on a flag.)
struct PerTensorNorms {
  at::Tensor total;
  at::Tensor per_tensor;
};

// total_norm, plus each tensor's norm (an empty tensor's entry is 0).
PerTensorNorms total_norm_per_tensor(at::TensorList tensors, double norm_type = 2.0,
                                     bool error_if_nonfinite = false,
                                     std::optional<at::ScalarType> dtype = std::nullopt);

// get_total_norm, plus one entry per parameter that has a gradient, in order.
PerTensorNorms get_total_norm_per_tensor(const std::vector<at::Tensor>& parameters, double norm_type = 2.0,
                                         bool error_if_nonfinite = false);

// clip_grad_norm_, plus the gradients' own norms before clipping (one entry per
// parameter that has a gradient), from the same pass as the clip's norm.
PerTensorNorms clip_grad_norm_per_tensor_(const std::vector<at::Tensor>& parameters, double max_norm,
                                          double norm_type = 2.0, bool error_if_nonfinite = false);

// The steps total_norm and clip_grad_norm_ are made of, for code that combines
// norms across devices or processes itself (see totalnorm/distributed.h).
//
// partials: the tensors (all on one device) reduced to a float64 pair
// (element count, combined contribution of order norm_type) on that device.
at::Tensor partials(at::TensorList tensors, double norm_type = 2.0);
// Rows of pairs (shape [n, 2], or [2n]) merged in row order into one pair.
at::Tensor combine(const at::Tensor& partials, double norm_type = 2.0);
// Rows of pairs merged in row order and finalized into the norm, rounded once to
// dtype. error_if_nonfinite raises on a NaN or infinite norm (reading it on the host).
at::Tensor finalize(const at::Tensor& partials, double norm_type, at::ScalarType dtype,
                    bool error_if_nonfinite = false);
// finalize, plus the clip coefficient clamp(max_norm / (norm + 1e-6), max=1) in
// the norm's dtype, computed on the partials' device.
std::tuple<at::Tensor, at::Tensor> finalize_clip(const at::Tensor& partials, double norm_type,
                                                 at::ScalarType dtype, double max_norm,
                                                 bool error_if_nonfinite = false);
// partials plus one (count, accumulation) pair per tensor, in list order: a
// [2] total (bitwise partials') and a [n, 2] tensor, on the tensors' device.
std::tuple<at::Tensor, at::Tensor> partials_per_tensor(at::TensorList tensors, double norm_type = 2.0);
// [rows, n, 2] stacks of per-tensor pairs (one row per device or rank) merged
// over the rows in row order into [n, 2].
at::Tensor combine_per_tensor(const at::Tensor& partials, double norm_type = 2.0);
// [n, 2] per-tensor pairs finalized into n norms, each rounded once to dtype.
at::Tensor finalize_per_tensor(const at::Tensor& partials, double norm_type, at::ScalarType dtype);
// Multiplies every tensor in place by the 0-dim coefficient (as finalize_clip
// returns it), with the rounding of torch's `t.mul_(coef)` on that device.
void scale_(at::TensorList tensors, const at::Tensor& coef);

// Returns true once the operators are registered with the dispatcher. Calling it
// keeps the linker from dropping libtotalnorm from a program that only loads
// TorchScript models (the CMake package also links with --no-as-needed).
bool ensure_registered();

}  // namespace totalnorm
