"""A pool of real processes joined in one torch.distributed (Gloo) group.

The pool is started once per world size and kept for a test module: each test
sends a function (by module and name) to every rank and gets back every rank's
return value, or the first rank's traceback as the test failure. Every process
group has a timeout, and the parent waits a bounded time for each answer, so a
collective that some rank does not join fails the test instead of hanging CI.
"""
from __future__ import annotations

import datetime
import importlib
import multiprocessing as mp
import os
import pickle
import queue
import socket
import sys
import traceback
from pathlib import Path

COLLECTIVE_TIMEOUT_S = 30  # a rank waiting longer in a collective raises
ANSWER_TIMEOUT_S = 120  # the parent gives up on a call after this


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, paths: list[str], inbox, outbox) -> None:
    sys.path[:0] = paths
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_S),
    )
    while True:
        job = inbox.get()
        if job is None:
            dist.barrier()  # leave together: no rank closes connections another still uses
            break
        module, name, args = job
        try:
            result = getattr(importlib.import_module(module), name)(*args)
            # Pickled here, so a result that cannot cross processes is reported, not lost.
            outbox.put((rank, True, pickle.dumps(result)))
        except BaseException:  # noqa: BLE001 - reported to the parent with its traceback
            outbox.put((rank, False, traceback.format_exc()))
    dist.destroy_process_group()


class RankPool:
    def __init__(self, world: int) -> None:
        ctx = mp.get_context("spawn")
        self.world = world
        self.outbox = ctx.Queue()
        self.inboxes = [ctx.Queue() for _ in range(world)]
        port = _free_port()
        paths = [str(Path(__file__).resolve().parent)]
        self.procs = [
            ctx.Process(target=_worker, args=(r, world, port, paths, self.inboxes[r], self.outbox), daemon=True)
            for r in range(world)
        ]
        for p in self.procs:
            p.start()

    def run(self, fn, *args) -> list:
        """fn(*args) on every rank; every rank's result, in rank order."""
        for inbox in self.inboxes:
            inbox.put((fn.__module__, fn.__name__, args))
        results: list = [None] * self.world
        failures = []
        for _ in range(self.world):
            try:
                rank, ok, value = self.outbox.get(timeout=ANSWER_TIMEOUT_S)
            except queue.Empty:
                self.close(kill=True)
                raise TimeoutError(f"{fn.__name__}: no answer from every rank within {ANSWER_TIMEOUT_S} s") from None
            if ok:
                results[rank] = pickle.loads(value)
            else:
                failures.append((rank, value))
        if failures:
            rank, text = min(failures)
            raise AssertionError(f"{fn.__name__} failed on {len(failures)} rank(s); rank {rank}:\n{text}")
        return results

    def close(self, kill: bool = False) -> None:
        for inbox, p in zip(self.inboxes, self.procs):
            if p.is_alive() and not kill:
                inbox.put(None)
        for p in self.procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
