"""Per-layer gradient norms in a training loop, without a host sync on the steps that
do not log: one read of the gradients gives the clip's total norm and every parameter's
own norm (totalnorm.named_grad_norms, per_tensor=True underneath).

    python3 examples/per_layer_logging.py [--steps 30] [--log-every 10]

Every step clips to max_norm and keeps the norms on the device; every --log-every steps
the loop reads them: the total, the five largest layers (NaN first: the layer that
diverged), and one dict a logger (TensorBoard, W&B) takes as it is. The last step
injects a NaN into one gradient to show that top_k finds it.
"""
from __future__ import annotations

import argparse
import math

import torch

import totalnorm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--max-norm", type=float, default=1.0)
    args = parser.parse_args()

    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = torch.nn.Sequential(
        torch.nn.Linear(16, 64), torch.nn.GELU(), torch.nn.Linear(64, 64), torch.nn.GELU(), torch.nn.Linear(64, 4)
    ).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for step in range(1, args.steps + 1):
        x = torch.randn(32, 16, device=device)
        loss = torch.nn.functional.mse_loss(model(x), x[:, :4].sin())
        loss.backward()
        if step == args.steps:
            model[2].weight.grad[0, 0] = math.nan  # a diverged layer, for top_k to point at
        norms = totalnorm.named_grad_norms(model.named_parameters(), max_norm=args.max_norm)
        if step % args.log_every == 0:  # the only host reads of the norms
            logged = {"loss": loss.item(), "grad_norm/total": norms.total.item(), **norms.to_dict("grad_norm/")}
            top = ", ".join(f"{name} {value:.4g}" for name, value in norms.top_k(5))
            print(f"step {step:3d}  loss {logged['loss']:.4f}  total {logged['grad_norm/total']:.4g}  top: {top}")
        if step == args.steps:
            assert norms.top_k(1)[0][0] == "2.weight", "top_k must name the layer with the NaN first"
            print(f"{len(logged)} values logged per logging step; the NaN was found in {norms.top_k(1)[0][0]}")
        else:
            opt.step()
        opt.zero_grad()


if __name__ == "__main__":
    main()
