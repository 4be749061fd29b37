"""Rejections: each names what was wrong and where, and changes nothing (docs/semantics.md, Errors)."""
from __future__ import annotations

import math
import warnings

import pytest
import torch
from reference import assert_unchanged, sample, snapshot

import totalnorm

BAD = (RuntimeError, TypeError)  # docs/semantics.md (Errors): each names the offending index


def _quiet(make):
    """Quantized and sparse CSR creation warn (deprecation, beta state): not our concern."""
    def quiet(device):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return make(device)
    return quiet


BAD_TENSORS = {
    "int32": (lambda d: torch.ones(2, dtype=torch.int32, device=d), r"has dtype Int\b"),
    "int64": (lambda d: torch.ones(2, dtype=torch.int64, device=d), r"has dtype Long\b"),
    "uint8": (lambda d: torch.ones(2, dtype=torch.uint8, device=d), r"has dtype Byte\b"),
    "bool": (lambda d: torch.ones(2, dtype=torch.bool, device=d), r"has dtype Bool\b"),
    "sparse_coo": (lambda d: torch.ones(2, 2, device=d).to_sparse(), r"has layout Sparse\b"),
    "sparse_csr": (_quiet(lambda d: torch.eye(3, device=d).to_sparse_csr()), r"has layout SparseCsr\b"),
    "quantized": (_quiet(lambda d: torch.quantize_per_tensor(torch.ones(3), 0.1, 0, torch.quint8)),
                  r"has dtype QUInt8\b"),
}


@pytest.mark.parametrize("kind", list(BAD_TENSORS))
@pytest.mark.parametrize("index", [0, 1, 2])
def test_bad_tensor_is_rejected_naming_its_index(device, kind, index):
    make, what = BAD_TENSORS[kind]
    if kind == "quantized" and device != "cpu":
        pytest.skip("quantized tensors are made on the CPU")
    tensors = [sample((4,), device=device, seed=i) for i in range(3)]
    tensors[index] = make(device)
    with pytest.raises(BAD, match=rf"total_norm: tensors\[{index}\] {what}"):
        totalnorm.total_norm(tensors)
    with pytest.raises(BAD, match=rf"total_norm: tensors\[{index}\] {what}"):
        torch.ops.totalnorm.total_norm.default(tensors, 2.0, False, None)


def test_integer_dtype_message_names_the_accepted_dtypes(device):
    tensors = [sample((2,), device=device), torch.ones(2, dtype=torch.int32, device=device)]
    with pytest.raises(BAD) as info:
        totalnorm.total_norm(tensors)
    msg = str(info.value)
    assert "tensors[1] has dtype Int" in msg
    for accepted in ("float16", "bfloat16", "float32", "float64", "complex64", "complex128"):
        assert accepted in msg


def test_layout_message_says_what_is_accepted(device):
    with pytest.raises(BAD, match=r"tensors\[0\] has layout Sparse.*dense \(strided\)"):
        totalnorm.total_norm([torch.ones(3, device=device).to_sparse()])


def test_the_first_bad_index_is_named(device):
    tensors = [sample((2,), device=device), sample((2,), device=device),
               torch.ones(2, dtype=torch.int32, device=device), torch.ones(2, dtype=torch.bool, device=device)]
    with pytest.raises(BAD, match=r"tensors\[2\] has dtype Int"):
        totalnorm.total_norm(tensors)


@pytest.mark.parametrize("tensors", [[], "one"], ids=["empty_list", "one_tensor"])
def test_nan_norm_type_is_rejected(device, tensors):
    tensors = [] if tensors == [] else [sample((3,), device=device)]
    with pytest.raises(RuntimeError, match="total_norm: norm_type must not be NaN"):
        totalnorm.total_norm(tensors, math.nan)
    with pytest.raises(RuntimeError, match="norm_type must not be NaN"):
        torch.ops.totalnorm.total_norm.default(tensors, math.nan, False, None)


@pytest.mark.parametrize("dtype,name", [(torch.int32, "Int"), (torch.int64, "Long"), (torch.bool, "Bool"),
                                        (torch.complex64, "ComplexFloat"), (torch.complex128, "ComplexDouble")])
def test_non_floating_result_dtype_is_rejected(device, dtype, name):
    with pytest.raises(BAD, match=rf"total_norm: dtype must be a floating dtype.*got {name}$"):
        totalnorm.total_norm([sample((3,), device=device)], dtype=dtype)
    with pytest.raises(BAD, match=rf"dtype must be a floating dtype.*got {name}$"):
        totalnorm.total_norm([], dtype=dtype)


@pytest.mark.parametrize("bad,name", [(3, "int"), (None, "NoneType"), ([1.0], "list"), (2.5, "float")])
def test_non_tensor_entries_raise_type_error_naming_the_index(bad, name):
    tensors = [torch.ones(2), torch.ones(3), bad]
    with pytest.raises(TypeError, match=rf"total_norm: tensors\[2\] is a {name}, not a Tensor"):
        totalnorm.total_norm(tensors)
    params = [torch.nn.Parameter(torch.ones(2)), bad]
    with pytest.raises(TypeError, match=rf"clip_grad_norm_: parameters\[1\] is a {name}"):
        totalnorm.clip_grad_norm_(params, 1.0)


def test_clip_grad_norm_rejections_name_the_gradient_index(device):
    grads = [sample((3,), device=device), torch.ones(3, dtype=torch.int64, device=device)]
    with pytest.raises(BAD, match=r"clip_grad_norm_: grads\[1\] has dtype Long"):
        torch.ops.totalnorm.clip_grad_norm_.default(grads, 1.0, 2.0, False)
    with pytest.raises(RuntimeError, match="clip_grad_norm_: norm_type must not be NaN"):
        torch.ops.totalnorm.clip_grad_norm_.default(grads[:1], 1.0, math.nan, False)


def test_rejected_calls_change_nothing(device):
    good = [sample((1000,), device=device, seed=1), sample((7, 9), device=device, seed=2).t()]
    before = snapshot(good)
    for args in [
        (good + [torch.ones(2, dtype=torch.int32, device=device)], 0.01, 2.0, False),
        (good + [torch.ones(2, device=device).to_sparse()], 0.01, 2.0, False),
        (good, 0.01, math.nan, False),
    ]:
        with pytest.raises(BAD):
            torch.ops.totalnorm.clip_grad_norm_.default(*args)
        assert_unchanged(good, before)
    with pytest.raises(BAD):
        totalnorm.total_norm(good + [torch.ones(2, dtype=torch.bool, device=device)])
    assert_unchanged(good, before)


def test_rejected_clip_through_parameters_changes_nothing(device):
    params = [torch.nn.Parameter(sample((5,), device=device)) for _ in range(2)]
    for i, p in enumerate(params):
        p.grad = sample((5,), device=device, seed=10 + i)
    before = snapshot([p.grad for p in params])
    with pytest.raises(TypeError):
        totalnorm.clip_grad_norm_(params + [object()], 1e-3)
    with pytest.raises(RuntimeError):
        totalnorm.clip_grad_norm_(params, 1e-3, norm_type=math.nan)
    assert_unchanged([p.grad for p in params], before)


@pytest.mark.parametrize("kind", ["int32", "bool"])
def test_meta_tensors_are_checked_like_real_ones(kind):
    # The Meta kernel (what torch.compile/export run) checks the arguments the same way.
    make, what = BAD_TENSORS[kind]
    bad = make("cpu").to("meta")
    tensors = [torch.empty(3, device="meta"), bad]
    with pytest.raises(BAD, match=rf"tensors\[1\] {what}"):
        totalnorm.total_norm(tensors)
    with pytest.raises(RuntimeError, match="norm_type must not be NaN"):
        totalnorm.total_norm([torch.empty(3, device="meta")], math.nan)


def test_meta_tensors_give_a_0dim_result_of_the_right_dtype():
    got = totalnorm.total_norm([torch.empty(3, dtype=torch.bfloat16, device="meta"),
                                torch.empty(2, 2, dtype=torch.float16, device="meta")])
    assert got.device.type == "meta" and got.shape == () and got.dtype == torch.float32
    assert totalnorm.total_norm([torch.empty(3, device="meta")], dtype=torch.float64).dtype == torch.float64
    assert totalnorm.total_norm([torch.empty(3, dtype=torch.complex64, device="meta")]).dtype == torch.float32
