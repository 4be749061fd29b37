"""get_total_norm over a model's parameters through totalnorm: a tiny model, one
backward pass, the global gradient norm of its parameters beside torch's own."""
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


def main() -> None:
    torch.manual_seed(0)
    model = Tiny()
    x = torch.randn(32, 8)
    y = torch.randint(0, 4, (32,))
    F.cross_entropy(model(x), y).backward()

    grads = [p.grad for p in model.parameters() if p.grad is not None]
    for p in (2.0, 1.0, float("inf")):
        ours = totalnorm.get_total_norm(model.parameters(), norm_type=p)
        theirs = torch.nn.utils.get_total_norm(grads, norm_type=p)
        print(f"L{p:g}: totalnorm {ours.item():.9g}  torch {theirs.item():.9g}")
        if not torch.allclose(ours, theirs, rtol=1e-6, atol=0):
            raise SystemExit(f"mismatch for p={p}")


if __name__ == "__main__":
    main()
