// The C++ API of include/totalnorm/distributed.h: the same steps as the Python
// path (partials, one all-gather, finalize), each called through the dispatcher.

#include <totalnorm/distributed.h>
#include <totalnorm/totalnorm.h>

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/distributed/c10d/GroupRegistry.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>

#include "checks.h"
#include "dispatch.h"
#include "driver.h"

namespace totalnorm::distributed {
namespace {

// Where a rank that owns no tensors builds its partial: its group's device.
c10::Device group_device(const c10d::ProcessGroup& group) {
  if (group.getBackendType() == c10d::ProcessGroup::BackendType::NCCL) {
    return c10::Device(c10::DeviceType::CUDA);
  }
  return c10::Device(c10::DeviceType::CPU);
}

// This rank's (count, accumulation) pair.
at::Tensor own_partial(at::TensorList local, double norm_type, const c10d::ProcessGroup& group) {
  if (local.empty()) return partials({at::empty({0}, at::TensorOptions().device(group_device(group)))}, norm_type);
  at::Tensor rows = partials_by_device(local, norm_type);
  return rows.dim() == 1 ? rows : combine(rows, norm_type);
}

// Every rank's pair, in rank order, on every rank.
at::Tensor gathered_partials(at::TensorList local, double norm_type, const std::string& group_name) {
  const auto group = c10d::resolve_process_group(group_name);
  static const auto gather =
      c10::Dispatcher::singleton().findSchemaOrThrow("_c10d_functional::all_gather_into_tensor", "");
  static const auto wait = ops::handle<at::Tensor(const at::Tensor&)>("_c10d_functional::wait_tensor");
  torch::jit::Stack stack{own_partial(local, norm_type, *group), static_cast<int64_t>(group->getSize()),
                          group_name};
  gather.callBoxed(stack);
  return wait.call(stack.at(0).toTensor());
}

}  // namespace

at::Tensor total_norm(at::TensorList local, const std::string& group_name, double norm_type,
                      bool error_if_nonfinite, std::optional<at::ScalarType> dtype) {
  check_arguments("total_norm", "local", local, norm_type, dtype);
  const auto out = local.empty() && !dtype ? at::get_default_dtype_as_scalartype() : result_dtype(local, dtype);
  at::Tensor total = finalize(gathered_partials(local, norm_type, group_name), norm_type, out);
  check_finite("total_norm", total, norm_type, error_if_nonfinite);
  return total;
}

at::Tensor total_norm(at::TensorList local, const c10::intrusive_ptr<c10d::ProcessGroup>& group, double norm_type,
                      bool error_if_nonfinite, std::optional<at::ScalarType> dtype) {
  return total_norm(local, group->getGroupName(), norm_type, error_if_nonfinite, dtype);
}

at::Tensor clip_grad_norm_(const std::vector<at::Tensor>& parameters, double max_norm, const std::string& group_name,
                           double norm_type, bool error_if_nonfinite) {
  const auto grads = defined_grads(parameters);
  check_arguments("clip_grad_norm_", "grads", grads, norm_type, std::nullopt);
  check_writable("clip_grad_norm_", "grads", grads);
  const auto out = grads.empty() ? at::get_default_dtype_as_scalartype() : result_dtype(grads, std::nullopt);
  auto [total, coef] = finalize_clip(gathered_partials(grads, norm_type, group_name), norm_type, out, max_norm);
  check_finite("clip_grad_norm_", total, norm_type, error_if_nonfinite);
  scale_by_device_(grads, coef);
  return total;
}

at::Tensor clip_grad_norm_(const std::vector<at::Tensor>& parameters, double max_norm,
                           const c10::intrusive_ptr<c10d::ProcessGroup>& group, double norm_type,
                           bool error_if_nonfinite) {
  return clip_grad_norm_(parameters, max_norm, group->getGroupName(), norm_type, error_if_nonfinite);
}

}  // namespace totalnorm::distributed
