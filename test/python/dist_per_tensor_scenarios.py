"""What each rank of a test_per_tensor_distributed.py pool runs: per_tensor=True across
ranks (docs/semantics.md, "Per-tensor norms", "Across ranks")."""
from __future__ import annotations

import torch
import torch.distributed as dist
from dist_scenarios import ORDERS, _dtensors, _fsdp2, _batch, _mesh, _mlp, _placements, grads_for_layout, own_grads
from reference import sample
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import Shard
from torch.distributed.tensor.debug import CommDebugMode

import totalnorm


def per_tensor_of_dtensors(layout: str, kind: str) -> dict:
    """Per-tensor norms of DTensor gradients for every order, beside the total-only call."""
    world = dist.get_world_size()
    shape, placements = _placements(layout, world)
    grads = _dtensors(grads_for_layout(kind, layout), _mesh(shape), placements)
    out = {}
    for p in ORDERS:
        with CommDebugMode() as comm:
            total, per = totalnorm.total_norm(grads, p, per_tensor=True)
        again = totalnorm.total_norm(grads, p, per_tensor=True)
        out[p] = {"total": total, "per": per, "again": again.per_tensor, "collectives": comm.get_total_counts(),
                  "total_only": totalnorm.total_norm(grads, p)}
    return out


def per_tensor_clip_of_fsdp2(max_norm: float) -> dict:
    """clip_grad_norm_(per_tensor=True) over FSDP2 gradients: the full gradients before
    the clip, the entries, and the total against a total-only clip of the same gradients."""
    model = _fsdp2(_mlp())
    x, y = _batch(0)
    torch.nn.functional.mse_loss(model(x), y).backward()
    params = list(model.parameters())
    full = [q.grad.full_tensor() for q in params]
    kept = [q.grad.to_local().clone() for q in params]
    total, per = totalnorm.clip_grad_norm_(params, max_norm, per_tensor=True)
    clipped = [q.grad.to_local().clone() for q in params]
    for q, g in zip(params, kept):
        q.grad.to_local().copy_(g)
    total_only = totalnorm.clip_grad_norm_(params, max_norm)
    return {"full": full, "total": total, "per": per, "total_only": total_only, "clipped": clipped,
            "clipped_total_only": [q.grad.to_local().clone() for q in params]}


def per_tensor_of_pipeline_stages(p: float) -> dict:
    """Plain tensors each rank owns, with group=: local entries, one total."""
    grads = own_grads(dist.get_rank())
    with CommDebugMode() as comm:
        total, per = totalnorm.total_norm(grads, p, group=dist.group.WORLD, per_tensor=True)
    return {"total": total, "per": per, "collectives": comm.get_total_counts(),
            "total_only": totalnorm.total_norm(grads, p, group=dist.group.WORLD)}


def stage_grads(stage: int) -> list[torch.Tensor]:
    return [sample((5 + stage, 3), seed=300 + 10 * stage), sample((7,), seed=301 + 10 * stage, zeros_every=3)]


def per_tensor_of_fsdp_pipeline_stages(p: float) -> dict:
    """Pipeline stages over the first mesh dimension, each stage's gradients sharded over
    the second (its 1-D submesh), group= the whole world: entries of whole gradients."""
    world = dist.get_world_size()
    mesh = init_device_mesh("cpu", (2, world // 2), mesh_dim_names=("pp", "dp"))
    stage = mesh.get_coordinate()[0]
    grads = _dtensors(stage_grads(stage), mesh["dp"], [Shard(0)])
    with CommDebugMode() as comm:
        total, per = totalnorm.total_norm(grads, p, group=dist.group.WORLD, per_tensor=True)
    return {"stage": stage, "total": total, "per": per, "collectives": comm.get_total_counts(),
            "total_only": totalnorm.total_norm(grads, p, group=dist.group.WORLD)}


def compiled_per_tensor_of_fsdp2(p: float) -> dict:
    """One graph (fullgraph=True) for per-tensor norms of FSDP2 gradients, against eager."""
    model = _fsdp2(_mlp())
    x, y = _batch(1)
    torch.nn.functional.mse_loss(model(x), y).backward()
    params = list(model.parameters())

    @torch.compile(fullgraph=True, backend="aot_eager")
    def norms(ps):
        return totalnorm.get_total_norm(ps, p, per_tensor=True)

    compiled = norms(params)
    eager = totalnorm.get_total_norm(params, p, per_tensor=True)
    return {"compiled": tuple(compiled), "eager": tuple(eager)}
