// total_norm and clip_grad_norm_, built from the per-device steps: each device
// reduces its own tensors to a partial (totalnorm::partials), the partials meet
// on the first tensor's device and are finalized there (totalnorm::finalize or
// finalize_clip), and clipping scales each device's tensors (totalnorm::scale_).
// Registered once for every backend (CompositeExplicitAutograd); the steps are
// dispatched to the backend of each device.

#include <totalnorm/totalnorm.h>

#include <ATen/ATen.h>
#include <torch/library.h>

#include "checks.h"
#include "driver.h"
#include "norm_math.h"

namespace totalnorm {

std::vector<at::Tensor> defined_grads(const std::vector<at::Tensor>& parameters) {
  std::vector<at::Tensor> grads;
  grads.reserve(parameters.size());
  for (const auto& param : parameters) {
    if (param.defined() && param.grad().defined()) grads.push_back(param.grad());
  }
  return grads;
}

std::vector<std::pair<c10::Device, std::vector<at::Tensor>>> group_by_device(at::TensorList tensors) {
  std::vector<std::pair<c10::Device, std::vector<at::Tensor>>> groups;
  for (const auto& t : tensors) {
    auto it = std::find_if(groups.begin(), groups.end(), [&](const auto& g) { return g.first == t.device(); });
    if (it == groups.end()) {
      groups.emplace_back(t.device(), std::vector<at::Tensor>{});
      it = groups.end() - 1;
    }
    it->second.push_back(t);
  }
  return groups;
}

namespace {

bool on_one_device(at::TensorList tensors) {
  return std::all_of(tensors.begin(), tensors.end(), [&](const at::Tensor& t) { return t.device() == tensors[0].device(); });
}

}  // namespace

at::Tensor partials_by_device(at::TensorList tensors, double norm_type) {
  if (on_one_device(tensors)) return partials(tensors, norm_type);  // the usual case, without grouping copies
  auto groups = group_by_device(tensors);
  std::vector<at::Tensor> rows;
  rows.reserve(groups.size());
  for (const auto& [device, group] : groups) rows.push_back(partials(group, norm_type).to(tensors[0].device()));
  return at::stack(rows);
}

void scale_by_device_(at::TensorList tensors, const at::Tensor& coef) {
  if (on_one_device(tensors)) return scale_(tensors, tensors.empty() ? coef : coef.to(tensors[0].device()));
  for (const auto& [device, group] : group_by_device(tensors)) scale_(group, coef.to(device));
}

std::tuple<at::Tensor, at::Tensor> partials_per_tensor_by_device(at::TensorList tensors, double norm_type) {
  if (on_one_device(tensors)) return partials_per_tensor(tensors, norm_type);
  // Each device's tensors, with their list positions; the totals stacked as
  // partials_by_device stacks them (so the finalized total is its bits), the
  // per-tensor pairs put back in list order on the first tensor's device.
  const c10::Device first = tensors[0].device();
  std::vector<std::pair<c10::Device, std::vector<int64_t>>> positions;
  for (size_t i = 0; i < tensors.size(); ++i) {
    auto it = std::find_if(positions.begin(), positions.end(),
                           [&](const auto& g) { return g.first == tensors[i].device(); });
    if (it == positions.end()) {
      positions.emplace_back(tensors[i].device(), std::vector<int64_t>{});
      it = positions.end() - 1;
    }
    it->second.push_back(static_cast<int64_t>(i));
  }
  std::vector<at::Tensor> totals;
  at::Tensor rows = at::empty({static_cast<int64_t>(tensors.size()), 2},
                              at::TensorOptions().dtype(at::kDouble).device(first));
  for (const auto& [device, where] : positions) {
    std::vector<at::Tensor> group;
    group.reserve(where.size());
    for (int64_t i : where) group.push_back(tensors[static_cast<size_t>(i)]);
    auto [total, per] = partials_per_tensor(group, norm_type);
    totals.push_back(total.to(first));
    rows.index_copy_(0, at::tensor(where, at::TensorOptions().dtype(at::kLong).device(first)), per.to(first));
  }
  return {at::stack(totals), rows};
}

namespace {

// An empty list: a CPU zero of `dtype`, or of the default dtype.
at::Tensor empty_list_norm(std::optional<at::ScalarType> dtype) {
  return at::zeros({}, at::TensorOptions().dtype(dtype.value_or(at::get_default_dtype_as_scalartype())));
}

}  // namespace

at::Tensor total_norm_by_device(at::TensorList tensors, double norm_type, bool error_if_nonfinite,
                                std::optional<at::ScalarType> dtype) {
  check_arguments("total_norm", "tensors", tensors, norm_type, dtype);
  if (tensors.empty()) return empty_list_norm(dtype);
  at::Tensor total = finalize(partials_by_device(tensors, norm_type), norm_type, result_dtype(tensors, dtype));
  check_finite("total_norm", total, norm_type, error_if_nonfinite);
  return total;
}

at::Tensor clip_grad_norm_by_device(at::TensorList grads, double max_norm, double norm_type,
                                    bool error_if_nonfinite) {
  // Every check that can fail runs before the first gradient is written.
  check_arguments("clip_grad_norm_", "grads", grads, norm_type, std::nullopt);
  check_writable("clip_grad_norm_", "grads", grads);
  if (grads.empty()) return empty_list_norm(std::nullopt);
  auto [total, coef] = finalize_clip(partials_by_device(grads, norm_type), norm_type,
                                     result_dtype(grads, std::nullopt), max_norm);
  check_finite("clip_grad_norm_", total, norm_type, error_if_nonfinite);
  scale_by_device_(grads, coef);
  return total;
}

namespace {

// An empty list: a CPU zero and an empty per-tensor vector, both of `dtype`
// (or of the default dtype).
std::tuple<at::Tensor, at::Tensor> empty_list_norms(std::optional<at::ScalarType> dtype) {
  at::Tensor total = empty_list_norm(dtype);
  return {total, at::empty({0}, total.options())};
}

std::tuple<at::Tensor, at::Tensor> total_norm_per_tensor_composite(at::TensorList tensors, double norm_type,
                                                                   bool error_if_nonfinite,
                                                                   std::optional<at::ScalarType> dtype) {
  check_arguments("total_norm_per_tensor", "tensors", tensors, norm_type, dtype);
  if (tensors.empty()) return empty_list_norms(dtype);
  const at::ScalarType out = result_dtype(tensors, dtype);
  auto [totals, rows] = partials_per_tensor_by_device(tensors, norm_type);
  at::Tensor total = finalize(totals, norm_type, out);
  check_finite("total_norm_per_tensor", total, norm_type, error_if_nonfinite);
  return {total, finalize_per_tensor(rows, norm_type, out)};
}

std::tuple<at::Tensor, at::Tensor> clip_grad_norm_per_tensor_composite(at::TensorList grads, double max_norm,
                                                                       double norm_type, bool error_if_nonfinite) {
  check_arguments("clip_grad_norm_per_tensor_", "grads", grads, norm_type, std::nullopt);
  check_writable("clip_grad_norm_per_tensor_", "grads", grads);
  if (grads.empty()) return empty_list_norms(std::nullopt);
  const at::ScalarType out = result_dtype(grads, std::nullopt);
  auto [totals, rows] = partials_per_tensor_by_device(grads, norm_type);
  auto [total, coef] = finalize_clip(totals, norm_type, out, max_norm);
  check_finite("clip_grad_norm_per_tensor_", total, norm_type, error_if_nonfinite);
  // The per-tensor norms are of the gradients before clipping: finalized
  // (from the pairs already read) before any gradient is scaled.
  at::Tensor per_tensor = finalize_per_tensor(rows, norm_type, out);
  scale_by_device_(grads, coef);
  return {total, per_tensor};
}

// An empty list carries no device: its partial is (0 elements, the identity)
// on the CPU. Non-empty lists only reach this kernel from a device that no
// backend registered, which the check reports.
at::Tensor pair_of_nothing(const char* fn, at::TensorList tensors, double norm_type) {
  check_arguments(fn, "tensors", tensors, norm_type, std::nullopt);
  TORCH_INTERNAL_ASSERT(tensors.empty());
  return at::tensor({0.0, identity_of(classify_order(norm_type))}, at::TensorOptions().dtype(at::kDouble));
}

at::Tensor partials_of_nothing(at::TensorList tensors, double norm_type) {
  return pair_of_nothing("partials", tensors, norm_type);
}

std::tuple<at::Tensor, at::Tensor> partials_per_tensor_of_nothing(at::TensorList tensors, double norm_type) {
  at::Tensor total = pair_of_nothing("partials_per_tensor", tensors, norm_type);
  return {total, at::empty({0, 2}, total.options())};
}

}  // namespace

TORCH_LIBRARY_IMPL(totalnorm, CompositeExplicitAutograd, m) {
  m.impl("total_norm", &total_norm_by_device);
  m.impl("clip_grad_norm_", &clip_grad_norm_by_device);
  m.impl("partials", &partials_of_nothing);
  m.impl("partials_per_tensor", &partials_per_tensor_of_nothing);
  m.impl("total_norm_per_tensor", &total_norm_per_tensor_composite);
  m.impl("clip_grad_norm_per_tensor_", &clip_grad_norm_per_tensor_composite);
}

}  // namespace totalnorm
