// The operator schemas of the `totalnorm` namespace, written once. Kernels are
// registered per dispatch key in the files of csrc/cpu, csrc/cuda, csrc/meta,
// csrc/autograd and, for the two user-facing ops, csrc/driver.cpp.

#include <torch/library.h>

TORCH_LIBRARY(totalnorm, m) {
  m.def(
      "total_norm(Tensor[] tensors, float norm_type=2.0, bool error_if_nonfinite=False, "
      "ScalarType? dtype=None) -> Tensor");
  m.def(
      "clip_grad_norm_(Tensor(a!)[] grads, float max_norm, float norm_type=2.0, "
      "bool error_if_nonfinite=False) -> Tensor");
  // The steps the two ops above are made of. A partial is a float64 pair
  // (element count, combined contribution); pairs from several devices or ranks
  // are stacked into rows and merged in row order.
  m.def("partials(Tensor[] tensors, float norm_type) -> Tensor");
  m.def("combine(Tensor partials, float norm_type) -> Tensor");
  m.def(
      "finalize(Tensor partials, float norm_type, ScalarType dtype, bool error_if_nonfinite=False) "
      "-> Tensor");
  m.def(
      "finalize_clip(Tensor partials, float norm_type, ScalarType dtype, float max_norm, "
      "bool error_if_nonfinite=False) -> (Tensor, Tensor)");
  m.def("scale_(Tensor(a!)[] tensors, Tensor coef) -> ()");

  // Every tensor's own norm from the same read as the total: `per_tensor` holds
  // one entry per listed tensor, in order; `total` is bitwise the total-only op's.
  m.def(
      "total_norm_per_tensor(Tensor[] tensors, float norm_type=2.0, bool error_if_nonfinite=False, "
      "ScalarType? dtype=None) -> (Tensor total, Tensor per_tensor)");
  m.def(
      "clip_grad_norm_per_tensor_(Tensor(a!)[] grads, float max_norm, float norm_type=2.0, "
      "bool error_if_nonfinite=False) -> (Tensor total, Tensor per_tensor)");
  // Their steps: the total pair (bitwise `partials`) and one pair per tensor ([n, 2]);
  // [rows, n, 2] stacks of per-tensor pairs merged over rows in row order; [n, 2]
  // pairs finalized into n norms rounded once to dtype.
  m.def("partials_per_tensor(Tensor[] tensors, float norm_type) -> (Tensor total, Tensor per_tensor)");
  m.def("combine_per_tensor(Tensor partials, float norm_type) -> Tensor");
  m.def("finalize_per_tensor(Tensor partials, float norm_type, ScalarType dtype) -> Tensor");
}
