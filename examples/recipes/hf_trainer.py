"""Hugging Face Trainer clipping with totalnorm instead of accelerate's path.

transformers' Trainer clips in one method, ``Trainer._clip_grad_norm(model)``, which calls
``Accelerator.clip_grad_norm_``: under accelerate >= 1.16 that path groups the gradients by
mesh, takes a ``get_total_norm`` per group, stacks them and takes a ``vector_norm``, so
replacing ``torch.nn.utils.clip_grad_norm_`` changes nothing. No public hook takes its
place (a callback's ``on_pre_optimizer_step`` runs after the Trainer has clipped), so this
recipe replaces that one method in a subclass and keeps what accelerate does around the
clip: ``Accelerator.unscale_gradients()`` (public API), which unscales fp16 mixed-precision
gradients before their norm is taken. DeepSpeed, XLA, FSDP1 and SageMaker model parallel
clip inside their own engines, so they keep the Trainer's path.

Run: python examples/recipes/hf_trainer.py   (a tiny Llama on the CPU, a few steps of
TotalnormTrainer beside the stock Trainer; exits non-zero if the losses disagree).
"""
from __future__ import annotations

import sys

import torch
from accelerate.utils import DistributedType
from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer import is_sagemaker_mp_enabled

import totalnorm


class TotalnormTrainer(Trainer):
    """A Trainer whose gradient clipping is totalnorm's (one fused pass, exact, one collective)."""

    def _clip_grad_norm(self, model):
        acc = self.accelerator
        engine_clips = acc.distributed_type in (DistributedType.DEEPSPEED, DistributedType.XLA) or (
            acc.distributed_type == DistributedType.FSDP and not acc.is_fsdp2
        )
        if engine_clips or is_sagemaker_mp_enabled():
            return super()._clip_grad_norm(model)
        acc.unscale_gradients()  # what Accelerator.clip_grad_norm_ does first: fp16 gradients unscaled
        return totalnorm.clip_grad_norm_(model.parameters(), self.args.max_grad_norm)


if not hasattr(Trainer, "_clip_grad_norm"):  # a transformers that clips elsewhere: say so, never skip silently
    raise ImportError("this transformers' Trainer has no _clip_grad_norm; the recipe needs updating")


class Losses(TrainerCallback):
    def __init__(self) -> None:
        self.losses: list[float] = []
        self.grad_norms: list[float] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.losses.append(float(logs["loss"]))
            self.grad_norms.append(float(logs["grad_norm"]))


def tiny_model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)
    return LlamaForCausalLM(config)


def dataset(n: int = 32, length: int = 12) -> list[dict]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 64, (n, length), generator=g)
    return [{"input_ids": row, "labels": row.clone()} for row in ids]


def train(trainer_class, max_grad_norm: float, steps: int, out: str) -> Losses:
    log = Losses()
    args = TrainingArguments(output_dir=out, use_cpu=True, max_steps=steps, per_device_train_batch_size=4,
                             learning_rate=1e-2, max_grad_norm=max_grad_norm, logging_steps=1, report_to=[],
                             save_strategy="no", seed=0, data_seed=0, disable_tqdm=True)
    trainer_class(model=tiny_model(), args=args, train_dataset=dataset(), callbacks=[log]).train()
    return log


def main() -> int:
    import tempfile

    steps, max_norm = 4, 0.5
    calls = {"clip": 0, "unscale": 0}
    clip = totalnorm.clip_grad_norm_

    def counted_clip(*a, **k):
        calls["clip"] += 1
        return clip(*a, **k)

    totalnorm.clip_grad_norm_ = counted_clip
    with tempfile.TemporaryDirectory() as out:
        ours = train(TotalnormTrainer, max_norm, steps, out)
        theirs = train(Trainer, max_norm, steps, out)
        unclipped = train(Trainer, 0.0, steps, out)
    totalnorm.clip_grad_norm_ = clip
    print(f"{'step':>4} {'loss (totalnorm)':>17} {'loss (accelerate)':>18} {'grad_norm (totalnorm)':>22} "
          f"{'grad_norm (accelerate)':>23}")
    for i, row in enumerate(zip(ours.losses, theirs.losses, ours.grad_norms, theirs.grad_norms)):
        print(f"{i + 1:>4} {row[0]:>17.6f} {row[1]:>18.6f} {row[2]:>22.6f} {row[3]:>23.6f}")
    ok = calls["clip"] == steps and len(ours.losses) == steps == len(theirs.losses)
    # Same model, batches and clip: equal up to float32 rounding of the norm (torch's
    # per-tensor float32 norms against totalnorm's float64 accumulation).
    ok = ok and all(abs(a - b) <= 1e-5 * abs(b) for a, b in zip(ours.losses, theirs.losses))
    ok = ok and all(abs(a - b) <= 1e-5 * abs(b) for a, b in zip(ours.grad_norms, theirs.grad_norms))
    # The clip matters in this run: without it the losses move apart.
    clipped = any(n > max_norm for n in theirs.grad_norms)
    ok = ok and clipped and any(abs(a - b) > 1e-4 * abs(b) for a, b in zip(ours.losses[1:], unclipped.losses[1:]))
    print(f"totalnorm clipped {calls['clip']} of {steps} steps; losses "
          + ("agree with accelerate's clipping" if ok else "DISAGREE"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
