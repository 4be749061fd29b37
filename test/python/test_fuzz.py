"""Seeded property tests of the whole contract, and the contract breaks found and fixed.

Every case (fuzz_cases.py) is a pure function of its seed: a list of tensors with
mixed dtypes, shapes from 0-dim to empty to 140,000 elements, every layout docs/semantics.md
names (and byte-misaligned storage), values from subnormals to 1e30 with zeros, inf
and NaN, an order among 0, +-1, +-2, 0.5, 3, +-inf and random ones, and the ``dtype=``
and ``error_if_nonfinite`` arguments. total_norm cases are checked against the
exact float64 reference to the bounds of docs/semantics.md, with the result's dtype, device and
grad flag and the inputs left untouched; clip_grad_norm_ cases against
torch.nn.utils.clip_grad_norm_ bit for bit where the two norms are equal, and
against torch.nn.utils.clip_grads_with_norm_ given totalnorm's norm elsewhere.

The normal run checks 3,200 cases (2,400 total_norm, 800 clip) on the CPU and, with a
GPU, 400 of the same cases (300 total_norm, 100 clip) built on CUDA
(TOTALNORM_FUZZ_CUDA_CASES sets that count). The long mode:

    TOTALNORM_FUZZ_CASES=10000 python -m pytest -q test/python/test_fuzz.py
    TOTALNORM_FUZZ_SEED=100000 ...    # another stretch of seeds

Each failure prints the case and a one-line reproducer
(``python test/python/fuzz_cases.py [--clip] SEED``).

A contract break found here is asserted as it should be, under strict xfail, and
a ``known_*`` predicate in fuzz_cases.py keeps its cases from failing the fuzz
until the fix (which makes the xfail fail, XPASS) removes both. None is open now;
the tests below keep the ones found and fixed.
"""
from __future__ import annotations

import math
import os
from collections import Counter

import pytest
import torch
from fuzz_cases import (
    DTYPES,
    LAYOUTS,
    ORDERS,
    VALUE_KINDS,
    equal_bits_nan_any,
    make_case,
    params_with_grads,
    run_seeds,
)
from reference import bits, reference_norm

import totalnorm

CASES = int(os.environ.get("TOTALNORM_FUZZ_CASES", "3200"))
FIRST_SEED = int(os.environ.get("TOTALNORM_FUZZ_SEED", "0"))
NORM_CASES = CASES * 3 // 4
CLIP_CASES = CASES - NORM_CASES
CHUNK = 400


def _chunks(count: int) -> list:
    return [range(FIRST_SEED + lo, FIRST_SEED + min(lo + CHUNK, count)) for lo in range(0, count, CHUNK)]


def _seeds_id(seeds: range) -> str:
    return f"seeds{seeds.start}-{seeds.stop - 1}"


def _check_chunk(seeds: range, clip: bool) -> None:
    checked, known, failures = run_seeds(seeds, clip)
    assert not failures, f"{len(failures)} of {checked} cases failed:\n\n" + "\n\n".join(failures)


@pytest.mark.parametrize("seeds", _chunks(NORM_CASES), ids=_seeds_id)
def test_total_norm_fuzz(seeds):
    _check_chunk(seeds, clip=False)


@pytest.mark.parametrize("seeds", _chunks(CLIP_CASES), ids=_seeds_id)
def test_clip_grad_norm_fuzz(seeds):
    _check_chunk(seeds, clip=True)


# The seeded cases on the GPU, where one is present: the same tensors, values and layouts
# built on CUDA, checked against the same exact reference and, for clipping, against
# torch's own CUDA clip. Fewer of them: each case's reference runs on the CPU.
CUDA_CASES = int(os.environ.get("TOTALNORM_FUZZ_CUDA_CASES", "400"))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("clip", [False, True], ids=["total_norm", "clip_grad_norm_"])
def test_fuzz_cases_on_cuda(clip):
    count = CUDA_CASES // 4 if clip else CUDA_CASES - CUDA_CASES // 4
    checked, _, failures = run_seeds(range(FIRST_SEED, FIRST_SEED + count), clip, device="cuda")
    assert not failures, f"{len(failures)} of {checked} CUDA cases failed:\n\n" + "\n\n".join(failures)


def test_the_cases_cover_every_kind():
    """The generator, not the library: every dtype, layout, value kind and order shows up."""
    seen = Counter()
    for seed in range(FIRST_SEED, FIRST_SEED + NORM_CASES):
        case = make_case(seed)
        seen["order", case.p if case.p in ORDERS else "random"] += 1
        seen["dtype=", case.dtype] += 1
        seen["error_if_nonfinite", case.error_if_nonfinite] += 1
        seen["tensors", min(len(case.specs), 3)] += 1
        seen["mixed dtypes", len({s.dtype for s in case.specs}) >= 3] += 1
        for s in case.specs:
            seen["dtype", s.dtype] += 1
            seen["layout", s.layout] += 1
            seen["values", s.values] += 1
    wanted = ([("dtype", d) for d in DTYPES] + [("layout", lay) for lay in LAYOUTS]
              + [("values", v) for v in VALUE_KINDS] + [("order", p) for p in ORDERS]
              + [("dtype=", d) for d in (None, torch.float16, torch.bfloat16, torch.float32, torch.float64)]
              + [("error_if_nonfinite", True), ("tensors", 0), ("tensors", 3), ("mixed dtypes", True)])
    missing = [w for w in wanted if seen[w] < 5]
    assert not missing, f"fewer than 5 cases of {missing}"


def test_a_failure_names_a_reproducer():
    case = make_case(7, clip=True)
    assert case.reproducer().endswith("fuzz_cases.py --clip 7")
    assert "clip_grad_norm_(grads" in case.describe()


# --- Known contract breaks: assert the contract, expect the failure until it is fixed.

FLOAT64_DRIFT = {
    # (a) from the lead: float64 results of a general p over many equal values.
    "float64_p3_131075": (lambda: torch.full((131075,), 1.1, dtype=torch.float64), 3.0, None),
    "float64_p0.5_5000": (lambda: torch.full((5000,), 1.1, dtype=torch.float64), 0.5, None),
    "float64_p-1_20000": (lambda: torch.full((20000,), 1.1, dtype=torch.float64), -1.0, None),
    "float32_as_float64_p0.5": (lambda: torch.full((20000,), 7.7), 0.5, torch.float64),
    # complex, p != 2: one sequential chain of |z| terms.
    "complex128_p1_20000": (lambda: torch.full((20000,), 1.1 + 0.3j, dtype=torch.complex128), 1.0, None),
    "complex128_p3_131075": (lambda: torch.full((131075,), 1.1 + 0.3j, dtype=torch.complex128), 3.0, None),
    # random values, p = -0.37: the sum's drift over 98,811 complex64
    # elements (6e-14), times 1/|p| in the final power.
    "fuzz_seed_106759": (lambda: make_case(106759).tensors(), -0.371942, None),
    # complex p = 2 too (1.03e-13), where a block sums 2 x 65,536 parts of one value.
    "complex64_p2_as_float64_300000": (lambda: torch.full((300000,), complex(1e-20, 1e-20 / 3), dtype=torch.complex64),
                                       2.0, torch.float64),
}


@pytest.mark.parametrize("name", list(FLOAT64_DRIFT))
def test_float64_results_keep_1e_13_over_long_sums(name):
    make, p, dtype = FLOAT64_DRIFT[name]
    tensors = make()
    tensors = [tensors] if isinstance(tensors, torch.Tensor) else [t.detach().resolve_neg() for t in tensors]
    got = totalnorm.total_norm(tensors, p, dtype=dtype)
    want = reference_norm(tensors, p)
    assert abs(got.item() - want) <= 1e-13 * want, f"rel {abs(got.item() - want) / want:.3g}"


@pytest.mark.parametrize("order", ["cpu_then_meta", "meta_then_cpu"])
def test_mixing_cpu_and_meta_tensors_is_rejected_naming_the_index(order):
    cpu, meta = torch.ones(3), torch.ones(2, device="meta")
    tensors = [cpu, meta] if order == "cpu_then_meta" else [meta, cpu]
    with pytest.raises((RuntimeError, TypeError), match=r"tensors\[1\]"):
        totalnorm.total_norm(tensors)
    with pytest.raises((RuntimeError, TypeError), match=r"grads\[1\]"):
        torch.ops.totalnorm.clip_grad_norm_.default(tensors, 0.1, 2.0, False)
    assert torch.equal(cpu, torch.ones(3))


@pytest.mark.parametrize("api", ["op", "parameters"])
def test_a_rejected_clip_changes_nothing(api):
    base = torch.arange(6.0)
    grads = [base[::2], torch.ones(2).expand(3, 2)]
    before = [(bits(base).clone(), base._version), (bits(grads[1]).clone(), grads[1]._version)]
    with pytest.raises(RuntimeError):
        if api == "op":
            torch.ops.totalnorm.clip_grad_norm_.default(grads, 0.1, 2.0, False)
        else:
            totalnorm.clip_grad_norm_(params_with_grads(grads), 0.1)
    for t, (old, version) in zip([base, grads[1]], before):
        assert torch.equal(bits(t), old), "a rejected clip modified a gradient"
        assert t._version == version


CLIP_LIKE_TORCH = {
    # torch multiplies a 0-dim grad by a 0-dim float64 coefficient in float64.
    "0dim_float32_float64_norm": lambda: [torch.tensor(1.9186942279338837, dtype=torch.float32),
                                          torch.tensor([1.2637947797775269], dtype=torch.float64)],
    # an inf part and coefficient 0 give nan+nanj in torch's complex product.
    "complex_inf_part_coef0": lambda: [torch.tensor([complex(math.inf, 1.0), 1 + 0j, complex(0.0, math.inf)],
                                                    dtype=torch.complex64)],
    # torch's complex product (re*c - im*0, re*0 + im*c) turns -0 parts into +0.
    "complex_signed_zero_parts": lambda: [torch.tensor([complex(-0.0, -1.0), complex(1.0, -0.0), 3 + 4j],
                                                       dtype=torch.complex64)],
    # coefficient 0 (an inf elsewhere) gives +0 parts in torch, -0 parts here.
    "complex_finite_coef0": lambda: [torch.tensor([-1 - 1j, 2 - 3j], dtype=torch.complex64),
                                     torch.tensor([math.inf])],
    # with p = -inf the coefficient is finite and non-zero; torch gives inf+nanj.
    "complex_inf_part_finite_coef": lambda: [torch.tensor([complex(math.inf, 2.0), 3 + 4j], dtype=torch.complex64)],
}


@pytest.mark.parametrize("name", list(CLIP_LIKE_TORCH))
def test_clip_equals_torch_bit_for_bit(name):
    p = -math.inf if name == "complex_inf_part_finite_coef" else 2.0
    ours, theirs = CLIP_LIKE_TORCH[name](), CLIP_LIKE_TORCH[name]()
    n_ours = totalnorm.clip_grad_norm_(params_with_grads(ours), 0.7, p)
    n_theirs = torch.nn.utils.clip_grad_norm_(params_with_grads(theirs), 0.7, p)
    assert equal_bits_nan_any(n_ours, n_theirs)  # the premise: the same norm
    for i, (a, b) in enumerate(zip(ours, theirs)):
        assert torch.equal(a.isnan(), b.isnan()), f"grads[{i}]: NaN where torch has none, or none where it has"
        assert equal_bits_nan_any(a, b), f"grads[{i}]: {a} vs torch {b}"


BAD_NORM_TYPES = {
    "total_norm_None": lambda: totalnorm.total_norm([torch.ones(3)], None),
    "total_norm_complex": lambda: totalnorm.total_norm([torch.ones(3)], 2 + 1j),
    "total_norm_empty_list_None": lambda: totalnorm.total_norm([], None),
    "get_total_norm_None": lambda: totalnorm.get_total_norm(params_with_grads([torch.ones(3)]), None),
    "clip_grad_norm_None": lambda: totalnorm.clip_grad_norm_(params_with_grads([torch.ones(3)]), 1.0, None),
    "clip_grad_norm_complex": lambda: totalnorm.clip_grad_norm_(params_with_grads([torch.ones(3)]), 1.0, 1j),
}


@pytest.mark.parametrize("name", list(BAD_NORM_TYPES))
def test_a_bad_norm_type_is_named(name):
    with pytest.raises((TypeError, RuntimeError, ValueError), match="norm_type"):
        BAD_NORM_TYPES[name]()
