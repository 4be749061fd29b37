"""float16 and bfloat16 inputs through the CPU's 16-bit loops (SPEC: accuracy, overflow, NaN).

The CPU widens 16-bit values to float64 for sums (p = 1, 2 by fused multiply-adds
whose products are exact) and computes max, min and the count of non-zeros on the
values' bits, without widening. These tests feed those loops every finite bit
pattern, the extremes (squares past the float32 range, subnormals whose squares
underflow float32), inf, NaN and signed zeros, at positions the vector loops read
(not only the scalar tail), and check the results against the exact reference
(reference_norm: exact squares, math.fsum) and across the portable and AVX2 loops.
"""
from __future__ import annotations

import math

import pytest
import torch
from reference import (
    INF,
    assert_same_bits_for_every_isa,
    check_value,
    dtype_id,
    order_id,
    reference_norm,
    sample,
)

import totalnorm

HALVES = [torch.float16, torch.bfloat16]
ORDERS = [0.0, 1.0, 2.0, 3.0, INF, -INF]
_INF_BITS = {torch.float16: 0x7C00, torch.bfloat16: 0x7F80}


def every_finite_value(dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    """Every finite bit pattern of a 16-bit dtype (both signs, zeros, subnormals), shuffled."""
    bits = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16)
    magnitude = bits.to(torch.int32) & 0x7FFF
    bits = bits[magnitude < _INF_BITS[dtype]]
    order = torch.randperm(bits.numel(), generator=torch.Generator().manual_seed(seed))
    return bits[order].view(dtype)


def check_both_results(tensors, p):
    """The float64 result and the default (16-bit) result, each against the exact reference."""
    want = reference_norm(tensors, p)
    check_value(totalnorm.total_norm(tensors, p, dtype=torch.float64), want, p)
    check_value(totalnorm.total_norm(tensors, p), want, p)


@pytest.mark.parametrize("p", ORDERS, ids=order_id)
@pytest.mark.parametrize("dtype", HALVES, ids=dtype_id)
def test_every_finite_bit_pattern(dtype, p):
    t = every_finite_value(dtype)
    want = reference_norm([t], p)
    check_value(totalnorm.total_norm([t], p, dtype=torch.float64), want, p)
    # A bfloat16 sum of squares overflows the bfloat16 result: check_value expects inf then.
    check_value(totalnorm.total_norm([t], p, dtype=torch.float32), want, p)


@pytest.mark.parametrize("p", ORDERS, ids=order_id)
@pytest.mark.parametrize(
    "dtype,value",
    [
        (torch.bfloat16, 3.3e38),  # square 1.1e77: far past float32, exact in float64
        (torch.bfloat16, 2.0**64),  # the first square that overflows float32
        (torch.bfloat16, 1e-30),  # square 1e-60: underflows float32 entirely
        (torch.bfloat16, 1e-40),  # a subnormal
        (torch.bfloat16, 9.2e-41),  # the smallest subnormal, 2^-133
        (torch.float16, 65504.0),  # the largest float16
        (torch.float16, 6e-8),  # the smallest subnormal, 2^-24
        (torch.float16, 6.1e-5),  # the smallest normal
    ],
    ids=lambda v: dtype_id(v) if isinstance(v, torch.dtype) else f"{v:g}",
)
def test_extreme_magnitudes(dtype, value, p):
    # Runs of the value mixed with ordinary ones, long enough for the vector loops.
    t = sample((4099,), dtype, seed=5)
    t[::3] = value
    t[1::7] = -value
    check_both_results([t], p)


@pytest.mark.parametrize("p", ORDERS + [0.5], ids=order_id)
@pytest.mark.parametrize("special", [math.inf, -math.inf, math.nan, 0.0, -0.0], ids=str)
@pytest.mark.parametrize("where", [0, 37, 4096 + 5, 9999])  # first, in a vector, a later run, the tail
@pytest.mark.parametrize("dtype", HALVES, ids=dtype_id)
def test_one_special_value(dtype, where, special, p):
    t = sample((10_000,), dtype, seed=7)
    t[where] = special
    if math.isnan(special) and p != 0:  # p = 0 counts NaN as non-zero
        assert math.isnan(totalnorm.total_norm([t], p).item())
        assert math.isnan(totalnorm.total_norm([t], p, dtype=torch.float64).item())
    else:
        check_both_results([t], p)


@pytest.mark.parametrize("p", [0.0, -INF], ids=order_id)
@pytest.mark.parametrize("dtype", HALVES, ids=dtype_id)
def test_zeros_and_negative_zeros(dtype, p):
    t = sample((70_001,), dtype, seed=9)
    t[::2] = 0.0
    t[1::4] = -0.0
    check_both_results([t], p)
    t[1::2] = -0.0
    check_both_results([t], p)  # all zeros: 0 for both orders


def _half_inputs():
    out = {}
    for dtype in HALVES:
        name = dtype_id(dtype)
        out[f"{name}-all"] = [every_finite_value(dtype, seed=1)]
        extreme = sample((5003,), dtype, seed=2)
        extreme[::5] = torch.finfo(dtype).max
        extreme[1::5] = torch.finfo(dtype).smallest_normal / 8  # subnormal
        out[f"{name}-extreme"] = [extreme]
        for special in (math.inf, math.nan):
            t = sample((1000,), dtype, seed=3)
            t[40] = special
            out[f"{name}-{special}"] = [t]
        zeros = sample((3000,), dtype, seed=4)
        zeros[::3] = -0.0
        out[f"{name}-zeros"] = [zeros]
    return out


def test_portable_and_avx2_agree_bitwise_on_16bit_inputs(tmp_path):
    assert_same_bits_for_every_isa(_half_inputs(), ORDERS + [0.5, -1.0], tmp_path)
