"""totalnorm.get_total_norm: the API over parameters' gradients (docs/semantics.md, Parameters and clipping)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from reference import INF, assert_bitwise_equal, assert_norm, assert_unchanged, order_id, sample, snapshot

import totalnorm


class Tiny(torch.nn.Module):
    """The model of examples/seed_example.py."""

    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(8, 16)
        self.fc2 = torch.nn.Linear(16, 4)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x)))


def trained_tiny(device, dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    model = Tiny().to(device=device, dtype=dtype)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(32, 8, generator=g).to(device=device, dtype=dtype)
    y = torch.randint(0, 4, (32,), generator=g).to(device)
    F.cross_entropy(model(x), y).backward()
    return model


def grads_of(model):
    return [p.grad for p in model.parameters() if p.grad is not None]


@pytest.mark.parametrize("p", [1.0, 2.0, 3.0, INF, 0.5, -INF], ids=order_id)
def test_seed_example_matches_torch(device, p):
    model = trained_tiny(device)
    grads = grads_of(model)
    assert len(grads) == 4
    before = snapshot(grads)
    got = totalnorm.get_total_norm(model.parameters(), norm_type=p)
    assert_norm(got, grads, p)
    theirs = torch.nn.utils.get_total_norm(grads, p)
    # torch rounds each per-tensor norm to float32 before combining: a few ulps.
    torch.testing.assert_close(got, theirs, rtol=1e-5, atol=0)
    assert_unchanged(grads, before)  # docs/semantics.md: gradients are not modified


def test_seed_example_default_order_is_2(device):
    model = trained_tiny(device)
    assert_bitwise_equal(totalnorm.get_total_norm(model.parameters()),
                         totalnorm.total_norm(grads_of(model), 2.0))


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16], ids=str)
def test_seed_example_in_other_dtypes(device, dtype):
    model = trained_tiny(device, dtype)
    got = totalnorm.get_total_norm(model.parameters())
    assert got.dtype == dtype
    assert_norm(got, grads_of(model), 2.0)


def test_generator_is_consumed_once(device):
    model = trained_tiny(device)
    consumed = []

    def params():
        for p in model.parameters():
            consumed.append(p)
            yield p

    got = totalnorm.get_total_norm(params(), 2.0)
    assert len(consumed) == 4  # every parameter read, none twice
    assert_norm(got, grads_of(model), 2.0)


def test_single_tensor_parameter(device):
    w = torch.nn.Parameter(sample((5, 6), device=device))
    w.grad = sample((5, 6), device=device, seed=1)
    got = totalnorm.get_total_norm(w, 3.0)
    assert_norm(got, [w.grad], 3.0)
    # The norm is of the gradient, not of the parameter.
    assert got.item() != totalnorm.total_norm(w.detach(), 3.0).item()


def test_parameters_without_grad_are_skipped(device):
    model = trained_tiny(device)
    model.fc1.bias.grad = None
    params = list(model.parameters())
    grads = [p.grad for p in params if p.grad is not None]
    assert len(grads) == 3
    for p in (1.0, 2.0, INF):
        assert_norm(totalnorm.get_total_norm(params, p), grads, p)
    # The first parameter without grad: the result is still on the first grad's device.
    model.fc1.weight.grad = None
    assert_norm(totalnorm.get_total_norm(model.parameters()), grads_of(model), 2.0)


def test_no_parameters_gives_cpu_zero():
    for params in ([], iter([]), (p for p in [])):
        got = totalnorm.get_total_norm(params)
        assert got.device.type == "cpu" and got.dtype == torch.get_default_dtype() and got.shape == ()
        assert got.item() == 0.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize("p", [2.0, INF, -INF, 0.0], ids=order_id)
def test_parameters_without_any_grad_give_zero_on_the_first_parameters_device(device, dtype, p):
    params = [torch.nn.Parameter(torch.ones(3, dtype=dtype, device=device)),
              torch.nn.Parameter(torch.ones(2, dtype=torch.float32, device=device))]
    got = totalnorm.get_total_norm(params, p)
    assert got.device == params[0].device and got.dtype == dtype and got.shape == ()
    assert got.item() == 0.0 and not got.requires_grad


def test_no_grads_still_checks_the_order(device):
    params = [torch.nn.Parameter(torch.ones(3, device=device))]
    with pytest.raises(RuntimeError, match="norm_type must not be NaN"):
        totalnorm.get_total_norm(params, math.nan)


def test_error_if_nonfinite_is_passed_on(device):
    model = trained_tiny(device)
    model.fc2.weight.grad[0, 0] = math.nan
    with pytest.raises(RuntimeError, match="order 2"):
        totalnorm.get_total_norm(model.parameters(), 2.0, error_if_nonfinite=True)
    assert math.isnan(totalnorm.get_total_norm(model.parameters(), 2.0).item())


def test_grads_requiring_grad_give_a_result_without_grad(device):
    # create_graph=True leaves grads that require grad; the norm still does not.
    model = trained_tiny(device)
    x = sample((4, 8), device=device)
    model.zero_grad(set_to_none=True)
    y = model(x).pow(2).sum()
    gs = torch.autograd.grad(y, list(model.parameters()), create_graph=True)
    for p, g in zip(model.parameters(), gs):
        p.grad = g
    assert all(g.requires_grad for g in gs)
    got = totalnorm.get_total_norm(model.parameters())
    assert not got.requires_grad
    assert_norm(got, [g.detach() for g in gs], 2.0)


def test_non_tensor_parameters_are_rejected_naming_the_index():
    with pytest.raises(TypeError, match=r"get_total_norm: parameters\[1\] is a str"):
        totalnorm.get_total_norm([torch.nn.Parameter(torch.ones(2)), "weight"])


def test_the_seed_example_prints_the_exact_value_beside_both():
    import re
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "examples" / "seed_example.py"
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                         cwd=script.parent)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "rounds once" in run.stdout  # the one line that says why they differ
    rows = re.findall(r"L(\S+): exact (\S+)  totalnorm (\S+)  torch (\S+)", run.stdout)
    assert [r[0] for r in rows] == ["2", "1", "inf"]
    for _, exact, ours, theirs in rows:
        assert math.isclose(float(ours), float(exact), rel_tol=2.4e-7)
        assert math.isclose(float(theirs), float(exact), rel_tol=1e-6)
