"""CPU benchmark: totalnorm.total_norm / clip_grad_norm_ against torch.nn.utils, with a
roofline measured in the same run.

    python3 benchmarks/bench_cpu.py [--write benchmarks/RESULTS.md] [--plot PATH] [--budget S]

Prints Markdown tables; --write (or --out) replaces this machine's section of the
results file (or appends it). The roofline has two measures for each workload's byte
count: the issue's proxy, torch.sum over one flat float32 buffer, and our own
all-threads read loop (read_bandwidth.cpp, compiled here with g++; n/a without one).
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import totalnorm

HERE = Path(__file__).resolve().parent
SEED = 0
TOTAL_ELEMENTS_LARGE = 100_000_000
LARGE_TENSORS = 200
SMALL_TENSORS = 2_000
SMALL_MIN, SMALL_MAX = 1_024, 16_384
MIN_ROUNDS, MAX_ROUNDS = 11, 301
READ_LOOP_BYTES_PER_RUN = 8e9  # enough repeats for a stable median at any size


@dataclass(frozen=True)
class Target:
    """A goal from the issue: a minimum speedup over torch and/or fraction of the proxy rate."""

    min_speedup: float | None = None
    min_proxy_fraction: float | None = None

    def describe(self) -> str:
        parts = []
        if self.min_speedup is not None:
            parts.append(f">= {self.min_speedup:g}x torch")
        if self.min_proxy_fraction is not None:
            parts.append(f">= {self.min_proxy_fraction:g} of proxy")
        return " and ".join(parts) or "-"

    def met(self, speedup: float, proxy_fraction: float) -> bool | None:
        if self.min_speedup is None and self.min_proxy_fraction is None:
            return None
        return (self.min_speedup is None or speedup >= self.min_speedup) and (
            self.min_proxy_fraction is None or proxy_fraction >= self.min_proxy_fraction
        )


@dataclass
class Workload:
    title: str
    tensors: list[torch.Tensor]
    norm_target: Target
    clip_target: Target | None  # None: no clipping row for this workload

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors)


@dataclass
class Timing:
    median: float
    minimum: float


@dataclass
class Row:
    workload: Workload
    op: str
    traffic: int  # bytes the op must move at least: its effective-bandwidth numerator
    totalnorm: Timing
    torch: Timing
    target: Target
    proxy_gbps: float
    read_loop_gbps: float | None

    @property
    def speedup(self) -> float:
        return self.torch.median / self.totalnorm.median

    @property
    def gbps(self) -> float:
        return self.traffic / self.totalnorm.median / 1e9

    @property
    def proxy_fraction(self) -> float:
        return self.gbps / self.proxy_gbps


def make_workloads() -> list[Workload]:
    gen = torch.Generator().manual_seed(SEED)
    sizes = torch.randint(SMALL_MIN, SMALL_MAX + 1, (SMALL_TENSORS,), generator=gen).tolist()
    small = [torch.randn(n, generator=gen) for n in sizes]
    per_tensor = TOTAL_ELEMENTS_LARGE // LARGE_TENSORS
    large = [torch.randn(per_tensor, generator=gen) for _ in range(LARGE_TENSORS)]
    return [
        Workload(f"(a) {SMALL_TENSORS:,} x 1K-16K fp32", small, Target(min_speedup=5), Target(min_speedup=2)),
        Workload(
            f"(b) {LARGE_TENSORS} x {per_tensor // 1000}K fp32",
            large,
            Target(min_speedup=2, min_proxy_fraction=0.9),
            Target(),
        ),
        Workload(
            f"(c) {LARGE_TENSORS} x {per_tensor // 1000}K bf16", [t.bfloat16() for t in large], Target(), None
        ),
    ]


def time_interleaved(
    fns: dict[str, Callable[[], object]], budget_s: float, setup: Callable[[], None] = lambda: None
) -> dict[str, Timing]:
    """Median and min of each fn, called in turn each round so machine drift hits all alike;
    `setup` runs untimed before every call."""
    warm_round = 0.0
    for fn in fns.values():
        for _ in range(2):
            setup()
            start = time.perf_counter()
            fn()
            warm_round += (time.perf_counter() - start) / 2
    rounds = max(MIN_ROUNDS, min(MAX_ROUNDS, int(budget_s / max(warm_round, 1e-9))))
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            setup()
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return {name: Timing(statistics.median(s), min(s)) for name, s in samples.items()}


def compile_read_loop(workdir: Path) -> Path | None:
    """Builds read_bandwidth.cpp; None when there is no working g++."""
    compiler = shutil.which("g++")
    if compiler is None:
        return None
    binary = workdir / "read_bandwidth"
    cmd = [
        compiler,
        "-O3",
        "-march=native",
        "-std=c++20",
        "-pthread",
        str(HERE / "read_bandwidth.cpp"),
        "-o",
        str(binary),
    ]
    if subprocess.run(cmd, capture_output=True, check=False).returncode != 0:
        return None
    return binary


def read_loop_gbps(binary: Path | None, nbytes: int) -> float | None:
    if binary is None:
        return None
    repeats = max(MIN_ROUNDS, min(MAX_ROUNDS, int(READ_LOOP_BYTES_PER_RUN / nbytes)))
    out = subprocess.run(
        [str(binary), str(nbytes), str(torch.get_num_threads()), str(repeats)],
        capture_output=True,
        text=True,
        check=False,
    )
    match = re.search(r"^median_gbps ([0-9.]+)$", out.stdout, re.MULTILINE)
    return float(match.group(1)) if out.returncode == 0 and match else None


def bench_norm(w: Workload, budget_s: float, binary: Path | None) -> Row:
    # The proxy reads one flat float32 buffer of the workload's byte count.
    flat = torch.ones(w.nbytes // 4)
    # A sanity check only: torch accumulates in the input dtype, so it is a few ulps off.
    torch.testing.assert_close(
        totalnorm.total_norm(w.tensors), torch.nn.utils.get_total_norm(w.tensors), rtol=1e-2, atol=0
    )
    t = time_interleaved(
        {
            "totalnorm": lambda: totalnorm.total_norm(w.tensors),
            "torch": lambda: torch.nn.utils.get_total_norm(w.tensors),
            "proxy": lambda: torch.sum(flat),
        },
        budget_s,
    )
    return Row(
        w,
        "total_norm",
        w.nbytes,
        t["totalnorm"],
        t["torch"],
        w.norm_target,
        w.nbytes / t["proxy"].median / 1e9,
        read_loop_gbps(binary, w.nbytes),
    )


def parameters_with_grads(
    tensors: list[torch.Tensor],
) -> tuple[list[torch.nn.Parameter], list[torch.Tensor]]:
    """Parameters whose .grad are copies of `tensors`, and those grads."""
    grads = [t.clone() for t in tensors]
    # Clipping never reads parameter values, so they share the saved tensors' storage.
    params = [torch.nn.Parameter(t) for t in tensors]
    for p, g in zip(params, grads):
        p.grad = g
    return params, grads


def bench_clip(w: Workload, norm_row: Row, budget_s: float) -> Row:
    assert w.clip_target is not None
    mine, my_grads = parameters_with_grads(w.tensors)
    theirs, their_grads = parameters_with_grads(w.tensors)
    # Half the true norm: every call really scales, by exactly 0.5.
    max_norm = float(torch.nn.utils.get_total_norm(w.tensors)) / 2

    # Grads are refilled from the workload (untimed) before every call: each call sees
    # the same values, and repeated halving never walks them into denormals.
    def refill() -> None:
        for g, t in zip(my_grads + their_grads, w.tensors * 2):
            g.copy_(t)

    t = time_interleaved(
        {
            "totalnorm": lambda: totalnorm.clip_grad_norm_(mine, max_norm),
            "torch": lambda: torch.nn.utils.clip_grad_norm_(theirs, max_norm),
        },
        budget_s,
        setup=refill,
    )
    # Read for the norm, then read and write to scale: three passes over the bytes.
    return Row(
        w,
        "clip_grad_norm_",
        3 * w.nbytes,
        t["totalnorm"],
        t["torch"],
        w.clip_target,
        norm_row.proxy_gbps,
        norm_row.read_loop_gbps,
    )


def bench_inf_vs_two(w: Workload, budget_s: float) -> dict[str, Timing]:
    """p=inf widens to float64 too but takes a max instead of float64 adds: the gap to p=2
    is what those adds cost."""
    return time_interleaved(
        {
            "p=2": lambda: totalnorm.total_norm(w.tensors, 2.0),
            "p=inf": lambda: totalnorm.total_norm(w.tensors, float("inf")),
        },
        budget_s,
    )


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def machine_label() -> str:
    return f"{cpu_model()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"


def l3_cache() -> str:
    """L3 size: warm inputs smaller than this are read partly from cache, not DRAM."""
    path = Path("/sys/devices/system/cpu/cpu0/cache/index3/size")
    if not path.exists():
        return "unknown"
    size = path.read_text().strip()
    return f"{int(size[:-1]) // 1024} MiB" if size.endswith("K") else size


def fmt_ms(t: Timing) -> str:
    return f"{t.median * 1e3:.2f} ({t.minimum * 1e3:.2f})"


def fmt_fraction(num: float, den: float | None) -> str:
    return "n/a" if den is None else f"{num / den:.2f}"


def fmt_met(met: bool | None) -> str:
    return "-" if met is None else ("met" if met else "**not met**")


def results_table(rows: list[Row], machine: str) -> str:
    lines = [
        (
            "| machine | workload | op | totalnorm ms | torch ms | speedup | totalnorm GB/s"
            " | of proxy | of read loop | target | met |"
        ),
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {machine} | {r.workload.title} | {r.op} | {fmt_ms(r.totalnorm)} | {fmt_ms(r.torch)}"
            f" | {r.speedup:.2f}x | {r.gbps:.1f} | {r.proxy_fraction:.2f}"
            f" | {fmt_fraction(r.gbps, r.read_loop_gbps)} | {r.target.describe()}"
            f" | {fmt_met(r.target.met(r.speedup, r.proxy_fraction))} |"
        )
    return "\n".join(lines)


def roofline_table(rows: list[Row], machine: str) -> str:
    lines = [
        "| machine | workload | MB | totalnorm GB/s | torch GB/s | torch.sum proxy GB/s | read loop GB/s |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        read = "n/a" if r.read_loop_gbps is None else f"{r.read_loop_gbps:.1f}"
        lines.append(
            f"| {machine} | {r.workload.title} | {r.workload.nbytes / 1e6:.0f} | {r.gbps:.1f}"
            f" | {r.traffic / r.torch.median / 1e9:.1f} | {r.proxy_gbps:.1f} | {read} |"
        )
    return "\n".join(lines)


def float64_line(w: Workload, t: dict[str, Timing]) -> str:
    two, inf = t["p=2"].median, t["p=inf"].median
    return (
        f"float64 accumulation, {w.title}: totalnorm p=2 {two * 1e3:.2f} ms vs p=inf"
        f" {inf * 1e3:.2f} ms (a max, no float64 adds): p=2 costs {100 * (two / inf - 1):+.1f}%."
    )


LEGEND = (
    "GB/s: bytes the op must move / median time (total_norm reads the inputs once;"
    " clip_grad_norm_ moves 3x: read for the norm, read + write to scale)."
    " Proxy: torch.sum over one flat float32 buffer of the same bytes; read loop:"
    " read_bandwidth.cpp with all torch threads."
)


def section(rows: list[Row], norm_rows: list[Row], inf_line: str) -> str:
    machine = machine_label()
    about = (
        f"{cpu_model()}; {os.cpu_count()} cores; torch.get_num_threads() = {torch.get_num_threads()};"
        f" L3 {l3_cache()}; torch {torch.__version__}; {datetime.date.today().isoformat()}."
        " Times: median (min) in ms over interleaved rounds."
    )
    parts = [
        f"## CPU: {machine}",
        about,
        results_table(rows, machine),
        LEGEND,
        roofline_table(norm_rows, machine),
        inf_line,
    ]
    return "\n\n".join(parts) + "\n"


def write_section(path: Path, text: str) -> None:
    """Replaces the section with the same heading, or appends one."""
    heading = text.splitlines()[0]
    old = path.read_text() if path.exists() else "# Benchmark results\n"
    pattern = re.compile(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    if pattern.search(old):
        new = pattern.sub(lambda _: text + "\n", old, count=1).rstrip("\n") + "\n"
    else:
        new = old.rstrip("\n") + "\n\n" + text
    path.write_text(new)


def plot(rows: list[Row], path: Path) -> bool:
    """Effective GB/s per workload; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    series = {
        "totalnorm": [r.gbps for r in rows],
        "torch get_total_norm": [r.traffic / r.torch.median / 1e9 for r in rows],
        "torch.sum proxy": [r.proxy_gbps for r in rows],
        "read loop": [r.read_loop_gbps or 0.0 for r in rows],
    }
    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.8 / len(series)
    for i, (name, values) in enumerate(series.items()):
        ax.bar([x + i * width for x in range(len(rows))], values, width, label=name)
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(rows))], [r.workload.title for r in rows])
    ax.set_ylabel("effective GB/s")
    ax.set_title(f"total_norm on {machine_label()}", fontsize=10)
    # Below the axes, so no bar is hidden.
    fig.legend(loc="lower center", ncol=len(series), fontsize=8)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--write", "--out", type=Path, help="results file whose section for this machine is updated"
    )
    parser.add_argument(
        "--plot", type=Path, default=HERE / "cpu_bench.png", help="PNG path (needs matplotlib)"
    )
    parser.add_argument("--budget", type=float, default=4.0, help="seconds of timed rounds per measurement")
    args = parser.parse_args()

    workloads = make_workloads()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        binary = compile_read_loop(Path(tmp))
        for w in workloads:
            rows.append(bench_norm(w, args.budget, binary))
            if w.clip_target is not None:
                rows.append(bench_clip(w, rows[-1], args.budget))
    inf_line = float64_line(workloads[1], bench_inf_vs_two(workloads[1], args.budget))
    norm_rows = [r for r in rows if r.op == "total_norm"]

    text = section(rows, norm_rows, inf_line)
    print(text)
    if args.write:
        write_section(args.write, text)
        print(f"updated {args.write}")
    if plot(norm_rows, args.plot):
        print(f"wrote {args.plot}")
    else:
        print("matplotlib not available: no plot")


if __name__ == "__main__":
    main()
