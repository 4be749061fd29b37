#pragma once
// Argument checks shared by every kernel (Meta included), so each rejection is
// raised before any work, with the same message on every device.

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>

#include <optional>

namespace totalnorm {

// Rejects a NaN norm_type, a non-floating dtype, and any tensor in `tensors`
// (the argument named `arg` of function `fn`) that is undefined, not strided,
// of an unsupported dtype, or (with `backends`) on a device with no backend.
void check_arguments(const char* fn, const char* arg, at::TensorList tensors, double norm_type,
                     std::optional<at::ScalarType> dtype, bool backends);

// `dtype` when given, else the promotion of the inputs' real dtypes.
at::ScalarType result_dtype(at::TensorList tensors, std::optional<at::ScalarType> dtype);

}  // namespace totalnorm
