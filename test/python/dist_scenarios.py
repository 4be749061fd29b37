"""What each rank of a test_distributed.py pool runs (imported by the ranks).

Every function here runs on all ranks at once and returns what the parent
compares: norms, clipped shards, error messages. Full (unsharded) gradients are
built from seeds, the same on every rank and in the parent, which computes the
exact reference from them.
"""
from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor, Partial, Replicate, Shard, distribute_tensor
from torch.distributed.tensor.debug import CommDebugMode
from torch.distributed.tensor.placement_types import _StridedShard

import totalnorm
from reference import sample

ORDERS = [0.0, 1.0, 2.0, 3.0, math.inf, -math.inf]


def full_grads(kind: str, seed: int = 0) -> list[torch.Tensor]:
    """Unsharded gradients: odd sizes (uneven shards, empty local shards at 4 ranks), zeros for p = 0 and -inf."""
    if kind == "float32":
        shapes = [(7, 5), (3, 4), (16,), (2, 9), (1, 3)]
        return [sample(s, torch.float32, seed=seed + i, zeros_every=5) for i, s in enumerate(shapes)]
    if kind == "mixed":
        specs = [((7, 5), torch.float32), ((6, 3), torch.bfloat16), ((5,), torch.float64), ((4, 4), torch.float16)]
        return [sample(s, d, seed=seed + i, zeros_every=4) for i, (s, d) in enumerate(specs)]
    raise ValueError(kind)


def own_grads(rank: int) -> list[torch.Tensor]:
    """Plain tensors only this rank holds (a pipeline stage); rank 1 holds none."""
    if rank == 1:
        return []
    return [sample((3 + rank, 2), torch.float32, seed=100 + rank), sample((5,), torch.float32, seed=200 + rank)]


def _mesh(shape):
    return init_device_mesh("cpu", shape, mesh_dim_names=tuple(f"d{i}" for i in range(len(shape))))


def _dtensors(full, mesh, placements):
    # src_data_rank=None: every rank cuts its shard from its own copy, no communication.
    return [distribute_tensor(t, mesh, placements, src_data_rank=None) for t in full]


def _placements(name: str, world: int):
    if name == "shard0":
        return (world,), [Shard(0)]
    if name == "shard1":
        return (world,), [Shard(1)]
    if name == "replicate":
        return (world,), [Replicate()]
    rows = 2 if world >= 4 else 1
    shape = (rows, world // rows)
    return shape, {
        "2d_shard_shard": [Shard(0), Shard(1)],
        "2d_shard_replicate": [Shard(0), Replicate()],
        "2d_replicate_shard": [Replicate(), Shard(0)],
        "2d_strided": [_StridedShard(0, split_factor=shape[1]), Shard(0)],
    }[name]


def grads_for_layout(kind: str, layout: str) -> list[torch.Tensor]:
    """The full gradients of `kind` that have every dimension the layout shards."""
    _, placements = _placements(layout, 2)
    dims = [pl.dim for pl in placements if isinstance(pl, (Shard, _StridedShard))]
    return [t for t in full_grads(kind) if t.dim() > max(dims, default=-1)]


def norms_of_dtensors(layout: str, kind: str) -> dict:
    """total_norm of DTensor gradients for every order, repeated to show the bits stay."""
    world = dist.get_world_size()
    shape, placements = _placements(layout, world)
    full = grads_for_layout(kind, layout)
    grads = _dtensors(full, _mesh(shape), placements)
    out = {}
    for p in ORDERS:
        first = totalnorm.total_norm(grads, p)
        again = totalnorm.total_norm(grads, p)
        assert torch.equal(first.view(-1), again.view(-1)) or (first.isnan() and again.isnan())
        out[p] = first
    return out


def two_meshes_mixed_with_plain(p: float) -> dict:
    """FSDP-like 1-D mesh, an expert-parallel 2-D mesh and plain tensors in one call; one collective."""
    world = dist.get_world_size()
    rank = dist.get_rank()
    dense = _dtensors(full_grads("float32", seed=0), _mesh((world,)), [Shard(0)])
    rows = 2 if world >= 4 else 1
    experts = _dtensors(full_grads("float32", seed=50), _mesh((rows, world // rows)), [Shard(0), Replicate()])
    plain = own_grads(rank)
    with CommDebugMode() as comm:
        norm = totalnorm.total_norm(dense + plain + experts, p)
    return {"norm": norm, "collectives": comm.get_total_counts()}


def pipeline_stages(p: float, subgroups: bool) -> dict:
    """Plain tensors split over ranks (group=); with subgroups, two pipelines of world/2 stages each."""
    rank, world = dist.get_rank(), dist.get_world_size()
    group = dist.group.WORLD
    members = list(range(world))
    if subgroups:
        halves = [list(range(world // 2)), list(range(world // 2, world))]
        made = [dist.new_group(h) for h in halves]  # every rank creates every group
        index = 0 if rank < world // 2 else 1
        group, members = made[index], halves[index]
    with CommDebugMode() as comm:
        norm = totalnorm.total_norm(own_grads(rank), p, group=group)
    return {"norm": norm, "members": members, "collectives": comm.get_total_counts()}


def clip_dtensors(layout: str, max_norm: float, p: float) -> dict:
    """clip_grad_norm_ over DTensor parameters; returns the norm and every local shard after clipping."""
    world = dist.get_world_size()
    shape, placements = _placements(layout, world)
    mesh = _mesh(shape)
    params = []
    for t in full_grads("mixed"):
        param = torch.nn.Parameter(distribute_tensor(torch.zeros_like(t), mesh, placements, src_data_rank=None))
        param.grad = distribute_tensor(t, mesh, placements, src_data_rank=None)
        params.append(param)
    before = [q.grad.to_local().clone() for q in params]
    with CommDebugMode() as comm:
        norm = totalnorm.clip_grad_norm_(params, max_norm, p)
    return {
        "norm": norm,
        "before": before,
        "after": [q.grad.to_local().clone() for q in params],
        "coordinate": mesh.get_coordinate(),
        "collectives": comm.get_total_counts(),
    }


def partial_placement_is_rejected() -> str:
    mesh = _mesh((dist.get_world_size(),))
    grads = [distribute_tensor(torch.ones(4), mesh, [Shard(0)], src_data_rank=None),
             DTensor.from_local(torch.ones(3), mesh, [Partial()], run_check=False)]
    try:
        totalnorm.total_norm(grads)
    except ValueError as e:
        return str(e)
    return "no error"


def group_without_this_rank() -> str:
    """Ranks outside a group get an error; the members finish their call."""
    rank = dist.get_rank()
    group = dist.new_group([0, 1])
    try:
        norm = totalnorm.total_norm([torch.full((2,), float(rank + 1))], group=group)
    except ValueError as e:
        return "error: " + str(e)
    return f"norm {norm.item()}"


def _mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 5))


def _fsdp2(model: torch.nn.Module) -> torch.nn.Module:
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    for layer in model:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer, mesh=mesh)
    return fully_shard(model, mesh=mesh)


def _batch(step: int):
    g = torch.Generator().manual_seed(1000 + step)
    return torch.randn(6, 8, generator=g), torch.randn(6, 5, generator=g)


def fsdp2_training(steps: int, max_norm: float) -> dict:
    """A few FSDP2 steps clipped by totalnorm beside one unsharded model clipped by torch.

    Every rank feeds the same batch, so FSDP2's averaged gradients are the
    unsharded model's gradients and the two runs must agree step by step.
    """
    import copy

    single = _mlp()
    sharded = _fsdp2(copy.deepcopy(single))
    opt = torch.optim.SGD(sharded.parameters(), lr=0.1)
    single_opt = torch.optim.SGD(single.parameters(), lr=0.1)
    norms, torch_norms = [], []
    for step in range(steps):
        x, y = _batch(step)
        torch.nn.functional.mse_loss(sharded(x), y).backward()
        norms.append(totalnorm.clip_grad_norm_(sharded.parameters(), max_norm))
        opt.step()
        opt.zero_grad()
        torch.nn.functional.mse_loss(single(x), y).backward()
        torch_norms.append(torch.nn.utils.clip_grad_norm_(single.parameters(), max_norm))
        single_opt.step()
        single_opt.zero_grad()
    return {
        "norms": norms,
        "torch_norms": torch_norms,
        "params": [q.detach().full_tensor() for q in sharded.parameters()],
        "torch_params": [q.detach().clone() for q in single.parameters()],
    }


def compiled_clip_of_fsdp2_grads(max_norm: float) -> dict:
    """One graph (fullgraph=True) for a clip step over FSDP2 gradients, against eager."""
    model = _fsdp2(_mlp())
    x, y = _batch(0)
    torch.nn.functional.mse_loss(model(x), y).backward()
    params = list(model.parameters())
    grads = [q.grad.to_local().clone() for q in params]

    @torch.compile(fullgraph=True, backend="aot_eager")
    def clip(ps):
        return totalnorm.clip_grad_norm_(ps, max_norm)

    compiled = clip(params)
    compiled_grads = [q.grad.to_local().clone() for q in params]
    for q, g in zip(params, grads):
        q.grad.to_local().copy_(g)
    eager = totalnorm.clip_grad_norm_(params, max_norm)
    return {"compiled": compiled, "eager": eager, "compiled_grads": compiled_grads,
            "eager_grads": [q.grad.to_local().clone() for q in params]}


def compiled_norm_with_group(p: float) -> dict:
    """One graph for total_norm(..., group=) over plain tensors, against eager."""
    grads = own_grads(dist.get_rank())

    @torch.compile(fullgraph=True, backend="aot_eager")
    def norm(ts):
        return totalnorm.total_norm(ts, p, group=dist.group.WORLD)

    return {"compiled": norm(grads), "eager": totalnorm.total_norm(grads, p, group=dist.group.WORLD)}


def fsdp2_before_the_first_backward() -> dict:
    """FSDP2 parameters without gradients yet: every rank joins the collective and gets 0."""
    model = _fsdp2(_mlp())
    with CommDebugMode() as comm:
        norm = totalnorm.get_total_norm(model.parameters())
        clipped = totalnorm.clip_grad_norm_(model.parameters(), 1.0)
    return {"norm": norm, "clipped": clipped, "collectives": comm.get_total_counts()}


# The errors' advice, followed (4 ranks): each returns the error it got without the
# advice, the norm with it, and the full gradients the parent computes the exact norm of.
def _norm_or_error(grads, **kw):
    try:
        return totalnorm.total_norm(grads, **kw)
    except ValueError as e:
        return str(e)


def _replicate_tp(mod, inputs, mesh):
    return tuple(DTensor.from_local(t, mesh, [Replicate()]) for t in inputs)


def _to_local(mod, outputs, mesh):
    return outputs.to_local().clone()  # not a view: FSDP2 warns of views it returns


def tp_with_an_fsdp_only_layer(advice_followed: bool) -> dict:
    """FSDP x TP on a (dp, tp) mesh: a TP weight's gradient sharded on both dimensions, and a
    Linear fully_shard-ed on mesh['dp'] only, so the same on both tp ranks. Following the
    error's advice, the Linear is first made Replicate on tp with distribute_module."""
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import distribute_module

    mesh = init_device_mesh("cpu", (2, 2), mesh_dim_names=("dp", "tp"))
    tp_grads = _dtensors(grads_for_layout("float32", "2d_shard_shard"), mesh, [Shard(0), Shard(1)])
    torch.manual_seed(0)
    layer = torch.nn.Linear(6, 4)
    if advice_followed:
        distribute_module(layer, mesh["tp"], input_fn=_replicate_tp, output_fn=_to_local)
    fully_shard(layer, mesh=mesh["dp"])
    x = torch.randn(3, 6, generator=torch.Generator().manual_seed(7))
    layer(x).square().sum().backward()
    layer_grads = [q.grad for q in layer.parameters()]
    grads = tp_grads + layer_grads
    return {
        "layer_meshes": [g.device_mesh.mesh.tolist() for g in layer_grads],
        "layer_placements": [tuple(type(pl).__name__ for pl in g.placements) for g in layer_grads],
        "no_group": _norm_or_error(grads),
        "with_group": _norm_or_error(grads, group=dist.group.WORLD),
        "tp_full": [g.full_tensor() for g in tp_grads],
        "layer_full": [g.full_tensor() for g in layer_grads],
    }


def stages_on_their_own_ranks() -> dict:
    """Pipeline x FSDP on a (pp, dp) mesh: stage s's gradients sharded over its own ranks
    (mesh['dp']: [0, 1] or [2, 3]), beside a table sharded over all four ranks: different
    parameters on each mesh, so group= over every rank is the advice to follow."""
    mesh = init_device_mesh("cpu", (2, 2), mesh_dim_names=("pp", "dp"))
    stage = mesh.get_coordinate()[0]
    stage_grads = _dtensors(full_grads("float32", seed=20 * stage), mesh["dp"], [Shard(0)])
    table = _dtensors(full_grads("float32", seed=90), _mesh((dist.get_world_size(),)), [Shard(0)])
    grads = stage_grads + table
    return {"stage": stage, "no_group": _norm_or_error(grads),
            "with_group": _norm_or_error(grads, group=dist.group.WORLD)}


def nd_mesh_over_part_of_the_world(copies: bool) -> dict:
    """Gradients on the 2-D mesh ['dp', 'tp'] of a (pp, dp, tp) = (2, 2, 1) mesh, half the world.
    copies=False: pipeline stages (each stage its own gradients), so group= over every rank;
    copies=True: the other half holds the same gradients (replicas), so group= over the mesh's ranks."""
    mesh = init_device_mesh("cpu", (2, 2, 1), mesh_dim_names=("pp", "dp", "tp"))
    stage = mesh.get_coordinate()[0]
    sub = mesh["dp", "tp"]
    grads = _dtensors(full_grads("float32", seed=0 if copies else 20 * stage), sub, [Shard(0), Replicate()])
    halves, _ = dist.new_subgroups_by_enumeration([[0, 1], [2, 3]])
    group = halves if copies else dist.group.WORLD
    return {"stage": stage, "no_group": _norm_or_error(grads), "with_group": _norm_or_error(grads, group=group)}


def partial_reduced_as_advised() -> dict:
    """A (Shard(0), Partial()) gradient on a (2, 2) mesh, reduced as the error advises."""
    mesh = _mesh((2, 2))
    full = full_grads("float32")
    shards = _dtensors(full, mesh, [Shard(0), Replicate()])
    # Halves exactly: the two tp ranks' Partial values sum to the shard.
    partial = [DTensor.from_local(s.to_local() / 2, mesh, [Shard(0), Partial()], run_check=False) for s in shards]
    error = _norm_or_error(partial)
    fixed = [t.redistribute(placements=[Shard(0), Replicate()]) for t in partial]
    return {"error": error, "norm": totalnorm.total_norm(fixed)}


def _python_local_parts(items):
    """totalnorm.distributed._local_parts with its C pass switched off."""
    import totalnorm.distributed as td

    fast, totalnorm._fast_local_parts = totalnorm._fast_local_parts, None
    try:
        return td._local_parts("total_norm", "tensors", items)
    except (TypeError, ValueError) as e:
        return f"{type(e).__name__}: {e}"
    finally:
        totalnorm._fast_local_parts = fast


class SubDTensor(DTensor):
    """A DTensor subclass: counted by the same rules."""


def local_parts_in_c_and_in_python_agree() -> list:
    """The C pass of _local_parts against its Python loop: the same tensors (by identity),
    meshes and errors, on lists mixing meshes, placements, plain tensors and a subclass."""
    import totalnorm.distributed as td

    world = dist.get_world_size()
    rows = 2 if world >= 4 else 1
    flat, square = _mesh((world,)), _mesh((rows, world // rows))
    shard = _dtensors(full_grads("float32", seed=0), flat, [Shard(0)])
    replicated = _dtensors(full_grads("float32", seed=10), flat, [Replicate()])
    mixed = _dtensors(full_grads("float32", seed=20), square, [Shard(0), Replicate()])
    sub = DTensor.from_local(torch.ones(3), flat, [Replicate()], run_check=False)
    sub.__class__ = SubDTensor
    partial = DTensor.from_local(torch.ones(3), flat, [Partial()], run_check=False)
    plain = [torch.ones(2), torch.nn.Parameter(torch.ones(3))]
    cases = {
        "mixed": shard[:2] + plain[:1] + mixed + replicated + [sub] + shard[2:] + plain[1:],
        "plain only": plain,
        "partial first": shard[:1] + [partial, "x"],
        "non-tensor first": shard[:1] + ["x", partial],
    }
    taken = totalnorm._fast_local_parts(cases["mixed"], DTensor, td._counts_here, "f", "a") is not NotImplemented
    out = [("C pass taken", taken, True)]
    for name, items in cases.items():
        try:
            fast = td._local_parts("total_norm", "tensors", items)
        except (TypeError, ValueError) as e:
            fast = f"{type(e).__name__}: {e}"
        slow = _python_local_parts(items)
        if isinstance(slow, str):
            out.append((name, fast, slow))
        else:
            out.append((name, [[id(t) for t in part] for part in fast], [[id(t) for t in part] for part in slow],
                        len(fast[0])))
    return out
