#pragma once
// totalnorm across the ranks of a torch.distributed process group, for LibTorch
// training programs. Each rank passes the tensors it owns (its pipeline stage,
// its shard); every rank of the group must make the same call. One all-gather
// of float64 partials (torch's functional collective, through the dispatcher),
// merged in rank order: every rank gets the same bits.
//
// The group is named as torch.distributed registers it (ProcessGroup::getGroupName();
// groups made in Python are registered; a group made in C++ needs
// c10d::register_process_group). Tensors every rank holds a copy of (DDP)
// must be left out, or they count once per rank.

#include <ATen/core/Tensor.h>
#include <c10/util/intrusive_ptr.h>

#include <optional>
#include <string>
#include <vector>

namespace c10d {
class ProcessGroup;
}

namespace totalnorm::distributed {

// The p-norm of all elements of every rank's `local` tensors, on every rank.
at::Tensor total_norm(at::TensorList local, const std::string& group_name, double norm_type = 2.0,
                      bool error_if_nonfinite = false, std::optional<at::ScalarType> dtype = std::nullopt);
at::Tensor total_norm(at::TensorList local, const c10::intrusive_ptr<c10d::ProcessGroup>& group,
                      double norm_type = 2.0, bool error_if_nonfinite = false,
                      std::optional<at::ScalarType> dtype = std::nullopt);

// Clips every rank's gradients of `parameters` by their norm across the group
// and returns that norm (before clipping). No host synchronisation.
at::Tensor clip_grad_norm_(const std::vector<at::Tensor>& parameters, double max_norm,
                           const std::string& group_name, double norm_type = 2.0,
                           bool error_if_nonfinite = false);
at::Tensor clip_grad_norm_(const std::vector<at::Tensor>& parameters, double max_norm,
                           const c10::intrusive_ptr<c10d::ProcessGroup>& group, double norm_type = 2.0,
                           bool error_if_nonfinite = false);

}  // namespace totalnorm::distributed
