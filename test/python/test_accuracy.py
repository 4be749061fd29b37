"""Accuracy at scale, against exactly computed values (docs/semantics.md: "Accuracy", "Determinism").

float32 results must be within 1 ulp of the *exactly rounded* value for p in
{0, 1, 2, inf, -inf}. The exact value of sum |x| and sum x^2 over 1e8 float32
elements is computed here with integer arithmetic, not with another floating-point
sum: every float32 |x| is M * 2^(e-24) with an integer M < 2^24, so x^2 is M^2 *
2^(2e-48) with M^2 < 2^48. Grouping the elements by exponent e and adding the
integers M (and the 24-bit halves of M^2) per group with np.bincount is exact, as
long as a group's total stays below 2^53 (it is below 2^24 * 1e6 = 2^44 per
tensor). The groups are then combined as Python integers / Fractions. The float32
nearest to sqrt(S) is found without any rounding either: a float32 candidate r is
correct iff S lies between the squares of the midpoints to its neighbours, and a
midpoint of two float32 values and its square are exact Fractions.
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from reference import INF, check_value, reference_norm, ulp_distance

import totalnorm

pytestmark = pytest.mark.slow

TENSORS = 100
ELEMENTS = 1_000_000  # 1e8 elements, 400 MB of float32


class ExactSums:
    """Exact sum |x|, sum x^2, count of non-zeros and max |x| of float32 values."""

    def __init__(self) -> None:
        self.abs_by_exp: dict[int, int] = {}
        self.sq_by_exp: dict[int, int] = {}
        self.nonzero = 0
        self.max_abs = 0.0
        self.min_abs = math.inf

    def add(self, t: torch.Tensor) -> None:
        a = np.abs(t.detach().cpu().to(torch.float32).numpy().reshape(-1))
        self.nonzero += int(np.count_nonzero(a))
        self.max_abs = max(self.max_abs, float(a.max()))
        self.min_abs = min(self.min_abs, float(a.min()))
        m, e = np.frexp(a)  # a = m * 2^e, m in [0.5, 1) (0 for a zero)
        big_m = (m.astype(np.float64) * 2.0**24).astype(np.int64)  # a = M * 2^(e - 24), M < 2^24
        e = e.astype(np.int64)
        e0 = int(e.min())
        idx = e - e0
        sq = big_m * big_m  # < 2^48
        sums = {
            "abs": np.bincount(idx, weights=big_m.astype(np.float64)),
            "hi": np.bincount(idx, weights=(sq >> 24).astype(np.float64)),
            "lo": np.bincount(idx, weights=(sq & ((1 << 24) - 1)).astype(np.float64)),
        }
        for k in range(len(sums["abs"])):
            exp = k + e0
            s_abs = int(sums["abs"][k])
            if s_abs:
                self.abs_by_exp[exp - 24] = self.abs_by_exp.get(exp - 24, 0) + s_abs
                s_sq = (int(sums["hi"][k]) << 24) + int(sums["lo"][k])
                self.sq_by_exp[2 * exp - 48] = self.sq_by_exp.get(2 * exp - 48, 0) + s_sq

    @staticmethod
    def _value(by_exp: dict[int, int]) -> Fraction:
        return sum((Fraction(v) * Fraction(2) ** k for k, v in by_exp.items()), Fraction(0))

    @property
    def sum_abs(self) -> Fraction:
        return self._value(self.abs_by_exp)

    @property
    def sum_squares(self) -> Fraction:
        return self._value(self.sq_by_exp)


def nearest_float32(sign_minus, approx: float) -> np.float32:
    """The float32 nearest to an exact value v (ties to even), where sign_minus(m)
    returns the sign of v - m exactly for a non-negative Fraction m."""
    r = np.float32(approx)
    up, down = np.float32(np.inf), np.float32(0)
    for _ in range(8):
        hi, lo = np.nextafter(r, up), np.nextafter(r, down)
        odd = int(np.array(r).view(np.int32)) & 1
        s_hi = sign_minus((Fraction(float(r)) + Fraction(float(hi))) / 2)
        if s_hi > 0 or (s_hi == 0 and odd):
            r = hi
            continue
        s_lo = sign_minus((Fraction(float(r)) + Fraction(float(lo))) / 2)
        if s_lo < 0 or (s_lo == 0 and odd):
            r = lo
            continue
        return r
    raise AssertionError("the approximation was more than a few ulps off")


def sign(x: Fraction) -> int:
    return (x > 0) - (x < 0)


def exactly_rounded_sqrt(s: Fraction) -> np.float32:
    return nearest_float32(lambda m: sign(s - m * m), math.sqrt(float(s)))


def exactly_rounded(v: Fraction) -> np.float32:
    return nearest_float32(lambda m: sign(v - m), float(v))


def _draw(count, n, seed, dtype=torch.float32):
    """Seeded float32 values with a spread of magnitudes: a per-tensor scale from
    2^-20 to 2^20 times a log-normal factor per element, and some exact zeros."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(count):
        scale = 2.0 ** int(torch.randint(-20, 21, (1,), generator=g))
        t = torch.randn(n, generator=g)
        t.mul_(torch.randn(n, generator=g).mul_(2.0).exp_()).mul_(scale)
        t[i % 997 :: 1000] = 0
        out.append(t.to(dtype))
    return out


@pytest.fixture(scope="module")
def big_float32():
    tensors = _draw(TENSORS, ELEMENTS, seed=2024)
    exact = ExactSums()
    for t in tensors:
        exact.add(t)
    return tensors, exact


def _on(device, tensors):
    return tensors if device == "cpu" else [t.to(device) for t in tensors]


def _assert_within_one_ulp(got: torch.Tensor, exact_rounded: np.float32, what: str) -> None:
    want = torch.tensor(float(exact_rounded), dtype=torch.float32)
    assert got.dtype == torch.float32
    d = ulp_distance(got, want)
    assert d <= 1, f"{what}: got {got.item()!r}, exactly rounded {float(exact_rounded)!r}, {d} ulps apart"


def test_1e8_float32_p2_within_one_ulp(device, big_float32):
    tensors, exact = big_float32
    assert sum(t.numel() for t in tensors) >= 10**8
    got = totalnorm.total_norm(_on(device, tensors), 2.0).cpu()
    _assert_within_one_ulp(got, exactly_rounded_sqrt(exact.sum_squares), "p=2")
    # The float64 result of the same accumulation: relative error <= 1e-13.
    got64 = totalnorm.total_norm(_on(device, tensors), 2.0, dtype=torch.float64).item()
    exact64 = math.sqrt(exact.sum_squares)  # Fraction -> float: one rounding, then sqrt
    assert abs(got64 - exact64) <= 1e-13 * exact64, (got64, exact64)


def test_1e8_float32_p1_within_one_ulp(device, big_float32):
    tensors, exact = big_float32
    got = totalnorm.total_norm(_on(device, tensors), 1.0).cpu()
    _assert_within_one_ulp(got, exactly_rounded(exact.sum_abs), "p=1")
    got64 = totalnorm.total_norm(_on(device, tensors), 1.0, dtype=torch.float64).item()
    assert abs(got64 - float(exact.sum_abs)) <= 1e-13 * float(exact.sum_abs)


def test_1e8_float32_p_inf_p0_and_minus_inf_are_exact(device, big_float32):
    tensors, exact = big_float32
    on = _on(device, tensors)
    # max and min involve no rounding; the count of non-zeros is rounded once.
    assert totalnorm.total_norm(on, INF).item() == exact.max_abs
    assert totalnorm.total_norm(on, -INF).item() == exact.min_abs == 0.0
    _assert_within_one_ulp(totalnorm.total_norm(on, 0.0).cpu(), exactly_rounded(Fraction(exact.nonzero)), "p=0")
    assert totalnorm.total_norm(on, 0.0, dtype=torch.float64).item() == exact.nonzero


def test_half_precision_inputs_float32_result_within_one_ulp(device):
    # docs/semantics.md (Accuracy): float16/bfloat16 inputs, float32 result (here by promotion f16 + bf16).
    halves = _draw(5, 1_000_000, seed=7, dtype=torch.bfloat16)
    # float16 holds far less range: keep these near 1 so nothing saturates.
    g = torch.Generator().manual_seed(8)
    halves += [torch.randn(1_000_000, generator=g).mul_(100).to(torch.float16) for _ in range(5)]
    exact = ExactSums()
    for t in halves:
        exact.add(t)
    on = _on(device, halves)
    got2 = totalnorm.total_norm(on, 2.0).cpu()
    got1 = totalnorm.total_norm(on, 1.0).cpu()
    _assert_within_one_ulp(got2, exactly_rounded_sqrt(exact.sum_squares), "p=2")
    _assert_within_one_ulp(got1, exactly_rounded(exact.sum_abs), "p=1")
    assert totalnorm.total_norm(on, INF).item() == exact.max_abs


@pytest.fixture(scope="module")
def ten_million_float32():
    return _draw(10, 1_000_000, seed=11)


@pytest.mark.parametrize("p", [3.0, 0.5, 1.5, -1.0], ids=lambda p: f"p={p:g}")
def test_general_orders_float32_relative_error(device, p, ten_million_float32):
    # 1e7 elements; the reference sums the float64 terms |x|^p exactly rounded (fsum).
    tensors = ten_million_float32
    if p < 0:
        tensors = [t[t != 0] for t in tensors]  # a zero would make the norm exactly 0
    got = totalnorm.total_norm(_on(device, tensors), p)
    check_value(got.cpu(), reference_norm(tensors, p), p)  # rel <= 1e-6 (docs/semantics.md, Accuracy)


@pytest.mark.parametrize("p", [1.0, 2.0, 3.0, 0.5], ids=lambda p: f"p={p:g}")
def test_float64_relative_error(device, p):
    g = torch.Generator().manual_seed(12)
    tensors = [torch.randn(1_000_000, generator=g, dtype=torch.float64)
               * torch.randn(1_000_000, generator=g, dtype=torch.float64).mul_(4).exp_() for _ in range(5)]
    got = totalnorm.total_norm(_on(device, tensors), p).item()
    want = reference_norm(tensors, p)  # fsum of float64 terms: ~1e-16 relative
    assert abs(got - want) <= 1e-13 * want, (got, want)


def test_exact_machinery_on_small_known_cases():
    """The exact sums and rounding used above, on values whose answers are known."""
    t = torch.tensor([3.0, -4.0, 0.0, 2.0**-140, 1e30], dtype=torch.float32)
    exact = ExactSums()
    exact.add(t)
    values = [Fraction(float(x)) for x in t]
    assert exact.sum_abs == sum(abs(v) for v in values)
    assert exact.sum_squares == sum(v * v for v in values)
    assert exact.nonzero == 4
    assert exactly_rounded_sqrt(Fraction(25)) == np.float32(5.0)
    assert exactly_rounded_sqrt(Fraction(2)) == np.float32(math.sqrt(2))
    one = np.float32(1.0)
    mid = (Fraction(1) + Fraction(float(np.nextafter(one, np.float32(2))))) / 2
    assert exactly_rounded(mid) == one  # tie: to even
    assert exactly_rounded(mid + Fraction(1, 2**60)) == np.nextafter(one, np.float32(2))
    assert exactly_rounded(Fraction(10**8 + 3)) == np.float32(10**8)
