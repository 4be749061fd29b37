"""clip_grad_norm_(..., optimizer=) folded into torch's fused optimizers (docs/semantics.md,
Clipping folded into a fused optimizer): exactness against totalnorm's and torch's clip
followed by the same fused step, device-side skips, GradScaler, fallbacks and errors."""
from __future__ import annotations

import math

import pytest
import torch

import totalnorm
from reference import assert_bitwise_equal, sample

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA)]
KINDS = ["adam", "adamw", "sgd"]
SHAPES = [(17, 9), (9,), (5, 17), (5,), (300,)]


def make_optimizer(kind, params, fused=True):
    if kind == "adam":
        return torch.optim.Adam(params, lr=1e-2, weight_decay=1e-2, fused=fused)
    if kind == "adamw":
        return torch.optim.AdamW(params, lr=1e-2, weight_decay=1e-2, fused=fused)
    return torch.optim.SGD(params, lr=1e-2, momentum=0.9, fused=fused)


def twins(kind, device, dtype=torch.float32, n=2, fused=(True, True)):
    """n parameter lists with equal values, each with its own optimizer."""
    out = []
    for i in range(n):
        params = [torch.nn.Parameter(sample(s, dtype, device=device, seed=10 + j)) for j, s in enumerate(SHAPES)]
        out.append((params, make_optimizer(kind, params, fused[i])))
    return out


def set_grads(params, seed, scale=1.0, bad=None):
    for j, p in enumerate(params):
        p.grad = sample(p.shape, p.dtype, device=p.device, seed=100 * seed + j) * scale
    if bad is not None:
        p = params[1].grad
        p.view(-1)[3] = bad


def state_tensors(optimizer, params):
    return [t for p in params for t in optimizer.state[p].values() if torch.is_tensor(t)]


def within_ulps(a, b, ulps):
    """|a - b| within ``ulps`` units in the last place of b's largest element (in b's dtype)."""
    assert a.dtype == b.dtype
    top = b.detach().abs().max().double().item()
    info = torch.finfo(b.dtype)
    # The spacing at the largest element's binade; below the normal range, the subnormal spacing.
    unit = max(2.0 ** math.floor(math.log2(top)) if top > 0 else 0.0, info.tiny) * info.eps
    diff = (a.detach().double() - b.detach().double()).abs().max().item()
    assert diff <= ulps * unit, f"{diff} > {ulps} ulp ({unit})"
    return diff / unit


def make_scaler(device, scale=2.0**10):
    scaler = torch.amp.GradScaler(device, init_scale=scale)
    scaler.scale(torch.ones((), device=device))  # creates the scale tensor
    return scaler


# ----------------------------------------------------------------------------------------------
# Exactness


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("with_scaler", [False, True], ids=["plain", "gradscaler"])
def test_coefficient_one_is_bitwise_totalnorm_clip_then_the_same_step(device, kind, with_scaler):
    (pa, oa), (pb, ob) = twins(kind, device)
    sa, sb = (make_scaler(device), make_scaler(device)) if with_scaler else (None, None)
    for step in range(3):
        scale = sa.get_scale() if with_scaler else 1.0
        set_grads(pa, step, scale)
        set_grads(pb, step, scale)
        na = totalnorm.clip_grad_norm_(pa, 1e6, optimizer=oa, scaler=sa, skip_nonfinite=True)
        if with_scaler:
            sa.step(oa)
            sa.update()
            sb.unscale_(ob)
            nb = totalnorm.clip_grad_norm_(pb, 1e6)
            sb.step(ob)
            sb.update()
        else:
            oa.step()
            nb = totalnorm.clip_grad_norm_(pb, 1e6)
            ob.step()
        assert_bitwise_equal(na, nb)
        for a, b in zip(pa + state_tensors(oa, pa), pb + state_tensors(ob, pb)):
            assert_bitwise_equal(a, b)
        assert not hasattr(oa, "grad_scale") and not hasattr(oa, "found_inf")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("with_scaler", ["none", "scaled", "unscaled"])
def test_a_clipping_step_is_within_4_ulp_of_totalnorm_clip_then_the_same_step(device, kind, dtype, with_scaler):
    if with_scaler != "none" and dtype != torch.float32:
        pytest.skip("GradScaler unscales float32 gradients")
    (pa, oa), (pb, ob) = twins(kind, device, dtype)
    scaler = make_scaler(device) if with_scaler != "none" else None
    ref_scaler = make_scaler(device) if scaler else None
    scale = scaler.get_scale() if scaler else 1.0
    set_grads(pa, 0, scale)
    set_grads(pb, 0, scale)
    if with_scaler == "unscaled":
        scaler.unscale_(oa)
    na = totalnorm.clip_grad_norm_(pa, 0.3, optimizer=oa, scaler=scaler)
    (scaler.step(oa) if scaler else oa.step())
    if ref_scaler:
        ref_scaler.unscale_(ob)
    nb = totalnorm.clip_grad_norm_(pb, 0.3)
    (ref_scaler.step(ob) if ref_scaler else ob.step())
    assert_bitwise_equal(na, nb)
    assert na.item() > 1  # the coefficient is below 1
    worst = 0.0
    for a, b in zip(pa + state_tensors(oa, pa), pb + state_tensors(ob, pb)):
        if b.dim():
            worst = max(worst, within_ulps(a, b, 4))
    # Gradients differ by at most 1 ulp (dividing by 1/c is not multiplying by c).
    for a, b in zip(pa, pb):
        within_ulps(a.grad, b.grad, 1)


def _model(device):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(24, 48), torch.nn.Tanh(), torch.nn.Linear(48, 48), torch.nn.Tanh(),
                               torch.nn.Linear(48, 6)).to(device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", KINDS)
def test_ten_steps_stay_within_1e_6_of_torch_clip_then_the_same_step(device, kind):
    ours, theirs = _model(device), _model(device)
    oa, ob = make_optimizer(kind, list(ours.parameters())), make_optimizer(kind, list(theirs.parameters()))
    worst = 0.0
    for step in range(10):
        x, y = sample((32, 24), device=device, seed=step), sample((32, 6), device=device, seed=50 + step)
        for m in (ours, theirs):
            m.zero_grad()
            torch.nn.functional.mse_loss(m(x), y).backward()
        totalnorm.clip_grad_norm_(ours.parameters(), 0.05, optimizer=oa)
        oa.step()
        torch.nn.utils.clip_grad_norm_(theirs.parameters(), 0.05)
        ob.step()
        for a, b in zip(ours.parameters(), theirs.parameters()):
            rel = ((a - b).abs().max() / b.abs().max()).item()
            worst = max(worst, rel)
    # Measured on this CPU: 7.5e-7 (Adam), 2.1e-7 (AdamW), 1.0e-7 (SGD); the contract says < 1e-6.
    assert worst < 1e-6, worst


# ----------------------------------------------------------------------------------------------
# Skipping


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bad", [math.nan, math.inf], ids=["nan", "inf"])
@pytest.mark.parametrize("with_scaler", [False, True], ids=["plain", "gradscaler"])
@pytest.mark.parametrize("first", [True, False], ids=["first_step", "later_step"])
def test_a_nonfinite_norm_skips_the_step_and_changes_nothing(device, kind, bad, with_scaler, first):
    (pa, oa), (pb, ob) = twins(kind, device)
    sa = make_scaler(device) if with_scaler else None
    sb = make_scaler(device) if with_scaler else None

    def step(params, opt, scaler, seed, bad=None, reference=False):
        set_grads(params, seed, scaler.get_scale() if scaler else 1.0, bad)
        if reference:
            if scaler:
                scaler.unscale_(opt)
            totalnorm.clip_grad_norm_(params, 0.5)
        else:
            totalnorm.clip_grad_norm_(params, 0.5, optimizer=opt, skip_nonfinite=True, scaler=scaler)
        if scaler:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()

    if not first:
        step(pa, oa, sa, 0)
        step(pb, ob, sb, 0, reference=True)
    before = [t.clone() for t in pa + state_tensors(oa, pa)]
    had_state = {id(p) for p in pa if p in oa.state}
    step(pa, oa, sa, 1, bad=bad)
    if first and kind != "sgd":
        # Adam creates its state before the kernel reads the flag (with GradScaler too):
        # zero moments and a zero step count, the same as no state.
        assert all(not t.any() for t in state_tensors(oa, pa))
    else:
        assert {id(p) for p in pa if p in oa.state} == had_state
        after = pa + state_tensors(oa, pa)
        assert len(after) == len(before)
        for a, b in zip(after, before):
            assert_bitwise_equal(a, b)
    for a, b in zip(pa, before):
        assert_bitwise_equal(a, b)
    assert not hasattr(oa, "grad_scale") and not hasattr(oa, "found_inf")
    if with_scaler:  # the scaler saw the overflow too: align the reference's scale
        sb.update(sa.get_scale())
    # The next finite step is the one the reference takes without the bad step.
    step(pa, oa, sa, 2)
    step(pb, ob, sb, 2, reference=True)
    for a, b in zip(pa + state_tensors(oa, pa), pb + state_tensors(ob, pb)):
        within_ulps(a, b, 4)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bad", [math.nan, math.inf], ids=["nan", "inf"])
def test_without_skip_a_nonfinite_norm_steps_like_totalnorm_clip(kind, bad):
    (pa, oa), (pb, ob) = twins(kind, "cpu")
    for step in range(2):
        set_grads(pa, step, bad=bad if step else None)
        set_grads(pb, step, bad=bad if step else None)
        totalnorm.clip_grad_norm_(pa, 0.5, optimizer=oa)
        oa.step()
        totalnorm.clip_grad_norm_(pb, 0.5)
        ob.step()
    for a, b in zip(pa + state_tensors(oa, pa), pb + state_tensors(ob, pb)):
        assert torch.equal(a.isnan(), b.isnan())
        torch.testing.assert_close(a, b, rtol=1e-6, atol=0, equal_nan=True)


def test_a_flag_already_set_is_read_as_exactly_one_and_put_back():
    # GradScaler sums its per-device flags, so two devices can give 2.0, which the kernel
    # would not skip on; a fold reads any non-zero flag as 1.0 and restores the original.
    (pa, oa), = twins("adam", "cpu", n=1)
    set_grads(pa, 0)
    oa.step()
    before = [t.clone() for t in pa + state_tensors(oa, pa)]
    set_grads(pa, 1)
    flag = torch.tensor(2.0)
    oa.found_inf = flag
    totalnorm.clip_grad_norm_(pa, 0.5, optimizer=oa)
    oa.step()
    for a, b in zip(pa + state_tensors(oa, pa), before):
        assert_bitwise_equal(a, b)
    assert oa.found_inf is flag and not hasattr(oa, "grad_scale")


# ----------------------------------------------------------------------------------------------
# One coefficient, one step


def test_the_coefficient_reaches_only_the_next_step_and_only_once():
    (pa, oa), (pb, ob) = twins("adamw", "cpu")
    set_grads(pa, 0)
    set_grads(pb, 0)
    totalnorm.clip_grad_norm_(pa, 0.5, optimizer=oa)
    totalnorm.clip_grad_norm_(pa, 0.5, optimizer=oa)  # replaces the first: not coef squared
    oa.step()
    totalnorm.clip_grad_norm_(pb, 0.5, optimizer=ob)
    ob.step()
    for a, b in zip(pa + state_tensors(oa, pa), pb + state_tensors(ob, pb)):
        assert_bitwise_equal(a, b)
    # A step without a clip is a plain step.
    set_grads(pa, 1)
    set_grads(pb, 1)
    oa.step()
    ob.step()
    for a, b in zip(pa + state_tensors(oa, pa), pb + state_tensors(ob, pb)):
        assert_bitwise_equal(a, b)
    assert not hasattr(oa, "grad_scale")


def test_a_step_that_raises_leaves_nothing_for_the_next_one():
    (pa, oa), (pb, ob) = twins("adam", "cpu")
    set_grads(pa, 0)
    totalnorm.clip_grad_norm_(pa, 0.5, optimizer=oa)  # installs totalnorm's hooks first
    boom = oa.register_step_pre_hook(lambda *a: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        oa.step()
    boom.remove()
    oa.step()  # the failed step took the fold: this one is plain
    set_grads(pb, 0)
    ob.step()
    for a, b in zip(pa, pb):
        assert_bitwise_equal(a, b)
    assert not hasattr(oa, "grad_scale")


def test_a_loss_scale_the_clip_was_not_told_of_is_an_error():
    (pa, oa), = twins("adam", "cpu", n=1)
    scaler = make_scaler("cpu")
    set_grads(pa, 0, scaler.get_scale())
    totalnorm.clip_grad_norm_(pa, 0.5, optimizer=oa)  # no scaler=
    with pytest.raises(RuntimeError, match="scaler="):
        scaler.step(oa)


# ----------------------------------------------------------------------------------------------
# Fallbacks and errors


@pytest.mark.parametrize("kind", KINDS)
def test_a_non_fused_optimizer_gets_scaled_gradients_like_the_plain_clip(kind):
    (pa, oa), (pb, ob) = twins(kind, "cpu", fused=(False, False))
    set_grads(pa, 0)
    set_grads(pb, 0)
    assert_bitwise_equal(totalnorm.clip_grad_norm_(pa, 0.5, optimizer=oa), totalnorm.clip_grad_norm_(pb, 0.5))
    for a, b in zip(pa, pb):
        assert_bitwise_equal(a.grad, b.grad)
    before = [p.grad.clone() for p in pa]
    with pytest.raises(ValueError, match="skip_nonfinite=True needs an optimizer .* host"):
        totalnorm.clip_grad_norm_(pa, 0.5, optimizer=oa, skip_nonfinite=True)
    for p, g in zip(pa, before):
        assert_bitwise_equal(p.grad, g)


def test_a_non_fused_optimizer_with_scaled_gradients_is_clipped_by_the_true_norm():
    (pa, oa), (pb, ob) = twins("adam", "cpu", fused=(False, False))
    sa, sb = make_scaler("cpu"), make_scaler("cpu")
    set_grads(pa, 0, sa.get_scale())
    set_grads(pb, 0, sb.get_scale())
    na = totalnorm.clip_grad_norm_(pa, 0.5, optimizer=oa, scaler=sa)
    sa.step(oa)
    sb.unscale_(ob)
    nb = totalnorm.clip_grad_norm_(pb, 0.5)
    sb.step(ob)
    assert_bitwise_equal(na, nb)
    for a, b in zip(pa, pb):
        within_ulps(a, b, 4)


def test_float64_gradients_are_scaled_in_place_and_still_skipped():
    (pa, oa), (pb, ob) = twins("adamw", "cpu", torch.float64)
    set_grads(pa, 0)
    set_grads(pb, 0)
    totalnorm.clip_grad_norm_(pa, 0.5, optimizer=oa, skip_nonfinite=True)
    oa.step()
    totalnorm.clip_grad_norm_(pb, 0.5)
    ob.step()
    for a, b in zip(pa + state_tensors(oa, pa), pb + state_tensors(ob, pb)):
        assert_bitwise_equal(a, b)
    before = [t.clone() for t in pa + state_tensors(oa, pa)]
    set_grads(pa, 1, bad=math.nan)
    totalnorm.clip_grad_norm_(pa, 0.5, optimizer=oa, skip_nonfinite=True)
    oa.step()
    for a, b in zip(pa + state_tensors(oa, pa), before):
        assert_bitwise_equal(a, b)


def test_errors_name_the_problem_and_change_nothing():
    (pa, oa), = twins("adam", "cpu", n=1)
    set_grads(pa, 0)
    before = [p.grad.clone() for p in pa]
    with pytest.raises(ValueError, match="pass optimizer="):
        totalnorm.clip_grad_norm_(pa, 0.5, skip_nonfinite=True)
    with pytest.raises(TypeError, match="torch.optim.Optimizer"):
        totalnorm.clip_grad_norm_(pa, 0.5, optimizer="adam")
    with pytest.raises(ValueError, match="stepped by the optimizer"):
        extra = torch.nn.Parameter(torch.ones(3))
        extra.grad = torch.ones(3)
        totalnorm.clip_grad_norm_(pa + [extra], 0.5, optimizer=oa)
    for p in pa[1:]:
        p.grad = None
    pa[1].grad = torch.ones(pa[1].shape)
    with pytest.raises(ValueError, match="not among the parameters clipped"):
        totalnorm.clip_grad_norm_(pa[:1], 0.5, optimizer=oa)
    pa[1].grad = None
    assert_bitwise_equal(pa[0].grad, before[0])
    assert "_totalnorm_pending" not in oa.__dict__ or oa._totalnorm_pending is None
    scaler = make_scaler("cpu")
    pa[0].grad = before[0] * scaler.get_scale()
    scaler.step(oa)
    with pytest.raises(RuntimeError, match="already called"):
        totalnorm.clip_grad_norm_(pa, 0.5, optimizer=oa, scaler=scaler)


# ----------------------------------------------------------------------------------------------
# torch.compile


@pytest.mark.parametrize("where", ["clip", "clip_and_step", "step"])
def test_under_torch_compile_the_same_bits_as_eager(where):
    (pa, oa), (pb, ob) = twins("adamw", "cpu")

    def clip(ps):
        return totalnorm.clip_grad_norm_(ps, 0.5, optimizer=oa, skip_nonfinite=True)

    def clip_and_step(ps):
        n = clip(ps)
        oa.step()
        return n

    compiled_clip = torch.compile(clip, backend="aot_eager")
    compiled_both = torch.compile(clip_and_step, backend="aot_eager")
    compiled_step = torch.compile(oa.step, backend="aot_eager")
    for step in range(3):
        set_grads(pa, step, bad=math.nan if step == 1 else None)
        set_grads(pb, step, bad=math.nan if step == 1 else None)
        if where == "clip":
            na = compiled_clip(pa)
            oa.step()
        elif where == "clip_and_step":
            na = compiled_both(pa)
        else:
            na = clip(pa)
            compiled_step()
        nb = totalnorm.clip_grad_norm_(pb, 0.5, optimizer=ob, skip_nonfinite=True)
        ob.step()
        assert_bitwise_equal(na, nb)
        for a, b in zip(pa + state_tensors(oa, pa), pb + state_tensors(ob, pb)):
            assert_bitwise_equal(a, b)


# ----------------------------------------------------------------------------------------------
# CUDA graphs (run on a GPU only)


@CUDA
def test_a_captured_clip_and_step_replays_like_eager():
    (pa, oa), (pb, ob) = twins("adamw", "cuda")
    for opt in (oa, ob):
        for g in opt.param_groups:
            g["capturable"] = True
    set_grads(pa, 0)
    set_grads(pb, 0)
    for params, opt in ((pa, oa), (pb, ob)):  # warm up: state exists before capture
        totalnorm.clip_grad_norm_(params, 0.5, optimizer=opt, skip_nonfinite=True)
        opt.step()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.stream(side), torch.cuda.graph(graph):
        totalnorm.clip_grad_norm_(pa, 0.5, optimizer=oa, skip_nonfinite=True)
        oa.step()
    torch.cuda.current_stream().wait_stream(side)
    # Capture records the work without running it; each replay is one clip and step.
    for seed in (1, 2):
        for j, (p, q) in enumerate(zip(pa, pb)):
            g = sample(p.shape, device="cuda", seed=seed * 100 + j)
            p.grad.copy_(g)
            q.grad = g.clone()
        graph.replay()
        totalnorm.clip_grad_norm_(pb, 0.5, optimizer=ob, skip_nonfinite=True)
        ob.step()
        torch.cuda.synchronize()
        for a, b in zip(pa + state_tensors(oa, pa), pb + state_tensors(ob, pb)):
            assert_bitwise_equal(a, b)


# ----------------------------------------------------------------------------------------------
# Across ranks: FSDP2 DTensor gradients, fused AdamW, 2 Gloo ranks


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="torch.distributed with Gloo is needed")
def test_fsdp2_with_fused_adamw_across_two_ranks():
    import dist_fused_scenarios as sc
    from rank_pool import RankPool

    ranks = RankPool(2)
    try:
        results = ranks.run(sc.fsdp2_fused_adamw, 5, 0.05, 2)
    finally:
        ranks.close()
    for r in results:
        assert r["skipped_equal"] is True  # rank 1's NaN made every rank skip
        assert not r["leftover"]
        assert r["worst_vs_torch"] < 1e-6, r["worst_vs_torch"]
        for a, b in zip(r["folded"], r["clipped"]):
            within_ulps(a, b, 4)
    for a, b in zip(results[0]["folded"], results[1]["folded"]):
        assert_bitwise_equal(a, b)
