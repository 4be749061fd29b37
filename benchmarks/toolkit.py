"""What every benchmark script here shares: timing, the machine's name, tables,
and writing the script's own section of RESULTS.md.

Timing is interleaved: each round calls every candidate once, in turn, after
warm-up calls, so drift of a shared machine hits all candidates alike; the
median and the minimum of the rounds are reported.
"""
from __future__ import annotations

import os
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
MIN_ROUNDS, MAX_ROUNDS = 11, 301


@dataclass(frozen=True)
class Timing:
    """Seconds per call: the median and the minimum over the timed rounds."""

    median: float
    minimum: float

    def ms(self) -> str:
        return f"{self.median * 1e3:.2f} ({self.minimum * 1e3:.2f})"


def time_interleaved(
    fns: dict[str, Callable[[], object]],
    budget_s: float,
    setup: Callable[[], None] = lambda: None,
    warmups: int = 2,
    clock: Callable[[Callable[[], object]], float] | None = None,
    rounds: int | None = None,
) -> dict[str, Timing]:
    """Median and min of each fn over interleaved rounds; `setup` runs untimed before every call.

    `clock(fn)` times one call (default: wall time); `rounds` fixes the round
    count (ranks of a distributed run must agree on it), else the budget sets it.
    """
    def wall(fn: Callable[[], object]) -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    clock = clock or wall
    warm_round = 0.0
    for fn in fns.values():
        for _ in range(warmups):
            setup()
            warm_round += clock(fn) / warmups
    if rounds is None:
        rounds = max(MIN_ROUNDS, min(MAX_ROUNDS, int(budget_s / max(warm_round, 1e-9))))
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            setup()
            samples[name].append(clock(fn))
    return {name: Timing(statistics.median(s), min(s)) for name, s in samples.items()}


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def machine_label() -> str:
    """The machine as every table row names it."""
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} ({os.cpu_count()} CPU cores)"
    return f"{cpu_model()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_section(text: str, path: Path = RESULTS) -> None:
    """Replaces the section with the same `## ` heading (the text's first line), or appends it."""
    heading = text.splitlines()[0]
    old = path.read_text() if path.exists() else "# Benchmark results\n"
    pattern = re.compile(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    if pattern.search(old):
        new = pattern.sub(lambda _: text.rstrip("\n") + "\n\n", old, count=1).rstrip("\n") + "\n"
    else:
        new = old.rstrip("\n") + "\n\n" + text.rstrip("\n") + "\n"
    path.write_text(new)
