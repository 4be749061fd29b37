"""totalnorm.total_norm against the float64 reference of docs/semantics.md, on every device."""
from __future__ import annotations

import math
import re

import pytest
import torch
from reference import (
    ALL_DTYPES,
    INF,
    ORDERS,
    assert_bitwise_equal,
    assert_norm,
    assert_same_bits_for_every_isa,
    assert_unchanged,
    bits,
    check_value,
    dtype_id,
    order_id,
    reference_norm,
    sample,
    snapshot,
)

import totalnorm

orders = pytest.mark.parametrize("p", ORDERS, ids=order_id)
all_dtypes = pytest.mark.parametrize("dtype", ALL_DTYPES, ids=dtype_id)


def mixed_shapes(dtype, device, seed=0):
    """Odd sizes, a 0-dim and an empty tensor, a transposed one, some exact zeros."""
    return [
        sample((37, 5), dtype, device=device, seed=seed, zeros_every=7),
        sample((), dtype, device=device, seed=seed + 1),
        sample((0, 3), dtype, device=device),
        sample((3, 1000), dtype, device=device, seed=seed + 2).t(),
        sample((70001,), dtype, device=device, seed=seed + 3, zeros_every=11),
        sample((17,), dtype, device=device, seed=seed + 4),
        sample((1023,), dtype, device=device, seed=seed + 5, scale=1e-3),
    ]


# --- values ----------------------------------------------------------------------------


@orders
@all_dtypes
def test_reference_agrees_with_vector_norm(dtype, p):
    """The fsum reference is the vector_norm Definition of docs/semantics.md (small inputs, where
    vector_norm's float64 accumulation error is negligible)."""
    tensors = mixed_shapes(dtype, "cpu")
    flat = torch.cat([t.reshape(-1).to(torch.complex128).abs() for t in tensors])
    want = torch.linalg.vector_norm(flat, p).item()
    got = reference_norm(tensors, p)
    # vector_norm's own float64 accumulation is off by up to ~5e-14 here (measured,
    # bfloat16 p=0.5, 74k elements), hence the float64 bound of docs/semantics.md as tolerance.
    assert got == want or abs(got - want) <= 1e-13 * abs(want), (got, want)


@orders
@all_dtypes
def test_matches_reference_for_every_order_and_dtype(device, dtype, p):
    tensors = mixed_shapes(dtype, device)
    assert_norm(totalnorm.total_norm(tensors, p), tensors, p)


@orders
def test_python_wrapper_and_op_agree_bitwise(device, p):
    tensors = mixed_shapes(torch.float32, device)
    wrapped = totalnorm.total_norm(tensors, p)
    direct = torch.ops.totalnorm.total_norm.default(tensors, p, False, None)
    assert_bitwise_equal(wrapped, direct)


@pytest.mark.parametrize("n", [1, 3, 15, 16, 17, 1023, 65535, 65537, 70001])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.complex64],
                         ids=dtype_id)
@pytest.mark.parametrize("p", [1.0, 2.0, INF, -INF, 0.0, 3.0], ids=order_id)
def test_odd_sizes(device, n, dtype, p):
    t = sample((n,), dtype, device=device, seed=n, zeros_every=13)
    assert_norm(totalnorm.total_norm([t], p), [t], p)


@pytest.mark.parametrize("offset", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64, torch.complex64], ids=dtype_id)
@pytest.mark.parametrize("p", [1.0, 2.0, INF, 0.5], ids=order_id)
def test_unaligned_contiguous_views(device, offset, dtype, p):
    # Contiguous views that start off any vector boundary: the loops' head/body/tail.
    base = sample((4099 + offset,), dtype, device=device, seed=offset, zeros_every=5)
    tensors = [base[offset:], base[offset : offset + 33], base[offset:][:-2]]
    assert all(t.is_contiguous() for t in tensors)
    assert_norm(totalnorm.total_norm(tensors, p), tensors, p)


def _wide_values(n, dtype, seed):
    """n values of `dtype` over many binades (and some zeros), drawn on the CPU: a float64
    sum of their contributions rounds differently when they are grouped differently."""
    g = torch.Generator().manual_seed(seed)
    parts = 2 if dtype.is_complex else 1
    span = {torch.float16: 14, torch.bfloat16: 60}.get(dtype, 60)
    x = (1 + torch.rand(n * parts, generator=g, dtype=torch.float64)) * torch.exp2(
        torch.randint(-span, span + 1, (n * parts,), generator=g).double())
    x[::11] = 0
    x = torch.where(torch.rand(n * parts, generator=g) < 0.5, -x, x)
    return torch.view_as_complex(x.view(n, 2)).to(dtype) if dtype.is_complex else x.to(dtype)


def _view_at_byte_offset(values, offset):
    """A dense 1-D view of `values`' numbers that starts `offset` bytes into a fresh buffer."""
    nbytes = values.numel() * values.element_size()
    buffer = torch.zeros(nbytes + 32, dtype=torch.uint8, device=values.device)
    view = torch.empty(0, dtype=values.dtype, device=values.device)
    view.set_(buffer.untyped_storage()[offset : offset + nbytes], 0, values.shape, (1,))
    view.copy_(values)
    return view


@all_dtypes
@pytest.mark.parametrize("p", [0.0, 1.0, 2.0, 3.0, INF], ids=order_id)
def test_dense_views_at_any_byte_offset_give_the_bits_of_their_clones(device, dtype, p):
    # Which elements the kernels group together must follow their position in the tensor,
    # not their address: a view starting anywhere in a buffer has its clone's bits. The
    # lengths put unit and vector boundaries at many positions of the view. On CUDA a
    # tensor must be aligned for its element type (torch's own kernels need it), and on
    # the CPU torch's copy into a complex128 tensor crashes unless it is (the fuzz avoids
    # it too), so the offsets there are the multiples of the element size.
    size = torch.empty(0, dtype=dtype).element_size()
    any_offset = device == "cpu" and dtype != torch.complex128
    offsets = [b for b in range(16) if any_offset or b % size == 0]
    for offset in offsets:
        values = [_wide_values(n, dtype, seed=offset * 10 + i).to(device) for i, n in enumerate((37, 70001, 5))]
        views = [_view_at_byte_offset(v, offset) for v in values]
        assert views[1].data_ptr() % 16 == offset
        clones = [v.clone() for v in views]
        assert all(c.data_ptr() % 16 == 0 for c in clones)
        for tensors, copies in ((views[1:2], clones[1:2]), (views, clones)):
            got = totalnorm.total_norm(tensors, p, dtype=torch.float64)
            want = totalnorm.total_norm(copies, p, dtype=torch.float64)
            assert torch.equal(bits(got), bits(want)), f"offset {offset} bytes: {got.item()!r} vs {want.item()!r}"
        assert_norm(got, views, p, dtype=torch.float64)  # and the bits are right


def _layouts(dtype, device):
    g = lambda shape, seed: sample(shape, dtype, device=device, seed=seed, zeros_every=9)  # noqa: E731
    nchw = g((3, 5, 7, 9), 1)
    small = g((1, 7), 2)
    return {
        "transposed": g((33, 65), 3).t(),
        "permuted_3d": g((4, 5, 6), 4).permute(2, 0, 1),
        "channels_last": nchw.to(memory_format=torch.channels_last),
        "channels_last_sliced": nchw.to(memory_format=torch.channels_last)[:, 1:4],
        "sliced_with_step": g((1001,), 5)[::3],
        "sliced_2d": g((40, 50), 6)[3:30:2, 1::4],
        "expanded_stride0": small.expand(300, 7),
        "expanded_scalar": g((), 7).expand(11, 13),
        "offset_2d_slice": g((64, 64), 8)[5:, 7:],
    }


LAYOUTS = list(_layouts(torch.float32, "cpu"))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.complex128], ids=dtype_id)
@orders
def test_non_contiguous_layouts(device, layout, dtype, p):
    t = _layouts(dtype, device)[layout]
    assert_norm(totalnorm.total_norm([t], p), [t], p)
    # The same values contiguous give the same norm (element order does not matter
    # beyond rounding; an expanded tensor counts each repeated element).
    dense = t.contiguous()
    assert_norm(totalnorm.total_norm([dense], p), [t], p)


@pytest.mark.parametrize("p", [1.0, 2.0, INF, 0.0], ids=order_id)
def test_expanded_tensor_counts_each_element_as_often_as_it_appears(device, p):
    row = torch.tensor([3.0, -4.0, 0.0, 12.0], dtype=torch.float64, device=device)
    times = 1000
    expanded = row.expand(times, 4)
    assert expanded.stride() == (0, 1)
    got = totalnorm.total_norm([expanded], p)
    one = torch.linalg.vector_norm(row, p).item()
    # The norm of `times` copies of a vector, from the single copy's norm.
    want = {0.0: one * times, 1.0: one * times, 2.0: one * math.sqrt(times), INF: one}[p]
    check_value(got, want, p)


def test_conjugate_view_has_the_same_norm(device):
    z = sample((257,), torch.complex64, device=device, seed=3)
    for p in ORDERS:
        assert z.conj().is_conj()
        assert_norm(totalnorm.total_norm([z.conj()], p), [z], p)


@pytest.mark.parametrize("count", [1, 2000])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=dtype_id)
@orders
def test_one_and_many_tensors(device, count, dtype, p):
    g = torch.Generator().manual_seed(count)
    sizes = torch.randint(0, 300, (count,), generator=g).tolist() if count > 1 else [4097]
    tensors = [sample((n,), dtype, device=device, seed=i, zeros_every=17) for i, n in enumerate(sizes)]
    assert_norm(totalnorm.total_norm(tensors, p), tensors, p)


# Promotion as torch returns it: complex maps to its real counterpart.
MIXED = {
    "f16+bf16": ([torch.float16, torch.bfloat16], torch.float32),
    "bf16": ([torch.bfloat16], torch.bfloat16),
    "f16": ([torch.float16, torch.float16], torch.float16),
    "c64": ([torch.complex64], torch.float32),
    "c128": ([torch.complex128], torch.float64),
    "f16+c64": ([torch.float16, torch.complex64], torch.float32),
    "bf16+f32": ([torch.bfloat16, torch.float32], torch.float32),
    "f32+f64": ([torch.float32, torch.float64], torch.float64),
    "all": (ALL_DTYPES, torch.float64),
}


@pytest.mark.parametrize("mix", list(MIXED))
@orders
def test_mixed_dtypes_in_one_list(device, mix, p):
    dtypes, out = MIXED[mix]
    tensors = [sample((100 + 37 * i,), d, device=device, seed=i, zeros_every=10) for i, d in enumerate(dtypes)]
    got = totalnorm.total_norm(tensors, p)
    assert got.dtype == out
    assert_norm(got, tensors, p)


@pytest.mark.parametrize("out", [torch.float16, torch.bfloat16, torch.float32, torch.float64], ids=dtype_id)
@pytest.mark.parametrize("inp", [torch.bfloat16, torch.float32, torch.float64, torch.complex64], ids=dtype_id)
@pytest.mark.parametrize("p", [1.0, 2.0, INF, 3.0, -1.0], ids=order_id)
def test_dtype_argument_sets_the_result_dtype(device, inp, out, p):
    tensors = [sample((513,), inp, device=device, seed=1, scale=0.1), sample((9, 9), inp, device=device, seed=2)]
    got = totalnorm.total_norm(tensors, p, dtype=out)
    assert got.dtype == out
    assert_norm(got, tensors, p, dtype=out)


def test_bfloat16_with_float64_result_is_not_accumulated_in_bfloat16(device):
    # 4096 copies of bf16(1.01): a bfloat16 (or float32 per-tensor) accumulation
    # would be visibly off; the float64 accumulation of docs/semantics.md is exact here.
    x = torch.full((4096,), 1.01, dtype=torch.bfloat16, device=device)
    v = x[0].double().item()
    got = totalnorm.total_norm([x, x[:1000]], 1.0, dtype=torch.float64)
    assert got.item() == v * 5096
    got2 = totalnorm.total_norm([x, x[:1000]], 2.0, dtype=torch.float64)
    check_value(got2, math.sqrt(v * v * 5096), 2.0)


# --- special values --------------------------------------------------------------------


def _nan_like(dtype):
    return complex(math.nan, 0.0) if dtype.is_complex else math.nan


@orders
@all_dtypes
@pytest.mark.parametrize("where", ["first", "vector_body", "tail"])
def test_nan_anywhere_gives_nan_except_for_p0(device, dtype, p, where):
    tensors = [sample((5,), dtype, device=device, seed=1), sample((1000,), dtype, device=device, seed=2, zeros_every=4),
               sample((37,), dtype, device=device, seed=3)]
    target, index = {"first": (0, 0), "vector_body": (1, 501), "tail": (2, 36)}[where]
    tensors[target][index] = _nan_like(dtype)
    got = totalnorm.total_norm(tensors, p)
    if p == 0:
        # p = 0 counts NaN as non-zero, as vector_norm does.
        nonzero = sum(int(torch.count_nonzero(t.cpu())) for t in tensors)
        assert got.item() == nonzero
    else:
        assert math.isnan(got.item()), got
    assert_norm(got, tensors, p)


@orders
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64, torch.complex64], ids=dtype_id)
def test_infinite_elements(device, dtype, p):
    tensors = [sample((100,), dtype, device=device, seed=1, zeros_every=25), sample((40,), dtype, device=device)]
    tensors[1][20] = -math.inf
    # p > 0: inf; p = -inf: the smallest |x| (0 here); p = -1: |inf|^-1 = 0 adds nothing.
    assert_norm(totalnorm.total_norm(tensors, p), tensors, p)


@pytest.mark.parametrize("p", [0.5, 1.0, 1.5, 2.0, 3.0, INF, -INF, -1.0], ids=order_id)
def test_error_if_nonfinite_raises_naming_the_order(device, p):
    tensors = [sample((10,), device=device), torch.full((3,), math.nan, device=device)]
    before = snapshot(tensors)
    with pytest.raises(RuntimeError, match=rf"order {re.escape(f'{p:g}')}\b"):
        totalnorm.total_norm(tensors, p, error_if_nonfinite=True)
    assert_unchanged(tensors, before)
    # error_if_nonfinite=False hands the non-finite value back.
    assert math.isnan(totalnorm.total_norm(tensors, p, error_if_nonfinite=False).item())


@pytest.mark.parametrize("p", [1.0, 2.0, INF, 3.0], ids=order_id)
def test_error_if_nonfinite_with_an_infinite_norm(device, p):
    tensors = [torch.tensor([1.0, math.inf], device=device)]
    with pytest.raises(RuntimeError, match="order"):
        totalnorm.total_norm(tensors, p, error_if_nonfinite=True)
    assert totalnorm.total_norm(tensors, p).item() == math.inf


def test_error_if_nonfinite_passes_finite_results(device):
    tensors = [torch.tensor([1.0, math.nan, 0.0, math.inf], device=device)]
    # p = 0 counts NaN and inf as non-zero: 3 is finite, so no error.
    assert totalnorm.total_norm(tensors, 0.0, error_if_nonfinite=True).item() == 3
    # p = -1: |inf|^-1 = 0, and a zero element makes the norm 0: finite.
    finite = [torch.tensor([2.0, math.inf, 4.0], device=device)]
    got = totalnorm.total_norm(finite, -1.0, error_if_nonfinite=True)
    check_value(got, 1.0 / (1 / 2 + 1 / 4), -1.0)
    ok = [sample((50,), device=device)]
    assert_norm(totalnorm.total_norm(ok, 2.0, error_if_nonfinite=True), ok, 2.0)


@pytest.mark.parametrize("p", [-1.0, -INF, -0.5], ids=order_id)
def test_negative_orders_with_a_zero_element_give_zero(device, p):
    tensors = [sample((50,), device=device, seed=1), torch.zeros(3, device=device)]
    got = totalnorm.total_norm(tensors, p)
    assert got.item() == 0.0
    assert_norm(got, tensors, p)


# --- overflow: squares must not overflow on the way (docs/semantics.md) ------------------------------


@pytest.mark.parametrize(
    "dtype,value,count",
    [
        (torch.float16, 300.0, 100),  # 300^2 = 9e4 > 65504: overflows a float16 square
        (torch.float16, 60000.0, 1),  # the largest-ish float16 value alone
        (torch.bfloat16, 1e30, 1000),  # 1e60 > float32 max: overflows a float32 square
        (torch.float32, 1e20, 10000),  # 1e40 > float32 max; the sum 1e44 too
        (torch.float32, 3e38, 1),
        (torch.complex64, 1e25, 64),  # |z|^2 = re^2 + im^2 = 2e50
    ],
    ids=lambda v: dtype_id(v) if isinstance(v, torch.dtype) else f"{v:g}",
)
@pytest.mark.parametrize("p", [1.0, 2.0, INF], ids=order_id)
def test_no_overflow_when_the_true_norm_fits(device, dtype, value, count, p):
    fill = complex(value, value) if dtype.is_complex else value
    t = torch.full((count,), fill, dtype=dtype, device=device)
    got = totalnorm.total_norm([t], p)
    magnitude = abs(complex(t[0].item()))
    want = {1.0: magnitude * count, 2.0: magnitude * math.sqrt(count), INF: magnitude}[p]
    # docs/semantics.md (Special values): inf only when the true norm exceeds the output dtype's range.
    check_value(got, want, p)
    if want < torch.finfo(got.dtype).max * (1 - torch.finfo(got.dtype).eps):
        assert math.isfinite(got.item())


@pytest.mark.parametrize("p", [1.0, 2.0], ids=order_id)
def test_overflow_when_the_true_norm_exceeds_the_output_range(device, p):
    t = torch.full((4,), 3e38, dtype=torch.float32, device=device)  # norm 6e38 or 1.2e39 > 3.4e38
    assert totalnorm.total_norm([t], p).item() == math.inf
    # ...and the same values with a float64 result are finite and right.
    check_value(totalnorm.total_norm([t], p, dtype=torch.float64), reference_norm([t], p), p)


@pytest.mark.parametrize("p", [2.0, 3.0, 0.5], ids=order_id)
def test_float64_overflow_at_least_matches_vector_norm(device, p):
    t = torch.full((8,), 1e154 if p != 0.5 else 1e300, dtype=torch.float64, device=device)
    got = totalnorm.total_norm([t], p).item()
    torchs = torch.linalg.vector_norm(t.cpu(), p).item()
    scale = t[0].item()
    true = torch.linalg.vector_norm(t.cpu() / scale, p).item() * scale
    if math.isfinite(torchs):
        assert abs(got - torchs) <= 1e-13 * torchs
    else:
        # vector_norm overflows on the way; docs/semantics.md asks for at least that.
        assert got == math.inf or (math.isfinite(true) and abs(got - true) <= 1e-13 * true), (got, true)


# --- the result ------------------------------------------------------------------------


def test_result_is_0dim_on_the_first_tensors_device(device):
    tensors = [sample((3, 4), device=device), sample((5,), torch.float64, device=device)]
    got = totalnorm.total_norm(tensors)
    assert got.shape == () and got.device == tensors[0].device and got.dtype == torch.float64


@orders
def test_result_never_requires_grad(device, p):
    a = sample((10,), device=device).requires_grad_()
    b = sample((3, 3), torch.float64, device=device).requires_grad_()
    with torch.enable_grad():
        got = totalnorm.total_norm([a, b], p)
    assert not got.requires_grad and got.grad_fn is None
    assert_norm(got, [a, b], p)
    # Also for a non-leaf input with history.
    c = a * 2
    assert c.requires_grad
    assert not totalnorm.total_norm([c], p).requires_grad


@orders
def test_inputs_are_not_modified(device, p):
    tensors = mixed_shapes(torch.float32, device) + [_layouts(torch.float16, device)["expanded_stride0"],
                                                     _layouts(torch.complex64, device)["sliced_2d"]]
    before = snapshot(tensors)
    totalnorm.total_norm(tensors, p)
    totalnorm.total_norm(tensors, p, dtype=torch.float64)
    assert_unchanged(tensors, before)


def test_empty_list_gives_cpu_zero_of_the_default_dtype():
    got = totalnorm.total_norm([])
    assert got.device.type == "cpu" and got.shape == () and got.dtype == torch.get_default_dtype()
    assert got.item() == 0.0 and not got.requires_grad
    torch.set_default_dtype(torch.float64)  # the autouse fixture restores it
    assert totalnorm.total_norm([], INF).dtype == torch.float64
    assert totalnorm.total_norm(iter([]), 0.0).item() == 0.0


@orders
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.complex128], ids=dtype_id)
def test_all_empty_tensors_give_zero_on_the_first_device(device, dtype, p):
    tensors = [torch.empty(0, dtype=dtype, device=device), torch.empty(2, 0, 3, dtype=dtype, device=device)]
    got = totalnorm.total_norm(tensors, p)
    assert got.item() == 0.0 and not math.copysign(1, got.item()) < 0
    assert_norm(got, tensors, p)
    assert totalnorm.total_norm(tensors, p, dtype=torch.float16).dtype == torch.float16


@pytest.mark.parametrize("p", [INF, -INF], ids=order_id)
def test_empty_tensors_among_others_contribute_nothing(device, p):
    # Recent torch raises here for +-inf; docs/semantics.md (Empty inputs) skips empty tensors.
    full = sample((100,), device=device, seed=5)
    tensors = [torch.empty(0, device=device), full, torch.empty(0, 4, device=device)]
    got = totalnorm.total_norm(tensors, p)
    want = full.abs().max() if p > 0 else full.abs().min()
    assert_bitwise_equal(got, want)


def test_single_tensor_is_accepted(device):
    t = sample((7, 7), device=device)
    assert_bitwise_equal(totalnorm.total_norm(t), totalnorm.total_norm([t]))
    assert_norm(totalnorm.total_norm(t, 3.0), [t], 3.0)


def test_accepts_a_generator_and_python_number_orders(device):
    tensors = [sample((20,), device=device, seed=i) for i in range(3)]
    assert_bitwise_equal(totalnorm.total_norm(t for t in tensors), totalnorm.total_norm(tensors))
    assert_bitwise_equal(totalnorm.total_norm(tensors, 1), totalnorm.total_norm(tensors, 1.0))
    assert_bitwise_equal(totalnorm.total_norm(tensors, float("inf")), totalnorm.total_norm(tensors, math.inf))
    # foreach is accepted for compatibility and ignored.
    assert_bitwise_equal(totalnorm.total_norm(tensors, foreach=True), totalnorm.total_norm(tensors, foreach=False))


# --- agreement with torch ----------------------------------------------------------------


@pytest.mark.parametrize("p", [0.5, 1.0, 1.5, 2.0, 3.0, INF, -INF, -1.0], ids=order_id)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=dtype_id)
def test_agrees_with_torch_get_total_norm(device, dtype, p):
    # No empty tensors (torch raises for +-inf) and p != 0 (torch counts tensors):
    # the two cases docs/semantics.md lists as differences from torch.
    tensors = [sample((n,), dtype, device=device, seed=n) for n in (1, 17, 1000, 4099)] + [
        sample((30, 40), dtype, device=device).t()
    ]
    ours = totalnorm.total_norm(tensors, p)
    theirs = torch.nn.utils.get_total_norm(tensors, p)
    assert ours.dtype == theirs.dtype and ours.device == theirs.device and ours.shape == theirs.shape
    # torch rounds every per-tensor norm to the input dtype before combining them,
    # so it is a few ulps from the exact value; ours is the reference's (checked by
    # the tests above). rtol = 1e-5 for float32 covers torch's float32 error;
    # 1e-12 for float64.
    rtol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(ours, theirs, rtol=rtol, atol=0)
    if p in (INF, -INF):
        assert_bitwise_equal(ours, theirs)  # max/min involve no rounding


def test_p0_counts_elements_not_tensors(device):
    tensors = [torch.tensor([0.0, 1.0, 2.0], device=device), torch.zeros(4, device=device),
               torch.tensor([[0.5, 0.0], [0.0, -3.0]], device=device)]
    got = totalnorm.total_norm(tensors, 0.0)
    assert got.item() == 4  # elements; torch.nn.utils.get_total_norm counts tensors
    assert_norm(got, tensors, 0.0)


# --- determinism ---------------------------------------------------------------------------


def _big_list(device, dtype=torch.float32):
    # ~3.2M elements in 40 tensors of uneven sizes: many blocks, several per tensor.
    return [sample((1 + 4099 * i,), dtype, device=device, seed=i, scale=2.0 ** (i % 9 - 4)) for i in range(40)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.complex64], ids=dtype_id)
@pytest.mark.parametrize("p", [1.0, 2.0, 3.0, INF, 0.0], ids=order_id)
def test_bitwise_identical_for_one_and_two_threads(dtype, p):
    tensors = _big_list("cpu", dtype)
    results = {}
    for threads in (1, 2, 1):
        torch.set_num_threads(threads)
        results.setdefault(threads, []).append(totalnorm.total_norm(tensors, p, dtype=torch.float64))
        results[threads].append(totalnorm.total_norm(tensors, p))
    one, two = results[1][:2], results[2]
    for a, b in zip(one, two):
        assert_bitwise_equal(a, b)
    for a, b in zip(results[1][:2], results[1][2:]):
        assert_bitwise_equal(a, b)
    if dtype == torch.float32:
        assert_norm(two[1], tensors, p)


@pytest.mark.parametrize("p", [1.0, 2.0, 3.0, -1.0], ids=order_id)
def test_bitwise_identical_run_to_run(device, p):
    tensors = _big_list(device)
    first = totalnorm.total_norm(tensors, p, dtype=torch.float64)
    for _ in range(3):
        assert_bitwise_equal(totalnorm.total_norm(tensors, p, dtype=torch.float64), first)


def _isa_inputs():
    half_specials = torch.tensor([6e-8, 1e-7, 6.1e-5, 65504.0, 0.0, -0.0, 1.0, -2.5], dtype=torch.float16)
    bf16_specials = torch.tensor([1e-40, 9e-39, 3e38, -1e-3, 0.0], dtype=torch.bfloat16)
    return {
        "f32": [sample((n,), seed=n, zeros_every=19, scale=10.0 ** (n % 5 - 2)) for n in (1, 15, 16, 17, 1023, 70001)],
        "f16": [sample((9999,), torch.float16, seed=1), half_specials, sample((33,), torch.float16, seed=2)[::2]],
        "bf16": [sample((4097,), torch.bfloat16, seed=3), bf16_specials],
        "f64": [sample((12345,), torch.float64, seed=4), sample((40, 41), torch.float64, seed=5).t()],
        "complex": [sample((777,), torch.complex64, seed=6), sample((65,), torch.complex128, seed=7)],
        "mixed": [sample((300,), d, seed=i) for i, d in enumerate(ALL_DTYPES)],
        "big": [sample((1 << 20,), seed=8), sample((300001,), torch.bfloat16, seed=9)],
        "nan": [sample((100,), seed=10), torch.tensor([1.0, math.nan])],
    }


def test_portable_and_avx2_cpu_loops_agree_bitwise(tmp_path):
    """TOTALNORM_CPU_ISA=portable (read once at load) forces the portable loops.

    The in-process library uses the best loops the processor runs (AVX2 on x86-64
    machines that have it); a subprocess with the variable set uses the portable
    ones. docs/semantics.md (Determinism): identical inputs give bitwise identical results.
    """
    inputs = _isa_inputs()
    orders = [0.5, 1.0, 1.5, 2.0, 3.0, INF, -INF, 0.0, -1.0]
    here = assert_same_bits_for_every_isa(inputs, orders, tmp_path)
    # The values themselves are right (so the agreement is not of two wrong answers).
    for name, tensors in inputs.items():
        for p in orders:
            check_value(torch.tensor(float.fromhex(here[f"{name}/{p}"][0]), dtype=torch.float64),
                        reference_norm(tensors, p), p)

