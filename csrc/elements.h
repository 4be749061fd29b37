#pragma once
// The one mapping from torch dtypes to the element types the kernels read
// (Elem, norm_math.h, which stays free of torch headers).

#include <c10/core/ScalarType.h>

#include <optional>

#include "norm_math.h"

namespace totalnorm {

// The element type of dtype `t`; nullopt for a dtype totalnorm does not accept.
inline std::optional<Elem> elem_of(c10::ScalarType t) {
  switch (t) {
    case c10::ScalarType::Half:
      return Elem::Half;
    case c10::ScalarType::BFloat16:
      return Elem::BFloat16;
    case c10::ScalarType::Float:
      return Elem::Float;
    case c10::ScalarType::Double:
      return Elem::Double;
    case c10::ScalarType::ComplexFloat:
      return Elem::ComplexFloat;
    case c10::ScalarType::ComplexDouble:
      return Elem::ComplexDouble;
    default:
      return std::nullopt;
  }
}

}  // namespace totalnorm
