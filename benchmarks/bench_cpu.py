"""CPU benchmark: totalnorm.total_norm / clip_grad_norm_ against torch.nn.utils, with a
roofline measured in the same run.

    python3 benchmarks/bench_cpu.py [--write [benchmarks/RESULTS.md]] [--budget S]

Prints Markdown tables; --write replaces this machine's section of the results file
(or appends it) and redraws results.png (toolkit.py). The roofline has two measures
for each workload's byte count: the proxy of docs/semantics.md ("Performance
targets"), torch.sum over one flat float32 buffer, and our own all-threads read loop
(read_bandwidth.cpp, compiled here with g++; n/a without one).
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import totalnorm

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import toolkit  # noqa: E402
from toolkit import Target  # noqa: E402

SEED = 0
TOTAL_ELEMENTS_LARGE = 100_000_000
LARGE_TENSORS = 200
READ_LOOP_BYTES_PER_RUN = 8e9  # enough repeats for a stable median at any size


@dataclass
class Workload:
    title: str
    tensors: list[torch.Tensor]
    norm_target: Target
    clip_target: Target | None  # None: no clipping row for this workload

    @property
    def nbytes(self) -> int:
        return toolkit.nbytes(self.tensors)


@dataclass(frozen=True)
class Row(toolkit.Comparison):
    """traffic: bytes the op must move at least, its effective-bandwidth numerator."""

    workload: Workload
    op: str
    target: Target
    proxy_gbps: float
    read_loop_gbps: float | None

    @property
    def proxy_fraction(self) -> float:
        return self.gbps / self.proxy_gbps


def make_workloads() -> list[Workload]:
    gen = torch.Generator().manual_seed(SEED)
    small = [torch.randn(n, generator=gen) for n in toolkit.small_tensor_sizes(gen)]
    per_tensor = TOTAL_ELEMENTS_LARGE // LARGE_TENSORS
    large = [torch.randn(per_tensor, generator=gen) for _ in range(LARGE_TENSORS)]
    return [
        Workload(f"(a) {len(small):,} x 1K-16K fp32", small, Target(min_speedup=5), Target(min_speedup=2)),
        Workload(
            f"(b) {LARGE_TENSORS} x {per_tensor // 1000}K fp32",
            large,
            Target(min_speedup=2, min_fraction=0.9, limit="proxy"),
            Target(),
        ),
        Workload(
            f"(c) {LARGE_TENSORS} x {per_tensor // 1000}K bf16", [t.bfloat16() for t in large], Target(), None
        ),
    ]


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
    repeats = max(toolkit.MIN_ROUNDS, min(toolkit.MAX_ROUNDS, int(READ_LOOP_BYTES_PER_RUN / nbytes)))
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
    t = toolkit.time_interleaved(
        {
            "totalnorm": lambda: totalnorm.total_norm(w.tensors),
            "torch": lambda: torch.nn.utils.get_total_norm(w.tensors),
            "proxy": lambda: torch.sum(flat),
        },
        budget_s,
    )
    return Row(
        traffic=w.nbytes,
        totalnorm=t["totalnorm"],
        torch=t["torch"],
        workload=w,
        op="total_norm",
        target=w.norm_target,
        proxy_gbps=w.nbytes / t["proxy"].median / 1e9,
        read_loop_gbps=read_loop_gbps(binary, w.nbytes),
    )


def bench_clip(w: Workload, norm_row: Row, budget_s: float) -> Row:
    assert w.clip_target is not None
    mine, my_grads = toolkit.parameters_with_grads(w.tensors)
    theirs, their_grads = toolkit.parameters_with_grads(w.tensors)
    # Half the true norm: every call really scales, by exactly 0.5.
    max_norm = float(torch.nn.utils.get_total_norm(w.tensors)) / 2

    # Grads are refilled from the workload (untimed) before every call: each call sees
    # the same values, and repeated halving never walks them into denormals.
    def refill() -> None:
        for g, t in zip(my_grads + their_grads, w.tensors * 2):
            g.copy_(t)

    t = toolkit.time_interleaved(
        {
            "totalnorm": lambda: totalnorm.clip_grad_norm_(mine, max_norm),
            "torch": lambda: torch.nn.utils.clip_grad_norm_(theirs, max_norm),
        },
        budget_s,
        setup=refill,
    )
    # Read for the norm, then read and write to scale: three passes over the bytes.
    return Row(
        traffic=3 * w.nbytes,
        totalnorm=t["totalnorm"],
        torch=t["torch"],
        workload=w,
        op="clip_grad_norm_",
        target=w.clip_target,
        proxy_gbps=norm_row.proxy_gbps,
        read_loop_gbps=norm_row.read_loop_gbps,
    )


def mid_sized_list() -> list[torch.Tensor]:
    """3,000 float32 tensors of 256-20,000 elements (121 MB), allocated one after another."""
    gen = torch.Generator().manual_seed(SEED + 1)
    return [torch.randn(int(n), generator=gen) for n in torch.randint(256, 20_001, (3_000,), generator=gen)]


def list_vs_flat_line(title: str, tensors: list[torch.Tensor], budget_s: float) -> str:
    """The list against one tensor of its element count, both through totalnorm: what a
    list costs over its bytes (per-tensor work, Python-to-op conversion, memory layout).
    Target: >= 0.9 of the flat tensor's rate."""
    flat = [torch.cat([t.reshape(-1) for t in tensors])]
    t = toolkit.time_interleaved(
        {"list": lambda: totalnorm.total_norm(tensors), "flat": lambda: totalnorm.total_norm(flat)},
        budget_s,
    )
    ratio = t["flat"].median / t["list"].median
    return (
        f"{title}: list {t['list'].median * 1e3:.2f} ms vs one flat tensor of the same elements"
        f" {t['flat'].median * 1e3:.2f} ms: the list reads at {ratio:.2f} of the flat rate (target >= 0.9:"
        f" {'met' if ratio >= 0.9 else 'not met'})."
    )


def l3_cache() -> str:
    """L3 size: warm inputs smaller than this are read partly from cache, not DRAM."""
    path = Path("/sys/devices/system/cpu/cpu0/cache/index3/size")
    if not path.exists():
        return "unknown"
    size = path.read_text().strip()
    return f"{int(size[:-1]) // 1024} MiB" if size.endswith("K") else size


def fmt_fraction(num: float, den: float | None) -> str:
    return "n/a" if den is None else f"{num / den:.2f}"


def results_table(rows: list[Row], machine: str) -> str:
    header = ["machine", "workload", "op", "totalnorm ms", "torch ms", "speedup", "totalnorm GB/s", "of proxy",
              "of read loop", "target", "met"]
    cells = [
        [machine, r.workload.title, r.op, r.totalnorm.ms(), r.torch.ms(), f"{r.speedup:.2f}x", f"{r.gbps:.1f}",
         f"{r.proxy_fraction:.2f}", fmt_fraction(r.gbps, r.read_loop_gbps), r.target.describe(),
         toolkit.met_cell(r.target.met(r.speedup, r.proxy_fraction))]
        for r in rows
    ]
    return toolkit.markdown_table(header, cells, align="lllrrrrrrll")


def roofline_table(rows: list[Row], machine: str) -> str:
    header = ["machine", "workload", "MB", "totalnorm GB/s", "torch GB/s", "torch.sum proxy GB/s", "read loop GB/s"]
    cells = [
        [machine, r.workload.title, f"{r.workload.nbytes / 1e6:.0f}", f"{r.gbps:.1f}", f"{r.torch_gbps:.1f}",
         f"{r.proxy_gbps:.1f}", "n/a" if r.read_loop_gbps is None else f"{r.read_loop_gbps:.1f}"]
        for r in rows
    ]
    return toolkit.markdown_table(header, cells, align="llrrrrr")


LEGEND = (
    "GB/s: bytes the op must move / median time (total_norm reads the inputs once;"
    " clip_grad_norm_ moves 3x: read for the norm, read + write to scale)."
    " Proxy: torch.sum over one flat float32 buffer of the same bytes; read loop:"
    " read_bandwidth.cpp with all torch threads."
)


def section(rows: list[Row], norm_rows: list[Row], inf_line: str, flat_lines: list[str]) -> str:
    machine = toolkit.cpu_label()
    about = (
        f"{toolkit.cpu_model()}; {os.cpu_count()} cores; torch.get_num_threads() = {torch.get_num_threads()};"
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
        "\n".join(f"- {line}" for line in flat_lines),
    ]
    return "\n\n".join(parts) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    toolkit.add_write_argument(parser)
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
    inf_line = toolkit.float64_cost_line(workloads[1].title, workloads[1].tensors, args.budget)
    norm_rows = [r for r in rows if r.op == "total_norm"]

    flat_lines = [
        list_vs_flat_line(workloads[0].title, workloads[0].tensors, args.budget),
        list_vs_flat_line("(d) 3,000 x 256-20K fp32", mid_sized_list(), args.budget),
    ]
    toolkit.publish(section(rows, norm_rows, inf_line, flat_lines), args.write)


if __name__ == "__main__":
    main()
