"""Per-tensor norms: totalnorm's per_tensor=True against its total-only call and against
torch's two passes (torch._foreach_norm for the per-tensor norms, then
torch.nn.utils.get_total_norm for the total).

    python3 benchmarks/bench_per_tensor.py [--device cpu|cuda] [--write [benchmarks/RESULTS.md]] [--budget S]

Targets (issue "per-tensor norms"): per_tensor=True costs at most 5% more than the
total-only call on big lists (CPU: 100M fp32; GPU: the 1.1B workload of bench_gpu.py),
and at most 1.5x on 3,000 tiny tensors. Times are medians (minimum) over interleaved
rounds: wall time per call on the CPU; on a GPU, device time between CUDA events for the
big list and wall time per call (host work included) for the tiny ones.
"""
from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

import torch

import totalnorm

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import toolkit  # noqa: E402


def torch_two_passes(tensors):
    per = torch._foreach_norm(tensors, 2.0)
    return per, torch.nn.utils.get_total_norm(tensors, 2.0)


def workloads(device: str) -> list[tuple[str, list[torch.Tensor], float | None, str]]:
    """(title, tensors, max ratio per_tensor / total-only or None, clock kind)."""
    gen = torch.Generator().manual_seed(0)
    if device == "cuda":
        from bench_gpu import make, transformer_shapes  # the same 1.1B workload as bench_gpu.py

        big_title = "1.1B fp32, transformer shapes"
        big = make(transformer_shapes(), torch.float32, device)
    else:
        big_title = "100M fp32 in 200 tensors"
        big = [torch.randn(500_000, generator=gen) for _ in range(200)]
    tiny = [torch.randn(int(n), generator=gen).to(device) for n in torch.randint(1, 65, (3_000,), generator=gen)]
    mid = [torch.randn(n, generator=gen).to(device) for n in toolkit.small_tensor_sizes(gen)]
    return [
        (big_title, big, 1.05, "device"),
        (f"{len(mid):,} x 1K-16K fp32", mid, None, "wall"),
        ("3,000 tiny fp32 (1-64 elements)", tiny, 1.5, "wall"),
    ]


def measure(device: str, budget_s: float) -> str:
    rows = []
    for title, tensors, max_ratio, kind in workloads(device):
        if device == "cuda":
            clock = toolkit.cuda_event_clock() if kind == "device" else toolkit.cuda_wall_clock()
        else:
            clock = toolkit.wall_clock
        t = toolkit.time_interleaved(
            {
                "total": lambda: totalnorm.total_norm(tensors, 2.0),
                "per": lambda: totalnorm.total_norm(tensors, 2.0, per_tensor=True),
                "torch": lambda: torch_two_passes(tensors),
            },
            budget_s,
            clock=clock,
        )
        ratio = t["per"].median / t["total"].median
        speedup = t["torch"].median / t["per"].median
        met = None if max_ratio is None else ratio <= max_ratio
        rows.append([
            title, f"{len(tensors):,}", f"{toolkit.nbytes(tensors) / 1e9:.3f}", t["total"].ms(), t["per"].ms(),
            f"{ratio:.3f}", t["torch"].ms(), f"{speedup:.2f}x",
            "-" if max_ratio is None else f"<= {max_ratio:g}x total-only", toolkit.met_cell(met),
        ])
    label = toolkit.gpu_label() if device == "cuda" else toolkit.cpu_label()
    header = ["workload", "tensors", "GB", "total-only ms", "per_tensor ms", "per / total", "torch 2 passes ms",
              "speedup vs torch", "target", "met"]
    return "\n".join([
        f"## Per-tensor norms ({device}): {label}",
        "",
        f"{label}; torch {torch.__version__}; {datetime.date.today()}. Times: median (min) in ms over "
        "interleaved rounds; p = 2. torch 2 passes: torch._foreach_norm, then "
        "torch.nn.utils.get_total_norm over the same tensors.",
        "",
        toolkit.markdown_table(header, rows, "lrrrrrrrll"),
        "",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--budget", type=float, default=3.0, help="seconds of timed rounds per workload")
    toolkit.add_write_argument(parser)
    args = parser.parse_args()
    text = measure(args.device, args.budget)
    toolkit.publish(text, args.write, f"## Per-tensor norms ({args.device})")


if __name__ == "__main__":
    main()
