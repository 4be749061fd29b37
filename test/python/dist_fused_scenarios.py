"""What each rank runs for test_fused_optim.py's across-ranks test (FSDP2 + fused AdamW, Gloo)."""
from __future__ import annotations

import copy
import math

import torch
import torch.distributed as dist

import totalnorm
from dist_scenarios import _batch, _fsdp2, _mlp


def fsdp2_fused_adamw(steps: int, max_norm: float, bad_step: int) -> dict:
    """FSDP2 with the clip folded into fused AdamW, beside FSDP2 with totalnorm's clip and
    one unsharded model with torch's clip; at ``bad_step`` rank 1 puts a NaN into one
    local gradient shard, and every rank must skip that step."""
    single = _mlp()
    folded, clipped = _fsdp2(copy.deepcopy(single)), _fsdp2(copy.deepcopy(single))
    opts = [torch.optim.AdamW(m.parameters(), lr=1e-2, fused=True) for m in (folded, clipped, single)]
    worst = 0.0
    skipped_equal = None
    for step in range(steps):
        x, y = _batch(step)
        for m in (folded, clipped, single):
            m.zero_grad()
            torch.nn.functional.mse_loss(m(x), y).backward()
        if step == bad_step:
            before = [q.detach().full_tensor() for q in folded.parameters()]
            if dist.get_rank() == 1:
                next(folded.parameters()).grad.to_local().view(-1)[0] = math.nan
            norm = totalnorm.clip_grad_norm_(folded.parameters(), max_norm, optimizer=opts[0], skip_nonfinite=True)
            opts[0].step()
            after = [q.detach().full_tensor() for q in folded.parameters()]
            skipped_equal = math.isnan(norm.item()) and all(torch.equal(a, b) for a, b in zip(before, after))
            continue  # the other two models skip this step as well
        totalnorm.clip_grad_norm_(folded.parameters(), max_norm, optimizer=opts[0], skip_nonfinite=True)
        opts[0].step()
        totalnorm.clip_grad_norm_(clipped.parameters(), max_norm)
        opts[1].step()
        torch.nn.utils.clip_grad_norm_(single.parameters(), max_norm)
        opts[2].step()
    for a, b in zip(folded.parameters(), single.parameters()):
        a = a.detach().full_tensor()
        worst = max(worst, ((a - b.detach()).abs().max() / b.detach().abs().max()).item())
    return {
        "worst_vs_torch": worst,
        "skipped_equal": skipped_equal,
        "folded": [q.detach().full_tensor() for q in folded.parameters()],
        "clipped": [q.detach().full_tensor() for q in clipped.parameters()],
        "leftover": hasattr(opts[0], "grad_scale") or hasattr(opts[0], "found_inf"),
    }
