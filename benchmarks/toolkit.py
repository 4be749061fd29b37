"""What every benchmark script here shares: timing (wall and CUDA clocks, the L2
flush), the machine's name, workloads both devices use, targets, tables, the
--write option that replaces the script's own section of RESULTS.md, and the
plot of RESULTS.md (results.png).

Timing is interleaved: each round calls every candidate once, in turn, after
warm-up calls, so drift of a shared machine hits all candidates alike; the
median and the minimum of the rounds are reported.

    python3 benchmarks/toolkit.py [RESULTS.md]   # redraws results.png from the results file
"""
from __future__ import annotations

import argparse
import functools
import os
import re
import statistics
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
PLOT_NAME = "results.png"
MIN_ROUNDS, MAX_ROUNDS = 11, 301
L2_FLUSH_BYTES = 256 << 20  # larger than the L2 cache of any current GPU

# A clock times one call of a function: seconds.
Clock = Callable[[Callable[[], object]], float]


@dataclass(frozen=True)
class Timing:
    """Seconds per call: the median and the minimum over the timed rounds."""

    median: float
    minimum: float

    def ms(self) -> str:
        return f"{self.median * 1e3:.2f} ({self.minimum * 1e3:.2f})"


def wall_clock(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def time_interleaved(
    fns: dict[str, Callable[[], object]],
    budget_s: float,
    setup: Callable[[], None] = lambda: None,
    warmups: int = 2,
    clock: Clock = wall_clock,
    rounds: int | None = None,
) -> dict[str, Timing]:
    """Median and min of each fn over interleaved rounds; `setup` runs untimed before every call.

    `clock(fn)` times one call; `rounds` fixes the round count (ranks of a
    distributed run must agree on it), else the budget sets it from the wall time
    a round of clock calls takes (setup excluded; a clock timing several calls, or
    waiting on a device, counts what it really takes).
    """
    warm_round = 0.0
    for _ in range(warmups):
        for fn in fns.values():
            setup()
            start = time.perf_counter()
            clock(fn)
            warm_round += (time.perf_counter() - start) / warmups
    if rounds is None:
        rounds = max(MIN_ROUNDS, min(MAX_ROUNDS, int(budget_s / max(warm_round, 1e-9))))
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            setup()
            samples[name].append(clock(fn))
    return {name: Timing(statistics.median(s), min(s)) for name, s in samples.items()}


def cuda_wall_clock(calls: int = 10) -> Clock:
    """Host seconds per call of `calls` back-to-back calls and one synchronize: what a
    training loop waits, host overhead included."""

    def clock(fn: Callable[[], object]) -> float:
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
        return (time.perf_counter() - start) / calls

    return clock


@functools.cache
def _sleep_cycles_per_second() -> float:
    cycles = 10_000_000
    for _ in range(2):  # the first call also loads the kernel
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        torch.cuda._sleep(cycles)
        end.record()
        end.synchronize()
    return cycles / (start.elapsed_time(end) / 1e3)


def cuda_event_clock(lead_s: float = 1e-3) -> Clock:
    """Device seconds of one call, between two CUDA events on the current stream.

    A sleep kernel of `lead_s` queued ahead of the start event keeps the GPU busy
    while the host enqueues the call, so the GPU never waits on the host inside the
    timed span: only the call's device work is counted.
    """

    def clock(fn: Callable[[], object]) -> float:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda._sleep(int(lead_s * _sleep_cycles_per_second()))
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3

    return clock


class L2Flush:
    """A `setup` for GPU timings: writes a buffer larger than the L2 cache, so the
    timed call reads its inputs from memory, not from what the last call left in L2."""

    def __init__(self, nbytes: int = L2_FLUSH_BYTES, device: str = "cuda") -> None:
        self.buffer = torch.empty(nbytes, dtype=torch.uint8, device=device)

    def __call__(self) -> None:
        self.buffer.zero_()


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def cpu_label() -> str:
    """The CPU as every table row of a CPU benchmark names it."""
    return f"{cpu_model()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"


def gpu_label() -> str:
    """The GPU (and the host's core count) as every table row of a GPU benchmark names it."""
    return f"{torch.cuda.get_device_name()} ({os.cpu_count()} CPU cores)"


def small_tensor_sizes(generator: torch.Generator, count: int = 2_000, lo: int = 1_024, hi: int = 16_384) -> list[int]:
    """Element counts of the many-small-tensors workload, drawn from `generator`."""
    return torch.randint(lo, hi + 1, (count,), generator=generator).tolist()


def nbytes(tensors: list[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def parameters_with_grads(tensors: list[torch.Tensor]) -> tuple[list[torch.nn.Parameter], list[torch.Tensor]]:
    """Parameters whose .grad are copies of `tensors`, and those grads."""
    grads = [t.clone() for t in tensors]
    # Clipping never reads parameter values, so they share the given tensors' storage.
    params = [torch.nn.Parameter(t) for t in tensors]
    for p, g in zip(params, grads):
        p.grad = g
    return params, grads


@dataclass(frozen=True)
class Comparison:
    """totalnorm against torch on one workload: both timings and the bytes the op must move."""

    traffic: int
    totalnorm: Timing
    torch: Timing

    @property
    def speedup(self) -> float:
        return self.torch.median / self.totalnorm.median

    @property
    def gbps(self) -> float:
        return self.traffic / self.totalnorm.median / 1e9

    @property
    def torch_gbps(self) -> float:
        return self.traffic / self.torch.median / 1e9


@dataclass(frozen=True)
class Target:
    """A goal: a minimum speedup over torch and/or a minimum fraction of the machine's limit."""

    min_speedup: float | None = None
    min_fraction: float | None = None
    limit: str = "limit"  # what the fraction is of, as the tables name it

    def describe(self) -> str:
        parts = []
        if self.min_speedup is not None:
            parts.append(f">= {self.min_speedup:g}x torch")
        if self.min_fraction is not None:
            parts.append(f">= {self.min_fraction:g} of {self.limit}")
        return " and ".join(parts) or "-"

    def met(self, speedup: float, fraction: float | None) -> bool | None:
        if self.min_speedup is None and self.min_fraction is None:
            return None
        return (self.min_speedup is None or speedup >= self.min_speedup) and (
            self.min_fraction is None or (fraction is not None and fraction >= self.min_fraction)
        )


def met_cell(met: bool | None) -> str:
    return "-" if met is None else ("met" if met else "**not met**")


def float64_cost_line(title: str, tensors: list[torch.Tensor], budget_s: float, **timing) -> str:
    """p=inf widens to float64 too but takes a max instead of float64 adds: the gap to p=2
    is what those adds cost. `timing`: time_interleaved's setup and clock."""
    import totalnorm

    t = time_interleaved(
        {
            "p=2": lambda: totalnorm.total_norm(tensors, 2.0),
            "p=inf": lambda: totalnorm.total_norm(tensors, float("inf")),
        },
        budget_s,
        **timing,
    )
    two, inf = t["p=2"].median, t["p=inf"].median
    return (
        f"float64 accumulation, {title}: totalnorm p=2 {two * 1e3:.2f} ms vs p=inf"
        f" {inf * 1e3:.2f} ms (a max, no float64 adds): p=2 costs {100 * (two / inf - 1):+.1f}%."
    )


def markdown_table(header: list[str], rows: list[list[object]], align: str | None = None) -> str:
    """`align`: one letter a column, l or r (default: all left)."""
    rule = {"l": "---|", "r": "---:|"}
    lines = ["| " + " | ".join(header) + " |", "|" + "".join(rule[a] for a in (align or "l" * len(header)))]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def add_write_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--write",
        nargs="?",
        const=RESULTS,
        type=Path,
        metavar="RESULTS.md",
        help=f"replace this script's section of the results file (default {RESULTS.relative_to(HERE.parent)})"
        f" and redraw {PLOT_NAME} beside it",
    )


def publish(text: str, write: Path | None, heading_prefix: str | None = None) -> None:
    """Prints a script's section and, when --write named a results file, writes it there."""
    print(text)
    if write is not None:
        write_section(text, write, heading_prefix)


def write_section(text: str, path: Path = RESULTS, heading_prefix: str | None = None) -> None:
    """Replaces the first section whose `## ` heading starts with `heading_prefix` (default:
    the text's own heading, its first line), or appends the text; then redraws the plot."""
    prefix = heading_prefix or text.splitlines()[0]
    old = path.read_text() if path.exists() else "# Benchmark results\n"
    pattern = re.compile(rf"^{re.escape(prefix)}[^\n]*\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    if pattern.search(old):
        new = pattern.sub(lambda _: text.rstrip("\n") + "\n\n", old, count=1).rstrip("\n") + "\n"
    else:
        new = old.rstrip("\n") + "\n\n" + text.rstrip("\n") + "\n"
    path.write_text(new)
    print(f"updated {path}")
    png = path.parent / PLOT_NAME
    print(f"wrote {png}" if plot_results(path, png) else "matplotlib not available: no plot")


# --- the plot of RESULTS.md -------------------------------------------------------------


def _tables(section: str) -> list[tuple[list[str], list[list[str]]]]:
    """The Markdown tables of a section: (header, rows) each."""
    tables: list[tuple[list[str], list[list[str]]]] = []
    current: tuple[list[str], list[list[str]]] | None = None
    for line in section.splitlines() + [""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if current is None:
                current = (cells, [])
            elif not all(set(c) <= set("-:") for c in cells):
                current[1].append(cells)
        elif current is not None:
            tables.append(current)
            current = None
    return tables


def _number(cell: str) -> float | None:
    match = re.match(r"[0-9][0-9,]*\.?[0-9]*", cell)
    return float(match.group(0).replace(",", "")) if match else None


def _bandwidths(header: list[str], rows: list[list[str]]) -> tuple[list[str], dict[str, list[float]]]:
    """Workload labels and every GB/s series of one table. A limit given only as a
    fraction ("of copy BW": totalnorm GB/s over the limit) is turned back into GB/s."""
    col = {name: i for i, name in enumerate(header)}
    if "workload" not in col or "totalnorm GB/s" not in col:
        return [], {}
    series = {name: [_number(r[i]) for r in rows] for name, i in col.items() if name.endswith(" GB/s")}
    for name, i in col.items():
        limit = name[len("of ") :] + " GB/s"
        if name.startswith("of ") and limit not in series:
            fractions = [_number(r[i]) for r in rows]
            series[limit + " (from the ratio)"] = [
                g / f if g is not None and f else None for g, f in zip(series["totalnorm GB/s"], fractions)
            ]
    # Rows with totalnorm's rate and something to set it against.
    keep = [k for k in range(len(rows)) if sum(v[k] is not None for v in series.values()) >= 2
            and series["totalnorm GB/s"][k] is not None]
    op = col.get("op")
    labels = [rows[k][col["workload"]] + (f" {rows[k][op]}" if op is not None else "") for k in keep]
    return labels, {name: [values[k] or 0.0 for k in keep] for name, values in series.items()}


def results_series(path: Path = RESULTS) -> list[tuple[str, list[str], dict[str, list[float]]]]:
    """(heading, labels, GB/s series) of each section of the results file that has a
    bandwidth table: its table with the most GB/s series."""
    found = []
    for section in re.split(r"^(?=## )", path.read_text(), flags=re.MULTILINE):
        if not section.startswith("## "):
            continue
        best = max((_bandwidths(*t) for t in _tables(section)), key=lambda b: len(b[1]), default=([], {}))
        if len(best[1]) >= 2 and best[0]:
            found.append((section.splitlines()[0][3:], *best))
    return found


def plot_results(path: Path = RESULTS, png: Path = HERE / PLOT_NAME) -> bool:
    """Achieved GB/s beside the machine's limits, one panel per section of the results
    file that has them; False when matplotlib is missing or there is nothing to plot."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    panels = results_series(path)
    if not panels:
        return False
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 4.2 * len(panels)), squeeze=False)
    for ax, (heading, labels, series) in zip(axes[:, 0], panels):
        width = 0.8 / len(series)
        for i, (name, values) in enumerate(series.items()):
            ax.bar([x + i * width for x in range(len(labels))], values, width, label=name.replace(" GB/s", "").lstrip("_"))
        ax.set_xticks(
            [x + 0.4 - width / 2 for x in range(len(labels))], [textwrap.fill(s, 22) for s in labels], fontsize=8
        )
        ax.set_ylabel("GB/s")
        ax.set_title(textwrap.shorten(heading.replace("`", ""), 90), fontsize=9)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle(f"totalnorm: achieved bandwidth against the machine's limits ({path.name})", fontsize=10)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return True


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="?", type=Path, default=RESULTS)
    args = parser.parse_args()
    png = args.results.parent / PLOT_NAME
    print(f"wrote {png}" if plot_results(args.results, png) else "nothing plotted (no matplotlib or no tables)")
