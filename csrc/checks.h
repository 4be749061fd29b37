#pragma once
// Argument checks shared by every kernel (Meta included): each rejection is
// raised before any work, with the same message on every device, naming the
// function, the argument and the list index.

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>

#include <optional>

namespace totalnorm {

void check_norm_type(const char* fn, double norm_type);

// norm_type, the dtype argument and every tensor of `tensors` (the argument
// named `arg`): defined, strided, of an accepted dtype, on a device this build
// supports, and not meta tensors mixed with real ones.
void check_arguments(const char* fn, const char* arg, at::TensorList tensors, double norm_type,
                     std::optional<at::ScalarType> dtype);

// Tensors written in place must not overlap themselves (expanded views).
void check_writable(const char* fn, const char* arg, at::TensorList tensors);

// The tensors of one backend call live on one device.
void check_one_device(const char* fn, const char* arg, at::TensorList tensors);

// A float64 tensor of (count, accumulation) pairs.
void check_partials(const char* fn, const at::Tensor& partials);

// Per-tensor pairs: a float64 tensor of shape [n, 2] (rows == false) or
// [rows, n, 2] with rows >= 1 (rows == true).
void check_per_tensor_partials(const char* fn, const at::Tensor& partials, bool rows);

// A 0-dim floating coefficient on `device`.
void check_coef(const char* fn, const at::Tensor& coef, const c10::Device& device);

// With error_if_nonfinite, a NaN or infinite norm raises (this reads it on the host).
void check_finite(const char* fn, const at::Tensor& total, double norm_type, bool error_if_nonfinite);

// Whether the tensor's first element sits at an address aligned for its type
// (a tensor made from a byte buffer at an odd offset may not be).
bool is_aligned(const at::Tensor& t);

// `dtype` when given, else the promotion of the inputs' real dtypes.
at::ScalarType result_dtype(at::TensorList tensors, std::optional<at::ScalarType> dtype);

}  // namespace totalnorm
