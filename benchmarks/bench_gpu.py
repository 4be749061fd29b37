"""GPU benchmark: totalnorm vs torch.nn.utils.get_total_norm / clip_grad_norm_.

Workloads (issue 3):
  (a) ~1.1B float32 elements in ~320 tensors shaped like a 1B-parameter transformer
  (b) the same in bfloat16
  (c) 2,000 tensors of 1K-16K float32 elements
  (d) (c) inside a captured CUDA graph (replay time)
plus the roofline measured in the same run: a device-to-device copy of a large
buffer, counting bytes read plus bytes written.

Prints a Markdown table (last) and, with --out, writes it to a file.
"""
from __future__ import annotations

import argparse
import datetime
import statistics
import time
from typing import Callable

import torch

import totalnorm


def transformer_shapes(d: int = 2048, layers: int = 20, vocab: int = 32000, mlp: int = 5632) -> list[tuple[int, ...]]:
    """Parameter shapes of a Llama-style model of about 1.1B parameters (with biases)."""
    shapes: list[tuple[int, ...]] = [(vocab, d)]
    for _ in range(layers):
        shapes += [(d, d), (d,)] * 4  # q, k, v, o projections and biases
        shapes += [(mlp, d), (mlp,), (mlp, d), (mlp,), (d, mlp), (d,)]
        shapes += [(d,), (d,)]  # two norms
    shapes.append((d,))
    return shapes


def small_shapes(n: int = 2000, seed: int = 0) -> list[tuple[int, ...]]:
    g = torch.Generator().manual_seed(seed)
    return [(int(k),) for k in torch.randint(1024, 16 * 1024 + 1, (n,), generator=g)]


def make(shapes: list[tuple[int, ...]], dtype: torch.dtype) -> list[torch.Tensor]:
    return [torch.randn(s, device="cuda", dtype=dtype) for s in shapes]


def nbytes(tensors: list[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def device_time_ms(fn: Callable[[], object], calls: int = 10, rounds: int = 7) -> float:
    """Median over rounds of CUDA-event time per call, `calls` calls enqueued back
    to back so that one call's host work overlaps the previous call's kernels
    (a single timed call would also count the GPU idling while the host launches)."""
    fn()
    torch.cuda.synchronize()
    per_call = []
    for _ in range(rounds):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        end.synchronize()
        per_call.append(start.elapsed_time(end) / calls)
    return statistics.median(per_call)


def wall_time_ms(fn: Callable[[], object], calls: int = 50, rounds: int = 7) -> float:
    """Median over rounds of (wall time of `calls` back-to-back calls + sync) / calls."""
    fn()
    torch.cuda.synchronize()
    per_call = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
        per_call.append((time.perf_counter() - t0) * 1e3 / calls)
    return statistics.median(per_call)


def copy_bandwidth_gbs(total_bytes: int = 4 << 30) -> float:
    src = torch.empty(total_bytes // 4, dtype=torch.float32, device="cuda").uniform_()
    dst = torch.empty_like(src)
    ms = device_time_ms(lambda: dst.copy_(src))
    return 2 * total_bytes / ms / 1e6


def with_grads(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Parameters whose .grad are copies of `tensors` (max_norm 1e9 scales them by 1, so repeats don't drift)."""
    params = [t.detach().requires_grad_() for t in tensors]
    for p, t in zip(params, tensors):
        p.grad = t.clone()
    return params


def graph_of(fn: Callable[[], torch.Tensor]) -> Callable[[], None]:
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


def reference(tensors: list[torch.Tensor]) -> float:
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t.double()) for t in tensors])).item()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", help="also write the table to this file")
    args = parser.parse_args()

    props = torch.cuda.get_device_properties(0)
    copy_gbs = copy_bandwidth_gbs()
    rows: list[list[str]] = []

    def row(name: str, tensors: list[torch.Tensor], ours_ms: float, torch_ms: float, foreach_ms: float | None,
            target: str, met: bool, bandwidth: bool) -> None:
        gbs = nbytes(tensors) / ours_ms / 1e6
        rows.append([
            props.name, name, f"{len(tensors)}", f"{nbytes(tensors) / 1e9:.3f}", f"{ours_ms:.3f}", f"{torch_ms:.3f}",
            "-" if foreach_ms is None else f"{foreach_ms:.3f}", f"{torch_ms / ours_ms:.1f}x",
            f"{gbs:.0f}", f"{gbs / copy_gbs:.2f}" if bandwidth else "-", target, "met" if met else "NOT met",
        ])

    # (a), (b): bandwidth-bound; device time per call.
    for label, dtype in (("(a) 1.1B fp32, transformer shapes", torch.float32),
                         ("(b) 1.1B bf16, transformer shapes", torch.bfloat16)):
        ts = make(transformer_shapes(), dtype)
        got = totalnorm.total_norm(ts).double().item()
        ref = reference(ts)
        assert abs(got - ref) <= 2 ** -7 * ref if dtype == torch.bfloat16 else abs(got - ref) <= 1.2e-7 * ref, (got, ref)
        ours = device_time_ms(lambda: totalnorm.total_norm(ts))
        theirs = device_time_ms(lambda: torch.nn.utils.get_total_norm(ts))
        fe = device_time_ms(lambda: torch._foreach_norm(ts))
        frac = nbytes(ts) / ours / 1e6 / copy_gbs
        row(label, ts, ours, theirs, fe, ">=0.9 of copy BW, faster than torch", frac >= 0.9 and ours < theirs, True)
        params = with_grads(ts)
        ours_c = device_time_ms(lambda: totalnorm.clip_grad_norm_(params, 1e9))
        theirs_c = device_time_ms(lambda: torch.nn.utils.clip_grad_norm_(params, 1e9))
        row(label.replace(")", ") clip", 1), ts, ours_c, theirs_c, None, "faster than torch", ours_c < theirs_c, False)
        del ts, params
        torch.cuda.empty_cache()

    # (c): many small tensors; wall time per call, host overhead included.
    ts = make(small_shapes(), torch.float32)
    got = totalnorm.total_norm(ts).double().item()
    ref = reference(ts)
    assert abs(got - ref) <= 1.2e-7 * ref, (got, ref)
    ours = wall_time_ms(lambda: totalnorm.total_norm(ts))
    theirs = wall_time_ms(lambda: torch.nn.utils.get_total_norm(ts))
    fe = wall_time_ms(lambda: torch._foreach_norm(ts))
    row("(c) 2,000 x 1K-16K fp32, wall/call", ts, ours, theirs, fe, ">=10x faster than torch", theirs / ours >= 10, False)
    params = with_grads(ts)
    ours_c = wall_time_ms(lambda: totalnorm.clip_grad_norm_(params, 1e9))
    theirs_c = wall_time_ms(lambda: torch.nn.utils.clip_grad_norm_(params, 1e9))
    row("(c) clip, wall/call", ts, ours_c, theirs_c, None, "faster than torch", ours_c < theirs_c, False)

    # (d): (c) captured in a CUDA graph; device time per replay.
    ours_g = device_time_ms(graph_of(lambda: totalnorm.total_norm(ts)))
    theirs_g = device_time_ms(graph_of(lambda: torch.nn.utils.get_total_norm(ts)))
    row("(d) (c) in a CUDA graph, replay", ts, ours_g, theirs_g, None, "faster than torch", ours_g < theirs_g, False)

    header = ["machine", "workload", "tensors", "GB", "totalnorm ms", "torch ms", "_foreach_norm ms", "speedup",
              "totalnorm GB/s", "of copy BW", "target", "status"]
    lines = [
        f"GPU: {props.name} ({props.multi_processor_count} SMs), torch {torch.__version__}, "
        f"{datetime.date.today().isoformat()}",
        f"Roofline: device-to-device copy of 4 GiB = {copy_gbs:.0f} GB/s (read + write bytes / time)",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ] + ["| " + " | ".join(r) + " |" for r in rows]
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
