"""totalnorm.clip_grad_norm_ side by side with torch.nn.utils.clip_grad_norm_.

Two comparisons, each as strict as it can be made:

* Where torch computes the same total norm bit for bit (p = 1 or inf over values
  whose sums are exact in every precision involved), the clipped gradients must be
  bitwise identical to torch.nn.utils.clip_grad_norm_'s.
* Where torch's norm differs (it rounds every per-tensor norm to the gradient dtype
  before combining, so it is a few ulps from the exact value), the gradients must be
  bitwise identical to torch.nn.utils.clip_grads_with_norm_ given *our* norm: the
  same coefficient steps clamp(max_norm / (total + 1e-6), max=1) and the same
  in-place multiply. Against torch's own clip they then differ only by torch's norm
  error (checked with a tolerance derived from the two norms).
"""
from __future__ import annotations

import math

import pytest
import torch
from reference import (
    INF,
    assert_bitwise_equal,
    assert_norm,
    assert_unchanged,
    bits,
    dtype_id,
    order_id,
    sample,
    snapshot,
)

import totalnorm


def make_params(grads):
    params = []
    for g in grads:
        p = torch.nn.Parameter(torch.zeros_like(g))
        p.grad = g.clone()
        params.append(p)
    return params


def twin_params(grads):
    """Two independent parameter sets with equal gradients: ours and torch's."""
    return make_params(grads), make_params(grads)


def dyadic(shape, dtype, device, seed, denominator=8, bound=8):
    """Values k/denominator with |k| <= bound: every sum here is exact in float16 and up."""
    g = torch.Generator().manual_seed(seed)
    k = torch.randint(-bound, bound + 1, shape, generator=g)
    return (k.to(torch.float64) / denominator).to(dtype).to(device)


def grads_ids(value):
    return "+".join(dtype_id(d) for d in value) if isinstance(value, tuple) else None


SAME_DTYPE = [(torch.float32,), (torch.float64,), (torch.bfloat16,), (torch.float16,)]
MIXED = [(torch.float32, torch.float16), (torch.bfloat16, torch.float32), (torch.float16, torch.bfloat16),
         (torch.float16, torch.bfloat16, torch.float32, torch.float64)]


CASES_AGREE = ([(d, p, m) for d in SAME_DTYPE for p in (1.0, INF) for m in (0.3, 7.0, 1e6)]
               + [(d, p, 0.3) for d in MIXED for p in (1.0, INF)])


@pytest.mark.parametrize("dtypes,p,max_norm", CASES_AGREE,
                         ids=lambda v: grads_ids(v) or (order_id(v) if v in (1.0, INF) else f"max_norm={v:g}"))
def test_bitwise_like_torch_when_the_norms_agree(device, dtypes, p, max_norm):
    sizes = [5, 12, 9, 6]
    if p == INF:
        # The largest |x| involves no rounding: any values.
        grads = [sample((n,), dtypes[i % len(dtypes)], device=device, seed=i) for i, n in enumerate(sizes)]
    else:
        # 32 values k/16 with |k| <= 7: every partial sum is a multiple of 1/16 below
        # 2^8/16, exact even in bfloat16, so torch's two-stage norm is exact too.
        grads = [dyadic((n,), dtypes[i % len(dtypes)], device, seed=i, denominator=16, bound=7)
                 for i, n in enumerate(sizes)]
    ours, theirs = twin_params(grads)
    n_ours = totalnorm.clip_grad_norm_(ours, max_norm, p)
    n_theirs = torch.nn.utils.clip_grad_norm_(theirs, max_norm, p)
    assert_bitwise_equal(n_ours, n_theirs)  # the premise: exact norms on both sides
    for i, (a, b) in enumerate(zip(ours, theirs)):
        assert_bitwise_equal(a.grad, b.grad)


CASES_GIVEN = ([(d, p, m) for d in SAME_DTYPE for p in (2.0, 1.0, INF, 3.0) for m in (0.5, 1e6)]
               + [(d, 2.0, m) for d in MIXED for m in (0.5, 1e6)])


@pytest.mark.parametrize("dtypes,p,max_norm", CASES_GIVEN,
                         ids=lambda v: grads_ids(v) or (order_id(v) if v in (1.0, 2.0, 3.0, INF) else f"max_norm={v:g}"))
def test_clipping_follows_torch_given_the_norm(device, dtypes, p, max_norm):
    grads = [sample((n,), d, device=device, seed=i) for i, (n, d) in
             enumerate(zip([1000, 17, 4099, 3], dtypes * 4))]
    grads.append(sample((20, 30), dtypes[0], device=device, seed=9).t())  # non-dense grad
    ours, theirs = twin_params(grads)
    before = [g.clone() for g in grads]
    total = totalnorm.clip_grad_norm_(ours, max_norm, p)
    # The returned norm is the total norm of the gradients before clipping.
    assert_norm(total, before, p)
    torch.nn.utils.clip_grads_with_norm_(theirs, max_norm, total)
    for a, b in zip(ours, theirs):
        assert_bitwise_equal(a.grad, b.grad)
    if max_norm == 1e6:
        for a, g in zip(ours, before):
            assert_bitwise_equal(a.grad, g)  # coefficient clamped to 1: unchanged


@pytest.mark.parametrize("p", [2.0, 1.0, INF], ids=order_id)
def test_float32_against_torch_clip_grad_norm(device, p):
    grads = [sample((n,), device=device, seed=n, scale=3.0) for n in (10, 1000, 4097, 1)]
    ours, theirs = twin_params(grads)
    n_ours = totalnorm.clip_grad_norm_(ours, 1.0, p)
    n_theirs = torch.nn.utils.clip_grad_norm_(theirs, 1.0, p)
    assert_norm(n_ours, grads, p)
    # torch's float32 norm is a few ulps from the exact one (ours): measured up to
    # ~5 ulps over these sizes, so 1e-6 (~8 ulps) relative.
    torch.testing.assert_close(n_ours, n_theirs, rtol=1e-6, atol=0)
    # The gradients differ only through the coefficients' ratio (plus one rounding).
    ratio_error = abs(n_ours.item() / n_theirs.item() - 1)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a.grad, b.grad, rtol=ratio_error + 2 * 2.0**-24, atol=0)
        if n_ours.item() == n_theirs.item():
            assert_bitwise_equal(a.grad, b.grad)


def test_max_norm_larger_than_the_norm_changes_no_value(device):
    grads = [sample((100,), device=device), sample((3, 3), torch.bfloat16, device=device, seed=1)]
    params = make_params(grads)
    total = totalnorm.clip_grad_norm_(params, 1e3)
    assert_norm(total, grads, 2.0)
    for p, g in zip(params, grads):
        assert_bitwise_equal(p.grad, g)


def test_returns_the_norm_before_clipping_and_clips_to_max_norm(device):
    grads = [sample((1000,), torch.float64, device=device, seed=1), sample((77,), torch.float64, device=device)]
    params = make_params(grads)
    total = totalnorm.clip_grad_norm_(params, 0.25)
    assert_norm(total, grads, 2.0)
    after = totalnorm.get_total_norm(params)
    # clamp(0.25 / (total + 1e-6)) * total is 0.25 up to the 1e-6 shift.
    assert abs(after.item() - 0.25 * total.item() / (total.item() + 1e-6)) <= 1e-13


def test_clipping_bumps_the_grads_version(device):
    params = make_params([sample((10,), device=device), sample((4, 4), device=device, seed=1).t(),
                          torch.empty(0, device=device)])
    versions = [p.grad._version for p in params]
    totalnorm.clip_grad_norm_(params, 1e-3)
    assert all(p.grad._version > v for p, v in zip(params[:2], versions))
    # Also when nothing changes in value (max_norm above the norm): still multiplied.
    versions = [p.grad._version for p in params]
    totalnorm.clip_grad_norm_(params, 1e9)
    assert all(p.grad._version > v for p, v in zip(params[:2], versions))


def test_nan_gradient_with_error_if_nonfinite_raises_and_changes_nothing(device):
    grads = [sample((50,), device=device), torch.tensor([1.0, math.nan], device=device)]
    params = make_params(grads)
    before = snapshot([p.grad for p in params])
    with pytest.raises(RuntimeError, match=r"clip_grad_norm_: the total norm of order 2 is nan"):
        totalnorm.clip_grad_norm_(params, 1.0, error_if_nonfinite=True)
    assert_unchanged([p.grad for p in params], before)
    theirs = make_params(grads)
    with pytest.raises(RuntimeError):
        torch.nn.utils.clip_grad_norm_(theirs, 1.0, error_if_nonfinite=True)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
@pytest.mark.parametrize("p", [2.0, INF], ids=order_id)
def test_non_finite_norm_without_error_scales_like_torch(device, bad, p):
    grads = [sample((50,), device=device), torch.tensor([1.0, bad, -2.0, 0.0], device=device)]
    ours, theirs = twin_params(grads)
    n_ours = totalnorm.clip_grad_norm_(ours, 1.0, p, error_if_nonfinite=False)
    n_theirs = torch.nn.utils.clip_grad_norm_(theirs, 1.0, p, error_if_nonfinite=False)
    assert math.isnan(n_ours.item()) == math.isnan(bad) and not math.isfinite(n_ours.item())
    torch.testing.assert_close(n_ours, n_theirs, equal_nan=True, rtol=0, atol=0)
    for a, b in zip(ours, theirs):
        # NaN norm: every gradient becomes NaN; inf norm: coefficient 0 (inf*0 = NaN),
        # signed zeros elsewhere. NaN payloads aside, the same bits as torch.
        assert torch.equal(a.grad.isnan(), b.grad.isnan())
        finite = ~a.grad.isnan()
        assert torch.equal(bits(a.grad[finite]), bits(b.grad[finite]))


def test_parameters_without_grads_are_skipped(device):
    grads = [sample((30,), device=device), sample((5,), device=device, seed=1)]
    params = make_params(grads)
    idle = torch.nn.Parameter(torch.ones(4, device=device))
    total = totalnorm.clip_grad_norm_([idle] + params, 0.1)
    assert idle.grad is None
    assert_norm(total, grads, 2.0)
    theirs = make_params(grads)
    torch.nn.utils.clip_grads_with_norm_(theirs, 0.1, total)
    for a, b in zip(params, theirs):
        assert_bitwise_equal(a.grad, b.grad)


def test_no_grads_at_all_returns_zero_and_touches_nothing(device):
    params = [torch.nn.Parameter(torch.ones(3, device=device)) for _ in range(2)]
    total = totalnorm.clip_grad_norm_(params, 1.0)
    assert total.item() == 0.0 and total.shape == () and not total.requires_grad
    assert all(p.grad is None for p in params)
    assert totalnorm.clip_grad_norm_([], 1.0).item() == 0.0


def test_all_empty_grads(device):
    params = make_params([torch.empty(0, device=device), torch.empty(3, 0, device=device)])
    total = totalnorm.clip_grad_norm_(params, 1.0)
    assert total.item() == 0.0 and total.device == params[0].device


def test_single_tensor_and_generator(device):
    p = make_params([sample((64,), device=device, seed=3)])[0]
    q = make_params([sample((64,), device=device, seed=3)])[0]
    assert_bitwise_equal(totalnorm.clip_grad_norm_(p, 0.5), totalnorm.clip_grad_norm_((x for x in [q]), 0.5))
    assert_bitwise_equal(p.grad, q.grad)


def test_clip_grad_norm_of_a_trained_model_matches_torch(device):
    def tiny():
        return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4)).to(device)

    torch.manual_seed(0)
    ours, theirs, given = tiny(), tiny(), tiny()
    theirs.load_state_dict(ours.state_dict())
    given.load_state_dict(ours.state_dict())
    x = sample((32, 8), device=device)
    y = torch.randint(0, 4, (32,), generator=torch.Generator().manual_seed(1)).to(device)
    for m in (ours, theirs, given):
        torch.nn.functional.cross_entropy(m(x), y).backward()
    grads = [p.grad.clone() for p in ours.parameters()]
    total = totalnorm.clip_grad_norm_(ours.parameters(), 0.1)
    assert_norm(total, grads, 2.0)
    n_theirs = torch.nn.utils.clip_grad_norm_(theirs.parameters(), 0.1)
    torch.testing.assert_close(total, n_theirs, rtol=1e-6, atol=0)  # torch's float32 norm: a few ulps
    # Given our norm, torch's clipping gives exactly our gradients.
    torch.nn.utils.clip_grads_with_norm_(given.parameters(), 0.1, total)
    for a, b in zip(ours.parameters(), given.parameters()):
        assert_bitwise_equal(a.grad, b.grad)
