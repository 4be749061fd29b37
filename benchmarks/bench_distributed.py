"""Across-ranks benchmark: totalnorm on FSDP-style DTensor gradients against
torch.nn.utils.get_total_norm(...).full_tensor() and against the floor, "a
local norm plus one all-reduce", on 2 and 4 Gloo ranks of this machine.

    python3 benchmarks/bench_distributed.py [--ranks 2 4] [--params 100 400 1600 6400] [--write [RESULTS.md]]

Each parameter is a DTensor sharded on dim 0 of a 1-D mesh over all ranks.
Every timed call starts after a barrier; a call's time is the slowest rank's.
First call: the first call of each method on fresh gradients in the process
(torch's includes DTensor's sharding-propagation cache misses). Steady state:
median (min) of interleaved rounds. --write replaces this script's section of
RESULTS.md.
"""
from __future__ import annotations

import argparse
import datetime
import math
import os
import socket
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parent))
import toolkit  # noqa: E402

SHAPES = [(64, 48), (3072,), (96, 32), (40, 77)]  # about 3K elements each, odd sizes included
ROUNDS = 15


def make_grads(count: int, mesh):
    from torch.distributed.tensor import Shard, distribute_tensor

    g = torch.Generator().manual_seed(count)
    return [
        distribute_tensor(torch.randn(SHAPES[i % len(SHAPES)], generator=g), mesh, [Shard(0)], src_data_rank=None)
        for i in range(count)
    ]


def methods(grads):
    import totalnorm

    def floor():
        local = [g._local_tensor for g in grads]  # the cheapest way to the local shards
        square = totalnorm.total_norm(local) ** 2
        dist.all_reduce(square)
        return square.sqrt()

    return {
        "totalnorm": lambda: totalnorm.total_norm(grads),
        "torch": lambda: torch.nn.utils.get_total_norm(grads).full_tensor(),
        "floor": floor,
    }


def synced(fn) -> float:
    dist.barrier()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def rank_main(rank: int, world: int, port: int, counts: list[int], outbox) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=300))
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh("cpu", (world,))
    rows = []
    for count in counts:
        grads = make_grads(count, mesh)
        fns = methods(grads)
        first = {name: synced(fn) for name, fn in fns.items()}
        values = {name: fn().item() for name, fn in fns.items()}
        steady = toolkit.time_interleaved(fns, 0.0, clock=synced, rounds=ROUNDS)
        rows.append((count, first, steady, values))
    gathered = [None] * world
    dist.all_gather_object(gathered, rows)
    if rank == 0:
        outbox.put(gathered)
    dist.destroy_process_group()


def run_world(world: int, counts: list[int]):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    outbox = ctx.Queue()
    procs = [ctx.Process(target=rank_main, args=(r, world, port, counts, outbox)) for r in range(world)]
    for p in procs:
        p.start()
    per_rank = outbox.get(timeout=1800)
    for p in procs:
        p.join()
    return per_rank


def table(results: dict[int, list], machine: str) -> str:
    header = ["machine", "ranks", "params", "totalnorm ms", "torch ms", "floor ms", "vs floor", "vs torch",
              "first call: totalnorm / torch ms", "first / steady", "target", "met"]
    rows = []
    for world, per_rank in results.items():
        for i in range(len(per_rank[0])):
            count = per_rank[0][i][0]
            # A call takes as long as its slowest rank.
            first = {m: max(r[i][1][m] for r in per_rank) for m in per_rank[0][i][1]}
            steady = {m: max(r[i][2][m].median for r in per_rank) for m in per_rank[0][i][2]}
            low = {m: max(r[i][2][m].minimum for r in per_rank) for m in per_rank[0][i][2]}
            vs_floor = steady["totalnorm"] / steady["floor"]
            first_ratio = first["totalnorm"] / steady["totalnorm"]
            met = vs_floor <= 1.2 and first_ratio <= 10
            rows.append([
                machine, world, count,
                f"{steady['totalnorm'] * 1e3:.2f} ({low['totalnorm'] * 1e3:.2f})",
                f"{steady['torch'] * 1e3:.2f} ({low['torch'] * 1e3:.2f})",
                f"{steady['floor'] * 1e3:.2f} ({low['floor'] * 1e3:.2f})",
                f"{vs_floor:.2f}x", f"{steady['torch'] / steady['totalnorm']:.1f}x faster",
                f"{first['totalnorm'] * 1e3:.1f} / {first['torch'] * 1e3:.1f}", f"{first_ratio:.1f}x",
                "<= 1.2x floor, first <= 10x steady", toolkit.met_cell(met),
            ])
    return toolkit.markdown_table(header, rows)


def agreement(results: dict[int, list]) -> str:
    """The three methods' norms, to show they compute the same thing."""
    worst = 0.0
    for per_rank in results.values():
        for r in per_rank:
            for _, _, _, values in r:
                worst = max(worst, abs(values["torch"] - values["totalnorm"]) / values["totalnorm"],
                            abs(values["floor"] - values["totalnorm"]) / values["totalnorm"])
    return f"Largest relative difference between the three methods' norms: {worst:.1e}."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ranks", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--params", type=int, nargs="+", default=[100, 400, 1600, 6400])
    toolkit.add_write_argument(parser)
    args = parser.parse_args()
    machine = f"{toolkit.cpu_model()}, {os.cpu_count()} cores"
    results = {world: run_world(world, args.params) for world in args.ranks}
    text = "\n\n".join([
        "## Across ranks: DTensor gradients on Gloo (`python3 benchmarks/bench_distributed.py --write`)",
        f"{machine}; torch {torch.__version__}; one thread a rank; {datetime.date.today().isoformat()}. "
        f"Steady state: median (min) of {ROUNDS} interleaved rounds, each call after a barrier, "
        "timed on the slowest rank. Parameters of about 3K elements each, sharded on dim 0 over all ranks.",
        table(results, machine),
        "torch: `get_total_norm(grads).full_tensor()`; floor: `totalnorm.total_norm` of the local shards "
        "(`[g._local_tensor for g in grads]`), squared, one `all_reduce`, square root (what a hand-written FSDP norm does, with no DTensor "
        "handling and no exactness across ranks); totalnorm: `totalnorm.total_norm(grads)` on the DTensors.",
        agreement(results),
    ])
    toolkit.publish(text, args.write)


if __name__ == "__main__":
    main()
