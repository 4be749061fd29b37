"""FSDP2 training on the CPU, clipped by totalnorm, with torch's norm logged beside it.

    torchrun --nproc-per-node 2 examples/fsdp2_train.py [--steps 5]

Every parameter is sharded over the ranks (fully_shard), so every gradient is a
DTensor. totalnorm.clip_grad_norm_ reduces each rank's shards to one float64
partial, all-gathers the partials once and scales every local shard on every
rank; torch.nn.utils.get_total_norm gives the same norm (to float32 rounding)
as a DTensor that needs .full_tensor().
"""
import argparse
import datetime
import gc
import os

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

import totalnorm


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--max-norm", type=float, default=0.5)
    args = parser.parse_args()
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
    rank = dist.get_rank()
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.Linear(64, 8))
    for layer in model:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)

    for step in range(args.steps):
        g = torch.Generator().manual_seed(step * dist.get_world_size() + rank)  # each rank its own batch
        x, y = torch.randn(16, 32, generator=g), torch.randn(16, 8, generator=g)
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        grads = [p.grad for p in model.parameters()]
        theirs = torch.nn.utils.get_total_norm(grads).full_tensor()  # before clipping, for the log
        norm = totalnorm.clip_grad_norm_(model.parameters(), args.max_norm)
        optimizer.step()
        optimizer.zero_grad()
        if rank == 0:
            print(f"step {step}: loss {loss.item():.4f}  totalnorm {norm.item():.6f}  torch {theirs.item():.6f}")
    # Release the sharded model and every DTensor before the process group goes:
    # left to interpreter exit, their teardown can abort the process (seen with
    # Gloo under load, with or without totalnorm).
    del model, optimizer, mesh, loss, grads, theirs, norm
    gc.collect()
    dist.barrier()  # no rank tears its connections down while another still uses them
    dist.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
