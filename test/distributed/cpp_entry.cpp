// A test-only library: exposes the LibTorch API of totalnorm/distributed.h as
// operators, so a Python test can create a Gloo group (the torch wheel ships no
// Gloo headers to build one in C++) and drive the C++ path on every rank.

#include <totalnorm/distributed.h>

#include <torch/library.h>

namespace {

at::Tensor total_norm_in_group(at::TensorList local, std::string group_name, double norm_type,
                               std::optional<at::ScalarType> dtype) {
  return totalnorm::distributed::total_norm(local, group_name, norm_type, false, dtype);
}

at::Tensor clip_in_group_(at::TensorList params, double max_norm, std::string group_name, double norm_type) {
  return totalnorm::distributed::clip_grad_norm_(params.vec(), max_norm, group_name, norm_type);
}

}  // namespace

TORCH_LIBRARY(totalnorm_cpp_entry, m) {
  m.def("total_norm_in_group(Tensor[] local, str group_name, float norm_type, ScalarType? dtype) -> Tensor", &total_norm_in_group);
  m.def("clip_in_group_(Tensor[] params, float max_norm, str group_name, float norm_type) -> Tensor",
        &clip_in_group_);
}
