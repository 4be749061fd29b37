"""Clipping folded into fused AdamW (issue 18) against torch's clip before the same step.

    python3 benchmarks/bench_fused_clip.py [--device cpu|cuda] [--budget S] [--write [RESULTS.md]]

Workload: float32 gradients of every parameter of GPT-2 small (124M parameters, its
shapes) on the CPU; on CUDA the ~1.1B-parameter transformer shapes of bench_gpu.py.
One fused AdamW optimizer; interleaved rounds of four calls:

- ``step``: ``opt.step()`` alone (no clip);
- ``torch``: ``torch.nn.utils.clip_grad_norm_`` then the step;
- ``totalnorm``: ``totalnorm.clip_grad_norm_`` (a norm pass and a scaling pass) then the step;
- ``folded``: ``totalnorm.clip_grad_norm_(..., optimizer=opt)`` (a norm pass, the
  coefficient in the kernel's grad_scale) then the step;
- ``grad_scale=1``: the step with a grad_scale of 1.0 and no norm: what the kernel's
  division and write-back of the gradients cost (where the folded time goes).

The clip's extra cost is a call's median minus the ``step`` median. Target: folded's
extra cost at most 0.7x torch's (by the bytes moved: 8 against 12 per fp32 parameter).
The gradients are clipped in place every round, so after the first they sit at
``max_norm`` and stay there (no drift towards subnormals).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import toolkit  # noqa: E402

import totalnorm  # noqa: E402

TARGET = 0.7


def gpt2_small_shapes(vocab: int = 50257, positions: int = 1024, d: int = 768, layers: int = 12) -> list[tuple]:
    shapes: list[tuple] = [(vocab, d), (positions, d)]
    for _ in range(layers):
        shapes += [(d,), (d,), (d, 3 * d), (3 * d,), (d, d), (d,), (d,), (d,), (d, 4 * d), (4 * d,), (4 * d, d), (d,)]
    return shapes + [(d,), (d,)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--budget", type=float, default=40.0, help="seconds of timed rounds (default 40)")
    toolkit.add_write_argument(parser)
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        from bench_gpu import transformer_shapes

        shapes, workload, label, clock = transformer_shapes(), "1.1B fp32, transformer shapes", toolkit.gpu_label(), \
            toolkit.cuda_wall_clock()
    else:
        shapes, workload, label, clock = gpt2_small_shapes(), "GPT-2 small, 124M fp32", \
            toolkit.cpu_label() + f" (shared: load average {os.getloadavg()[0]:.1f} at the start)", toolkit.wall_clock
    g = torch.Generator().manual_seed(0)
    params = []
    for s in shapes:
        p = torch.nn.Parameter(torch.empty(s, device=device).normal_(0, 0.02))
        p.grad = torch.randn(s, generator=g).to(device)
        params.append(p)
    count = sum(p.numel() for p in params)
    opt = torch.optim.AdamW(params, lr=1e-6, fused=True)
    max_norm = 1.0

    def step():
        opt.step()

    def torch_clip():
        torch.nn.utils.clip_grad_norm_(params, max_norm)
        opt.step()

    def totalnorm_clip():
        totalnorm.clip_grad_norm_(params, max_norm)
        opt.step()

    def folded():
        totalnorm.clip_grad_norm_(params, max_norm, optimizer=opt)
        opt.step()

    one = torch.ones((), device=device)

    def step_scaled_by_one():
        # Where the folded time goes: the kernel's division and write-back of every gradient.
        opt.grad_scale = one
        opt.step()
        del opt.grad_scale

    fns = {"step (no clip)": step, "torch clip + step": torch_clip, "totalnorm clip + step": totalnorm_clip,
           "step with grad_scale=1 (no norm)": step_scaled_by_one,
           "totalnorm folded (optimizer=) + step": folded}
    t = toolkit.time_interleaved(fns, args.budget, clock=clock)
    names = list(t)
    base, base_min = t[names[0]].median, t[names[0]].minimum
    torch_extra = t[names[1]].median - base
    torch_extra_min = t[names[1]].minimum - base_min
    rows = []
    for name, timing in t.items():
        if name == names[0]:
            rows.append([name, timing.ms(), "", "", "", "", "-"])
            continue
        extra, extra_min = timing.median - base, timing.minimum - base_min
        ratio = extra / torch_extra if torch_extra > 0 else None
        ratio_min = extra_min / torch_extra_min if torch_extra_min > 0 else None
        met = None
        if name == names[-1]:
            # No verdict when an extra cost is lost in the noise (not positive).
            met = None if ratio is None or extra <= 0 else ratio <= TARGET
        rows.append([name, timing.ms(), f"{extra * 1e3:.1f} ({extra_min * 1e3:.1f})",
                     "n/a" if ratio is None else f"{ratio:.2f}", "n/a" if ratio_min is None else f"{ratio_min:.2f}",
                     f"<= {TARGET}" if name == names[-1] else "", toolkit.met_cell(met)])
    heading = f"## Clip folded into fused AdamW ({device.type}): `python3 benchmarks/bench_fused_clip.py --device {device.type} --write`"
    text = "\n".join([
        heading, "",
        f"{label}; {workload}: {len(params)} tensors, {count / 1e6:.1f}M parameters; torch {torch.__version__}. "
        "Median (min) ms per call over interleaved rounds; extra = the call minus the step alone, "
        "medians (minimums); ratio = extra / torch's extra, of the medians and of the minimums.", "",
        toolkit.markdown_table(["call", "ms median (min)", "extra ms", "ratio (medians)", "ratio (minimums)",
                                "target", "met"], rows, align="lrrrrrl"),
    ])
    toolkit.publish(text, args.write, heading.split(":")[0])


if __name__ == "__main__":
    main()
