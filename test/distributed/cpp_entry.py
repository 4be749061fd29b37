"""The LibTorch across-ranks API (totalnorm/distributed.h) on 2 Gloo ranks.

    cpp_entry.py LIB_CPP_ENTRY

Every rank owns different tensors (rank 1 owns none); the C++ norm must equal
the exact norm of all ranks' tensors and be bitwise the same on both ranks (a
rank that owns nothing cannot know the others' dtype: dtype= is passed); the
C++ clip must scale each rank's gradients by the coefficient torch computes
from that norm.
"""
import datetime
import math
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORLD = 2


def own(rank):
    if rank == 1:
        return []
    g = torch.Generator().manual_seed(rank)
    return [torch.randn(50, generator=g), torch.randn(3, 4, generator=g, dtype=torch.float64)]


def exact_norm(p):
    values = torch.cat([t.reshape(-1).double() for r in range(WORLD) for t in own(r)])
    return math.fsum(v ** p for v in values.abs().tolist()) ** (1 / p)


def rank_main(rank, library, port, outbox):
    torch.ops.load_library(library)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=30))
    name = dist.group.WORLD.group_name
    entry = torch.ops.totalnorm_cpp_entry
    norm = entry.total_norm_in_group(own(rank), name, 3.0, torch.float64)
    params = [torch.nn.Parameter(torch.zeros_like(t)) for t in own(rank)]
    for q, t in zip(params, own(rank)):
        q.grad = t.clone()
    clipped = entry.clip_in_group_(params, 0.5, name, 2.0)
    outbox.put((rank, norm, clipped, [q.grad for q in params]))
    dist.barrier()
    dist.destroy_process_group()


def main():
    library = sys.argv[1]
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    outbox = ctx.Queue()
    procs = [ctx.Process(target=rank_main, args=(r, library, port, outbox)) for r in range(WORLD)]
    for p in procs:
        p.start()
    results = sorted(outbox.get(timeout=120) for _ in range(WORLD))
    for p in procs:
        p.join(timeout=30)
    failures = []
    norms = [r[1] for r in results]
    if not all(torch.equal(n, norms[0]) for n in norms):
        failures.append(f"norms differ between ranks: {norms}")
    if abs(norms[0].item() - exact_norm(3.0)) > 1e-13 * exact_norm(3.0):
        failures.append(f"norm {norms[0].item()!r} vs exact {exact_norm(3.0)!r}")
    total = results[0][2]
    coef = torch.clamp(0.5 / (total + 1e-6), max=1.0)
    for rank, _, clip_norm, grads in results:
        # Without dtype=, rank 1 (no gradients) rounds the same float64 norm to the default dtype.
        if not torch.equal(clip_norm, total.to(clip_norm.dtype)):
            failures.append(f"rank {rank}: clip norm {clip_norm.item()!r} vs rank 0's {total.item()!r}")
    if abs(total.item() - exact_norm(2.0)) > 1e-13 * exact_norm(2.0):
        failures.append(f"clip norm {total.item()!r} vs exact {exact_norm(2.0)!r}")
        for g, t in zip(grads, own(rank)):
            if not torch.equal(g, t.mul_(coef)):
                failures.append(f"rank {rank}: a gradient was not scaled by {coef.item()}")
    print("norms:", [n.item() for n in norms], "clip norm:", total.item(), "coef:", coef.item())
    for f in failures:
        print("FAIL:", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
