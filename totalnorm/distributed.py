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
                "Reduce it first, keeping it a DTensor: .redistribute(placements=...) with Replicate() "
                "in place of each Partial (its Shard placements may stay); to clip, assign the result "
                "back to the parameter's .grad. Not .full_tensor(): a plain tensor counts on every rank "
                "that holds it"
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


# Why meshes over different rank sets are refused: the metadata cannot tell two cases apart,
# and each has its own answer. Both are tested in test_distributed.py (4 ranks).
_DIFFERENT_RANK_SETS = (
    "{fn}: the DTensors live on meshes over different ranks ({ranks}), so which elements count "
    "once cannot be told from them. Two cases: (1) each mesh holds different parameters (pipeline "
    "stages, each sharded over its own ranks): pass group= with a process group over every rank "
    "that holds a part (for example the default group); (2) some parameters are the same on every "
    "rank of another mesh dimension, e.g. a layer fully_shard-ed on mesh['dp'] but not "
    "parallelized over 'tp' of a (dp, tp) mesh: make them Replicate DTensors on that dimension "
    "(for example distribute_module(layer, mesh['tp']) before fully_shard(layer, mesh=mesh['dp'])), "
    "so each counts once; group= would count them once per copy"
)


def _mesh_group(fn: str, meshes: list[DeviceMesh]) -> dist.ProcessGroup:
    """The one process group spanning the ranks of every mesh in the call."""
    if not torch.compiler.is_compiling():  # meshes are fixed: checked once in eager mode
        ranks = [sorted(m.mesh.flatten().tolist()) for m in meshes]
        if any(r != ranks[0] for r in ranks):
            raise ValueError(_DIFFERENT_RANK_SETS.format(fn=fn, ranks=ranks))
    if meshes[0].size() == dist.get_world_size():
        return dist.group.WORLD
    for mesh in meshes:
        if mesh.ndim == 1:
            return mesh.get_group()
    raise ValueError(
        f"{fn}: the DTensors' {meshes[0].ndim}-D mesh covers part of the world ({meshes[0].size()} of "
        f"{dist.get_world_size()} ranks: {sorted(meshes[0].mesh.flatten().tolist())}); pass group=: "
        "a process group over exactly those ranks when the other ranks hold copies of the same "
        "parameters (replicas), or over every rank that holds other parameters when they do "
        "(pipeline stages: for example the default group)"
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
    group = _call_group(fn, group, meshes, owners)
    if counted:
        mine = _partial_of(counted, norm_type)
    else:
        # An empty tensor on the collective's device: the op's own (0 elements, identity) pair.
        mine = _ops.partials([torch.empty(0, device=_pair_device(local, group))], norm_type)
    return _all_gather(mine, group), local


def _pair_device(local: list[torch.Tensor], group) -> torch.device:
    """Where a rank builds its pair when it counts nothing: its first local tensor's
    device, else the group's."""
    if local:
        return local[0].device
    if torch.compiler.is_compiling():
        return _default_collective_device()
    return _collective_device(group)


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
    _scale_local(local, coef, summary)
    return total


def _scale_local(local: list[torch.Tensor], coef: torch.Tensor, summary) -> None:
    """scale_ of every local tensor by coef, one call per device (`summary`: _summary(local))."""
    if summary is not None and summary[1] is not None:  # one device, the usual case: no Python pass
        _package._fast_or(_ops.scale_.default, _package._fast_scale_, local, coef.to(summary[1]))
        return
    by_device: dict[torch.device, list[torch.Tensor]] = {}
    for t in local:
        by_device.setdefault(t.device, []).append(t)
    for device, ts in by_device.items():
        _package._fast_or(_ops.scale_.default, _package._fast_scale_, ts, coef.to(device))


# --- Per-tensor norms across ranks (per_tensor=True) ------------------------------------
#
# Every entry of a DTensor is the norm of the whole gradient: each rank holds one
# (count, accumulation) pair per listed tensor (its counted shard's, or the empty
# pair for a replica it does not count), and the pairs of one tensor are merged
# over the ranks in rank order, as the total's are. Traffic per rank stays
# proportional to the tensor count, whatever the rank count:
#
# 1. all_to_all: the n entries are cut into `ranks` near-equal slices; rank j
#    receives every rank's pairs of slice j (n / ranks pairs from each rank) and
#    merges them in rank order (totalnorm::combine_per_tensor);
# 2. all_gather: every rank sends its merged slice, padded to the longest slice,
#    and gets all of them back. The rank's total pair rides in front of the slice,
#    so the total still needs no collective of its own and is merged from the same
#    pairs in the same order as the total-only call's, to the same bits.
#
# Plain tensors are the rank's own (pipeline stages, hand-made shards): their
# entries are local norms, and take no part in the exchange. DTensors reduce over
# the ranks of their mesh: the call's group when the mesh spans it, else the
# mesh's own group (a 1-D mesh smaller than group=, as in pipeline stages of FSDP).


def _slice_start(m: int, parts: int, j: int) -> int:
    """Start of slice j of m entries cut into `parts` near-equal slices (plan.h's split_point)."""
    q, r = divmod(m, parts)
    return j * q + min(j, r)


def _call_group(fn: str, group, meshes: list, owners) -> dist.ProcessGroup:
    """The group the total is gathered over: group= (checked), else the one the meshes span."""
    if group is None:
        if not meshes:
            meshes = list({id(t.device_mesh): t.device_mesh for t in owners if isinstance(t, DTensor)}.values())
        return _mesh_group(fn, meshes)
    if not torch.compiler.is_compiling():
        _check_group(fn, group)
    return group


def _reduction_group(fn: str, mesh: DeviceMesh, call_group: dist.ProcessGroup, call_size: int):
    """The group over which a DTensor's per-tensor pairs are merged: the call's
    group when the mesh spans it, else the mesh's own 1-D group."""
    if mesh.size() == call_size:
        return call_group
    if mesh.ndim == 1:
        return mesh.get_group()
    raise ValueError(
        f"{fn}: per_tensor=True with DTensors on a {mesh.ndim}-D mesh of {mesh.size()} ranks inside a "
        f"group of {call_size}: their per-tensor norms need a process group over exactly that mesh's "
        "ranks, which totalnorm does not create. Clip or take the total without per_tensor=True, and "
        "get these DTensors' per-tensor norms with get_total_norm(their parameters, per_tensor=True, "
        "group=<a group over exactly that mesh's ranks>)"
    )


def _pairs_of(tensors: list[torch.Tensor], norm_type: float):
    """This rank's total pair (bitwise _partial_of's) and one pair per tensor, on tensors[0]'s device."""
    devices = {t.device for t in tensors} if len(tensors) > 1 else {tensors[0].device}
    if len(devices) == 1:
        return _ops.partials_per_tensor(tensors, norm_type)
    first = tensors[0].device
    where: dict[torch.device, list[int]] = {}
    for i, t in enumerate(tensors):
        where.setdefault(t.device, []).append(i)
    rows = torch.empty(len(tensors), 2, dtype=torch.float64, device=first)
    totals = []
    for device, positions in where.items():
        total, per = _ops.partials_per_tensor([tensors[i] for i in positions], norm_type)
        totals.append(total.to(first))
        rows[torch.tensor(positions, device=first)] = per.to(first)
    return _ops.combine(torch.stack(totals), norm_type), rows


def _all_to_all(values: torch.Tensor, out_splits: list[int], in_splits: list[int], group) -> torch.Tensor:
    if torch.compiler.is_compiling():
        return funcol.all_to_all_single(values, out_splits, in_splits, group)
    out = values.new_empty(sum(out_splits))
    dist.all_to_all_single(out, values, out_splits, in_splits, group=group)
    return out


def _all_gather(values: torch.Tensor, group) -> torch.Tensor:
    if torch.compiler.is_compiling():
        return _functional_all_gather(values, 0, group)
    out = values.new_empty(values.numel() * dist.get_world_size(group))
    _all_gather_single(out, values, group=group)
    return out


def _per_tensor_pairs(fn, arg, items, norm_type, group, owners):
    """``(rows, pairs, local)``: the total's gathered rows (as partial() returns them),
    one merged pair per item ([n, 2]; a DTensor's over its ranks, a plain tensor's
    local), and every local tensor."""
    compiling = torch.compiler.is_compiling()
    local: list[torch.Tensor] = []
    counted: list[torch.Tensor] = []
    counted_at: list[int] = []
    dtensors: dict[int, tuple[DeviceMesh, list[int]]] = {}  # id(mesh) -> (mesh, positions)
    for i, t in enumerate(items):
        if isinstance(t, DTensor):
            mesh, part = t.device_mesh, (t.to_local() if compiling else t._local_tensor)
            counts = _counts_here(fn, arg, i, mesh, t.placements)
            dtensors.setdefault(id(mesh), (mesh, []))[1].append(i)
        elif isinstance(t, torch.Tensor):
            part, counts = t, True
        else:
            raise TypeError(f"{fn}: {arg}[{i}] is a {type(t).__name__}, not a Tensor")
        local.append(part)
        if counts:
            counted.append(part)
            counted_at.append(i)
    call_group = _call_group(fn, group, [mesh for mesh, _ in dtensors.values()], owners)
    call_size = dist.get_world_size(call_group)

    device = counted[0].device if counted else _pair_device(local, call_group)
    nothing = _ops.partials([torch.empty(0, device=device)], norm_type)  # (0 elements, identity)
    pairs = nothing.expand(len(items), 2).clone()
    if counted:
        mine, rows = _pairs_of(counted, norm_type)
        pairs[torch.tensor(counted_at, device=device)] = rows.to(device)
    else:
        mine = nothing

    # The DTensors' positions per reduction group (meshes over the same ranks share one).
    by_group: dict[int, tuple[dist.ProcessGroup, list[int]]] = {}
    for mesh, positions in dtensors.values():
        g = _reduction_group(fn, mesh, call_group, call_size)
        by_group.setdefault(id(g), (g, []))[1].extend(positions)
    # Every rank of a group must make its collectives in the same order: the call
    # group first, then the others by their ranks (one order on every rank, so no
    # two ranks can wait on each other's groups in opposite orders).
    groups = list(by_group.values())
    if not compiling:
        groups.sort(key=lambda entry: (entry[0] is not call_group, dist.get_process_group_ranks(entry[0])))
    else:
        groups.sort(key=lambda entry: entry[0] is not call_group)
    plans = []
    for g, positions in groups:
        positions.sort()
        ranks = g.size()
        rank = dist.get_rank(g)
        m = len(positions)
        starts = [_slice_start(m, ranks, j) for j in range(ranks + 1)]
        in_splits = [2 * (starts[j + 1] - starts[j]) for j in range(ranks)]
        received = _all_to_all(
            pairs[torch.tensor(positions, device=device)].reshape(-1), [in_splits[rank]] * ranks, in_splits, g
        )
        merged = _ops.combine_per_tensor(received.view(ranks, in_splits[rank] // 2, 2), norm_type)
        longest = starts[1] - starts[0]
        padded = torch.cat([merged.reshape(-1), merged.new_zeros(2 * longest - merged.numel())])
        plans.append((g, positions, starts, longest, padded))

    gathered_total = None
    for g, positions, starts, longest, padded in plans:
        ranks = len(starts) - 1
        with_total = g is call_group
        width = 2 * longest + (2 if with_total else 0)
        gathered = _all_gather(torch.cat([mine, padded]) if with_total else padded, g).view(ranks, width)
        if with_total:
            gathered_total = gathered[:, :2].reshape(-1)
        slices = gathered[:, width - 2 * longest :].reshape(ranks * longest, 2)
        valid = [j * longest + k for j in range(ranks) for k in range(starts[j + 1] - starts[j])]
        pairs[torch.tensor(positions, device=device)] = slices[torch.tensor(valid, device=device)]
    if gathered_total is None:
        gathered_total = _all_gather(mine, call_group)
    return gathered_total, pairs, local


def norms_across(fn, arg, items, norm_type, error_if_nonfinite, dtype, group, owners=()):
    """``(total, per_tensor)`` across ranks; total is bitwise norm_across's."""
    rows, pairs, local = _per_tensor_pairs(fn, arg, items, norm_type, group, owners)
    out = result_dtype(local, dtype)
    total = _ops.finalize(rows, norm_type, out, error_if_nonfinite)
    return total, _ops.finalize_per_tensor(pairs, norm_type, out)


def clips_across_(fn, arg, items, max_norm, norm_type, error_if_nonfinite, group, owners=()):
    """clip_across_ that also returns the per-tensor norms before clipping."""
    rows, pairs, local = _per_tensor_pairs(fn, arg, items, norm_type, group, owners)
    out = result_dtype(local, None)
    total, coef = _ops.finalize_clip(rows, norm_type, out, max_norm, error_if_nonfinite)
    per_tensor = _ops.finalize_per_tensor(pairs, norm_type, out)
    _scale_local(local, coef, _summary(local))
    return total, per_tensor
