"""get_total_norm over a model's parameters through totalnorm: a tiny model, one
backward pass, the global gradient norm of its parameters beside torch's own and
the exact value (every element's term summed exactly, then rounded once)."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

import totalnorm


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(x)))


def exact_norm(grads: list[torch.Tensor], p: float) -> torch.Tensor:
    """The norm of the concatenated gradients rounded once to float32: float64 terms
    |x|^p (exact for p = 1 and 2 on float32 inputs), added exactly by math.fsum."""
    values = torch.cat([g.reshape(-1) for g in grads]).double().abs()
    if math.isinf(p):
        return values.max().float()
    return torch.tensor(math.fsum(values.pow(p).tolist()) ** (1 / p)).float()


def main() -> None:
    torch.manual_seed(0)
    model = Tiny()
    x = torch.randn(32, 8)
    y = torch.randint(0, 4, (32,))
    F.cross_entropy(model(x), y).backward()

    grads = [p.grad for p in model.parameters() if p.grad is not None]
    print("torch sums float32 per-tensor norms, rounding at each step; totalnorm accumulates")
    print("in float64 and rounds once, so it lands within 1 ulp of the exact value.")
    for p in (2.0, 1.0, float("inf")):
        ours = totalnorm.get_total_norm(model.parameters(), norm_type=p)
        theirs = torch.nn.utils.get_total_norm(grads, norm_type=p)
        exact = exact_norm(grads, p)
        ulp = torch.finfo(torch.float32).eps * exact.item()
        print(f"L{p:g}: exact {exact.item():.9g}  totalnorm {ours.item():.9g}  torch {theirs.item():.9g}"
              f"  (totalnorm {abs(ours.item() - exact.item()) / ulp:.1f} ulp off, torch"
              f" {abs(theirs.item() - exact.item()) / ulp:.1f})")
        if abs(ours.item() - exact.item()) > ulp:
            raise SystemExit(f"totalnorm is more than 1 ulp from the exact value for p={p}")
        if not torch.allclose(ours, theirs, rtol=1e-6, atol=0):
            raise SystemExit(f"mismatch with torch for p={p}")


if __name__ == "__main__":
    main()
