"""The steps total_norm and clip_grad_norm_ are made of, as operators of their own.

partials -> (combine) -> finalize / finalize_clip -> scale_: each checked through
torch.library.opcheck (schema, fake kernel, autograd registration), and their
composition against the one-call ops, bit for bit.
"""
from __future__ import annotations

import math

import pytest
import torch
from reference import INF, assert_bitwise_equal, assert_unchanged, order_id, sample, snapshot

import totalnorm  # noqa: F401  (registers the ops)

OPS = torch.ops.totalnorm
ORDERS = [0.0, 1.0, 2.0, 3.0, INF, -INF, -1.0]


def _tensors(device):
    return [sample((40, 3), device=device), sample((7,), torch.bfloat16, device=device, seed=1, zeros_every=3),
            sample((), torch.float64, device=device, seed=2), torch.empty(0, 5, device=device)]


@pytest.mark.parametrize("p", ORDERS, ids=order_id)
def test_opcheck_every_step(device, p):
    tensors = _tensors(device)
    torch.library.opcheck(OPS.partials.default, (tensors, p))
    pair = OPS.partials(tensors, p)
    rows = torch.stack([pair, OPS.partials(tensors[:1], p)])
    torch.library.opcheck(OPS.combine.default, (rows, p))
    torch.library.opcheck(OPS.finalize.default, (rows, p, torch.float32, False))
    torch.library.opcheck(OPS.finalize_clip.default, (rows, p, torch.float32, 0.5, False))
    _, coef = OPS.finalize_clip(rows, p, torch.float32, 0.5)
    grads = [sample((5, 4), device=device), sample((3,), torch.bfloat16, device=device, seed=1)]
    torch.library.opcheck(OPS.scale_.default, (grads, coef))


@pytest.mark.parametrize("p", ORDERS, ids=order_id)
def test_a_partial_is_the_element_count_and_the_accumulation(device, p):
    tensors = _tensors(device)
    count, acc = OPS.partials(tensors, p).tolist()
    assert count == sum(t.numel() for t in tensors)
    empty_count, identity = OPS.partials([torch.empty(0, device=device)], p).tolist()
    assert empty_count == 0 and identity == (math.inf if p == -INF else 0.0)
    # No elements at all finalize to zero for every order (-inf's identity and 0^(1/p) for p < 0 would not).
    zero = OPS.finalize(OPS.partials([torch.empty(0, device=device)], p), p, torch.float32)
    assert zero.item() == 0.0


@pytest.mark.parametrize("p", ORDERS, ids=order_id)
def test_partials_merged_in_rows_equal_the_one_call(device, p):
    tensors = _tensors(device)
    one_call = OPS.total_norm(tensors, p, False, None)
    # Two "devices" or "ranks": rows stacked and merged in order by finalize, or combined first.
    rows = torch.stack([OPS.partials(tensors[:2], p), OPS.partials(tensors[2:], p)])
    split = OPS.finalize(rows, p, one_call.dtype)
    combined = OPS.finalize(OPS.combine(rows, p), p, one_call.dtype)
    assert_bitwise_equal(split, combined)
    torch.testing.assert_close(split, one_call, rtol=1e-6, atol=0)
    if p in (INF, -INF, 0.0):  # max, min and counts do not depend on how the list is split
        assert_bitwise_equal(split, one_call)
    assert_bitwise_equal(OPS.finalize(OPS.partials(tensors, p), p, one_call.dtype), one_call)


def test_finalize_clip_and_scale_equal_clip_grad_norm(device):
    grads = [sample((50,), device=device), sample((4, 6), torch.float64, device=device, seed=1).t(),
             sample((), device=device, seed=2), sample((9,), torch.complex64, device=device, seed=3)]
    copies = [g.clone() for g in grads]
    want = OPS.clip_grad_norm_(copies, 0.25, 2.0, False)
    norm, coef = OPS.finalize_clip(OPS.partials(grads, 2.0), 2.0, torch.float64, 0.25)
    assert coef.dtype == norm.dtype == torch.float64 and coef.dim() == 0
    OPS.scale_(grads, coef)
    assert_bitwise_equal(norm, want)
    for g, c in zip(grads, copies):
        assert_bitwise_equal(g, c)


def test_bad_partials_and_coefficients_are_rejected(device):
    with pytest.raises(RuntimeError, match="combine: partials must be a non-empty float64"):
        OPS.combine(torch.zeros(3, dtype=torch.float64, device=device), 2.0)
    with pytest.raises(RuntimeError, match="finalize: partials must be a non-empty float64"):
        OPS.finalize(torch.zeros(2, device=device), 2.0, torch.float32)
    with pytest.raises(RuntimeError, match=r"partials: tensors\[1\] is on"):
        OPS.partials([torch.ones(2, device=device), torch.ones(2, device="meta")], 2.0)
    grads = [torch.ones(3, device=device)]
    before = snapshot(grads)
    with pytest.raises(RuntimeError, match="scale_: coef must be a 0-dim floating tensor"):
        OPS.scale_(grads, torch.ones(2, device=device))
    with pytest.raises(RuntimeError, match=r"scale_: tensors\[1\] has elements that share memory"):
        OPS.scale_([grads[0], torch.ones(1, device=device).expand(3)], torch.tensor(0.5, device=device))
    assert_unchanged(grads, before)


def test_scale_bumps_the_version_of_what_it_writes(device):
    g = torch.ones(4, device=device, requires_grad=True).detach()
    version = g._version
    OPS.scale_([g], torch.tensor(0.5, device=device))
    assert g._version == version + 1
    assert torch.equal(g, torch.full((4,), 0.5, device=device))
