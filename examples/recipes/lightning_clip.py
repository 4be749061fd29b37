"""Lightning clipping with totalnorm through its public hook, configure_gradient_clipping.

Lightning calls ``LightningModule.configure_gradient_clipping(optimizer, gradient_clip_val,
gradient_clip_algorithm)`` after unscaling mixed-precision gradients; its default clips
through the precision plugin (torch's ``clip_grad_norm_``, refused under ``FSDPStrategy``).
Overriding the hook routes clip-by-norm to totalnorm and leaves "value" to Lightning.

Run: python examples/recipes/lightning_clip.py   (a tiny model on the CPU, a few steps beside
Lightning's own clipping; exits non-zero if the losses disagree).
"""
from __future__ import annotations

import sys

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

import totalnorm


class TotalnormClipping:
    """Mixin for a LightningModule: clip-by-norm with totalnorm (DTensor gradients too)."""

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        if gradient_clip_val and gradient_clip_algorithm in (None, "norm"):
            self.last_norm = totalnorm.clip_grad_norm_(self.parameters(), gradient_clip_val)
            self.clips = getattr(self, "clips", 0) + 1
        else:
            super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)


class Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Linear(32, 4))
        self.losses: list[float] = []

    def training_step(self, batch, _):
        x, y = batch
        loss = F.mse_loss(self.net(x), y)
        self.losses.append(loss.item())
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


class TinyTotalnorm(TotalnormClipping, Tiny):
    pass


def loader():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 8, generator=g), 3 * torch.randn(64, 4, generator=g)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)


def train(module_class, clip: float | None, steps: int) -> pl.LightningModule:
    module = module_class()
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=steps, gradient_clip_val=clip,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.fit(module, loader())
    return module


def main() -> int:
    steps, max_norm = 6, 0.1
    ours, theirs, unclipped = train(TinyTotalnorm, max_norm, steps), train(Tiny, max_norm, steps), train(Tiny, None, steps)
    for i, (a, b) in enumerate(zip(ours.losses, theirs.losses)):
        print(f"step {i + 1}: loss (totalnorm) {a:.7f}  loss (Lightning) {b:.7f}")
    ok = getattr(ours, "clips", 0) == steps and len(ours.losses) == steps == len(theirs.losses)
    ok = ok and all(abs(a - b) <= 1e-5 * abs(b) for a, b in zip(ours.losses, theirs.losses))
    ok = ok and any(abs(a - b) > 1e-4 * abs(b) for a, b in zip(ours.losses[1:], unclipped.losses[1:]))
    print(f"totalnorm clipped {getattr(ours, 'clips', 0)} of {steps} steps; losses "
          + ("agree with Lightning's clipping" if ok else "DISAGREE"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
