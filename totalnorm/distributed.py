"""The total norm of gradients spread over processes (torch.distributed).

Each rank reduces the elements it owns to one float64 partial, a (count,
accumulation) pair (``torch.ops.totalnorm.partials``); one all-gather over the
process group brings every rank's pair to every rank, and each rank merges the
pairs in rank order and finalizes them (``torch.ops.totalnorm.finalize``), so
all ranks get the same bits. The all-gather is a functional collective, so the
whole call traces into one graph under ``torch.compile``.

Which elements a rank owns:

- a DTensor: its local shard; on a mesh dimension where it is ``Replicate``,
  only the rank at coordinate 0 of that dimension counts it. ``Shard`` and
  ``_StridedShard`` shards are disjoint and all count. ``Partial`` is rejected.
- a plain tensor: all of it, on every rank (a pipeline stage's gradients, a
  hand-made ZeRO shard). A plain tensor that every rank holds a copy of (DDP)
  must be wrapped as a ``Replicate`` DTensor, or left out of a call with a group.
"""
from __future__ import annotations

import operator
from typing import Optional, Sequence

import torch
import torch.distributed as dist
import torch.distributed._functional_collectives as funcol
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor
from torch.distributed.tensor.placement_types import Replicate, Shard, _StridedShard

__all__ = ["partial", "norm_across", "clip_across_"]

import totalnorm as _package  # its borrowed-list entries, looked up at call time

_ops = torch.ops.totalnorm
# torch 2.14 renamed the c10d all-gather into one tensor; older releases have only the first name.
_all_gather_single = getattr(dist, "all_gather_single", dist.all_gather_into_tensor)
_functional_all_gather = getattr(funcol, "all_gather_single", funcol.all_gather_tensor)


def _counts_here(fn: str, arg: str, i: int, mesh: DeviceMesh, placements) -> bool:
    """Whether this rank counts its local shard of a DTensor with these placements."""
    coordinate = mesh.get_coordinate()
    if coordinate is None:  # not a member of the mesh: its local shard is empty
        return False
    counts = True
    for dim, placement in enumerate(placements):
        if isinstance(placement, Replicate):
            counts = counts and coordinate[dim] == 0
        elif not isinstance(placement, (Shard, _StridedShard)):
            raise ValueError(
                f"{fn}: {arg}[{i}] is a DTensor with placement {placement} on mesh dimension {dim}; "
                "its local values are not parts of the gradient (a Partial sum is not reduced yet). "
                "Call .redistribute(placements=[Replicate()] * mesh.ndim) or .full_tensor() first"
            )
    return counts


def _local_parts(fn: str, arg: str, items: Sequence[torch.Tensor]):
    """Splits the list into the tensors this rank counts, every local tensor, and the meshes seen."""
    fast = _package._fast_local_parts
    if fast is not None and not torch.compiler.is_compiling():
        # The loop below in C (about 100 ns a DTensor instead of 450, mostly cache
        # misses on the DTensor, its spec and placements); it hands back
        # (NotImplemented) any list it does not take, and that loop raises its errors.
        parts = fast(items, DTensor, _counts_here, fn, arg)
        if parts is not NotImplemented:
            return parts
    counted: list[torch.Tensor] = []
    local: list[torch.Tensor] = []
    meshes: list[DeviceMesh] = []
    compiling = torch.compiler.is_compiling()
    decided: dict = {}
    for i, t in enumerate(items):
        if isinstance(t, DTensor):
            if compiling:
                mesh, placements, part = t.device_mesh, t.placements, t.to_local()
                counts = _counts_here(fn, arg, i, mesh, placements)
            else:
                # Eager: the spec and _local_tensor skip to_local's autograd function,
                # and one decision per (mesh, placements) serves thousands of tensors.
                spec, part = t._spec, t._local_tensor
                mesh, placements = spec.mesh, spec.placements
                # Whether a shard counts depends on the placements' kinds only (and
                # the mesh coordinate); a tuple of types hashes at C speed.
                key = (id(mesh), tuple(map(type, placements)))
                counts = decided.get(key)
                if counts is None:
                    counts = decided[key] = _counts_here(fn, arg, i, mesh, placements)
            if not meshes or (mesh is not meshes[-1] and all(m is not mesh for m in meshes)):
                meshes.append(mesh)
            local.append(part)
            if counts:
                counted.append(part)
        elif isinstance(t, torch.Tensor):
            local.append(t)
            counted.append(t)
        else:
            raise TypeError(f"{fn}: {arg}[{i}] is a {type(t).__name__}, not a Tensor")
    return counted, local, meshes


def _mesh_group(fn: str, meshes: list[DeviceMesh]) -> dist.ProcessGroup:
    """The one process group spanning the ranks of every mesh in the call."""
    if not torch.compiler.is_compiling():  # meshes are fixed: checked once in eager mode
        ranks = [sorted(m.mesh.flatten().tolist()) for m in meshes]
        if any(r != ranks[0] for r in ranks):
            raise ValueError(
                f"{fn}: the DTensors live on meshes over different ranks ({ranks}); pass group= "
                "with a process group that spans all of them (for example the default group)"
            )
    if meshes[0].size() == dist.get_world_size():
        return dist.group.WORLD
    for mesh in meshes:
        if mesh.ndim == 1:
            return mesh.get_group()
    raise ValueError(
        f"{fn}: the DTensors' {meshes[0].ndim}-D mesh covers part of the world ({meshes[0].size()} of "
        f"{dist.get_world_size()} ranks); pass group= with a process group over exactly those ranks"
    )


def _collective_device(group: Optional[dist.ProcessGroup]) -> torch.device:
    """Where a rank that owns no tensors builds its partial: the group's device."""
    capabilities = dist.distributed_c10d._device_capability(group)
    if "cuda" in capabilities and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


@torch._dynamo.assume_constant_result
def _default_collective_device() -> torch.device:
    # Traced code cannot look into a process group; it takes the default group's device.
    return _collective_device(None)


def _check_group(fn: str, group: dist.ProcessGroup) -> None:
    if not dist.is_initialized():
        raise RuntimeError(f"{fn}: group= needs torch.distributed to be initialized (init_process_group)")
    if dist.get_rank(group) < 0:
        raise ValueError(
            f"{fn}: this rank ({dist.get_rank()}) is not a member of the group passed as group=; "
            "every rank of the group, and only those, must make the call"
        )


def partial(
    fn: str,
    arg: str,
    items: Sequence[torch.Tensor],
    norm_type: float,
    group: Optional[dist.ProcessGroup],
    owners: Sequence[torch.Tensor] = (),
):
    """Every rank's (count, accumulation) pair, gathered in rank order, plus this rank's local tensors.

    Returns ``(rows, local)``: ``rows`` is a float64 tensor of ``2 * group size``
    values, the same on every rank; ``local`` is every local tensor (what clipping
    scales, and what decides the result dtype). ``owners`` (the parameters) give
    the meshes, and so the group, when no gradient is a DTensor (none yet).
    """
    counted, local, meshes = _local_parts(fn, arg, items)
    if group is None:
        if not meshes:
            meshes = list({id(t.device_mesh): t.device_mesh for t in owners if isinstance(t, DTensor)}.values())
        group = _mesh_group(fn, meshes)
    elif not torch.compiler.is_compiling():
        _check_group(fn, group)
    if counted:
        mine = _partial_of(counted, norm_type)
    else:
        if local:
            device = local[0].device
        elif torch.compiler.is_compiling():
            device = _default_collective_device()
        else:
            device = _collective_device(group)
        # An empty tensor on the collective's device: the op's own (0 elements, identity) pair.
        mine = _ops.partials([torch.empty(0, device=device)], norm_type)
    if torch.compiler.is_compiling():
        return _functional_all_gather(mine, 0, group), local
    # Eager: the c10d collective itself, without the functional wrapper's tensor subclass.
    rows = mine.new_empty(2 * dist.get_world_size(group))
    _all_gather_single(rows, mine, group=group)
    return rows, local


def _partial_of(tensors: list[torch.Tensor], norm_type: float) -> torch.Tensor:
    """This rank's pair: one partials call per device, the pairs combined in order of first appearance."""
    if not torch.compiler.is_compiling():
        try:  # one device, the usual case, without a Python pass over the devices
            return _package._fast_or(_ops.partials.default, _package._fast_partials, tensors, norm_type)
        except RuntimeError:
            pass  # tensors on several devices: grouped below, or the same error raised again
    by_device: dict[torch.device, list[torch.Tensor]] = {}
    for t in tensors:
        by_device.setdefault(t.device, []).append(t)
    if len(by_device) == 1:
        return _ops.partials(tensors, norm_type)
    first = tensors[0].device
    pairs = [_ops.partials(ts, norm_type).to(first) for ts in by_device.values()]
    return _ops.combine(torch.stack(pairs), norm_type)


_REAL_OF = {torch.complex64: torch.float32, torch.complex128: torch.float64}
_dtype_of = operator.attrgetter("dtype")


def _summary(local: Sequence[torch.Tensor]):
    """(result dtype, the device every tensor is on or None) in one C pass, where the
    borrowed-list module takes the list (plain tensors, eager, no torch function mode); else None."""
    fast = _package._fast_local_summary
    if fast is None or torch.compiler.is_compiling():
        return None
    summary = fast(local)
    return None if summary is NotImplemented else summary


def result_dtype(local: Sequence[torch.Tensor], dtype: Optional[torch.dtype]) -> torch.dtype:
    """The op's result dtype: `dtype`, else the promotion of the local tensors' real dtypes."""
    if dtype is not None:
        return dtype
    summary = _summary(local)
    if summary is not None:
        return summary[0]
    out = None
    # Eager: a C-level map over thousands of tensors; traced code: a plain loop.
    kinds = {t.dtype for t in local} if torch.compiler.is_compiling() else set(map(_dtype_of, local))
    for kind in kinds:
        real = _REAL_OF.get(kind, kind)
        out = real if out is None else torch.promote_types(out, real)
    return torch.get_default_dtype() if out is None else out


def norm_across(fn, arg, items, norm_type, error_if_nonfinite, dtype, group, owners=()) -> torch.Tensor:
    rows, local = partial(fn, arg, items, norm_type, group, owners)
    return _ops.finalize(rows, norm_type, result_dtype(local, dtype), error_if_nonfinite)


def clip_across_(fn, arg, items, max_norm, norm_type, error_if_nonfinite, group, owners=()) -> torch.Tensor:
    rows, local = partial(fn, arg, items, norm_type, group, owners)
    summary = _summary(local)
    dtype = summary[0] if summary is not None else result_dtype(local, None)
    total, coef = _ops.finalize_clip(rows, norm_type, dtype, max_norm, error_if_nonfinite)
    if summary is not None and summary[1] is not None:  # one device, the usual case: no Python pass
        _package._fast_or(_ops.scale_.default, _package._fast_scale_, local, coef.to(summary[1]))
        return total
    by_device: dict[torch.device, list[torch.Tensor]] = {}
    for t in local:
        by_device.setdefault(t.device, []).append(t)
    for device, ts in by_device.items():
        _package._fast_or(_ops.scale_.default, _package._fast_scale_, ts, coef.to(device))
    return total
