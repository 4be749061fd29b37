#include "checks.h"

#include <c10/core/ScalarType.h>
#include <c10/util/Exception.h>

#include <cmath>

#include "backend.h"

namespace totalnorm {

namespace {

bool is_accepted_dtype(at::ScalarType t) {
  switch (t) {
    case at::kHalf:
    case at::kBFloat16:
    case at::kFloat:
    case at::kDouble:
    case at::kComplexFloat:
    case at::kComplexDouble:
      return true;
    default:
      return false;
  }
}

}  // namespace

void check_arguments(const char* fn, const char* arg, at::TensorList tensors, double norm_type,
                     std::optional<at::ScalarType> dtype, bool backends) {
  TORCH_CHECK(!std::isnan(norm_type), fn, ": norm_type must not be NaN; use a number, inf or -inf");
  TORCH_CHECK_TYPE(!dtype || at::isFloatingType(*dtype), fn,
                   ": dtype must be a floating dtype (float16, bfloat16, float32 or float64), got ",
                   *dtype);
  for (size_t i = 0; i < tensors.size(); ++i) {
    const at::Tensor& t = tensors[i];
    TORCH_CHECK(t.defined(), fn, ": ", arg, "[", i, "] is an undefined tensor");
    TORCH_CHECK(t.layout() == at::kStrided, fn, ": ", arg, "[", i, "] has layout ", t.layout(),
                "; only dense (strided) tensors are accepted");
    TORCH_CHECK_TYPE(is_accepted_dtype(t.scalar_type()), fn, ": ", arg, "[", i, "] has dtype ",
                     t.scalar_type(),
                     "; accepted dtypes are float16, bfloat16, float32, float64, complex64 and "
                     "complex128");
    TORCH_CHECK(!backends || find_backend(t.device().type()) != nullptr, fn, ": ", arg, "[", i,
                "] is on device ", t.device(), ", which this build of totalnorm does not support");
  }
}

at::ScalarType result_dtype(at::TensorList tensors, std::optional<at::ScalarType> dtype) {
  if (dtype) return *dtype;
  at::ScalarType out = c10::toRealValueType(tensors[0].scalar_type());
  for (const auto& t : tensors) out = c10::promoteTypes(out, c10::toRealValueType(t.scalar_type()));
  return out;
}

}  // namespace totalnorm
