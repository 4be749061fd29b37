"""The float64 reference of docs/semantics.md and the checks every test file shares.

The reference is the Definition of docs/semantics.md: the p-norm of the float64
concatenation of all elements (complex elements by ``|z|``), rounded once to the result
dtype. It is computed with math.fsum (see reference_norm) and checked against
``torch.linalg.vector_norm`` on small inputs. The accuracy bounds are its Accuracy
section's: 1 ulp of the exactly rounded value for p in {0, 1, 2, inf, -inf}, relative
error 1e-6 for other p (float32 results), 1e-13 for float64 results.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np
import torch

INF = math.inf
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

# The orders of docs/semantics.md (Orders): every reduction kind (0, 1, 2, inf, -inf and the
# general pow path, positive and negative).
ORDERS = [0.5, 1.0, 1.5, 2.0, 3.0, INF, -INF, 0.0, -1.0]
FAST_ORDERS = {0.0, 1.0, 2.0, INF, -INF}

REAL_DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
COMPLEX_DTYPES = [torch.complex64, torch.complex128]
ALL_DTYPES = REAL_DTYPES + COMPLEX_DTYPES

_INT_OF_SIZE = {2: torch.int16, 4: torch.int32, 8: torch.int64}


def dtype_id(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def order_id(p: float) -> str:
    return f"p={p:g}"


def real_dtype(dtype: torch.dtype) -> torch.dtype:
    return dtype.to_real() if dtype.is_complex else dtype


def expected_dtype(tensors: Sequence[torch.Tensor], dtype: Optional[torch.dtype] = None) -> torch.dtype:
    """docs/semantics.md (Result): the dtype argument, else the promotion of the real counterparts."""
    if dtype is not None:
        return dtype
    out = real_dtype(tensors[0].dtype)
    for t in tensors:
        out = torch.promote_types(out, real_dtype(t.dtype))
    return out


def sample(shape, dtype=torch.float32, *, device="cpu", seed=0, scale=1.0, zeros_every=0) -> torch.Tensor:
    """Seeded normal values, drawn on the CPU so every device sees the same numbers.

    ``zeros_every=k`` sets every k-th element to an exact zero (for p = 0 and p < 0).
    """
    g = torch.Generator().manual_seed(seed)
    draw = dtype if dtype in (torch.float32, torch.float64, torch.complex64, torch.complex128) else torch.float32
    x = torch.randn(shape, generator=g, dtype=draw) * scale
    if zeros_every:
        x.view(-1)[::zeros_every] = 0
    return x.to(dtype).to(device)


def _magnitudes(tensors: Iterable[torch.Tensor]) -> np.ndarray:
    """|x| of every element, in float64 (complex by hypot), in list order.

    ``reshape(-1)`` of an expanded tensor materialises every repeated element, so
    an element counts as many times as it appears.
    """
    flat = [t.detach().reshape(-1).cpu().to(torch.complex128).abs().numpy() for t in tensors]
    return np.concatenate(flat) if flat else np.zeros(0)


def _squares(tensors: Iterable[torch.Tensor]) -> np.ndarray:
    """x^2 of every real part (|z|^2 = re^2 + im^2): exact in float64 for inputs up to float32."""
    parts = []
    for t in tensors:
        t = t.detach().reshape(-1).cpu().resolve_conj()
        t = torch.view_as_real(t) if t.is_complex() else t
        parts.append(t.to(torch.float64).reshape(-1).numpy())
    x = np.concatenate(parts) if parts else np.zeros(0)
    with np.errstate(over="ignore"):
        return x * x


def _fsum(terms: np.ndarray) -> float:
    try:
        return math.fsum(terms)
    except OverflowError:  # finite terms whose sum exceeds the float64 range
        return math.inf


def reference_norm(tensors: Iterable[torch.Tensor], p: float) -> float:
    """The Definition of docs/semantics.md in float64, before the rounding to the result dtype.

    docs/semantics.md defines the value as ``vector_norm`` of the float64 concatenation;
    this computes that value more accurately: every term |x|^p is rounded once and
    math.fsum adds them exactly rounded. torch's own float64 accumulation is off by
    up to 2e-13 at 1e7 elements (measured for p = 0.5), more than the float64 bound of
    docs/semantics.md, so it cannot serve as the reference for large inputs.
    test_reference_agrees_with_vector_norm checks the two agree on small inputs.
    """
    tensors = list(tensors)
    a = _magnitudes(tensors)
    if a.size == 0:
        return 0.0  # docs/semantics.md: empty tensors contribute nothing (vector_norm would raise for inf)
    if p == 0:
        return float(np.count_nonzero(a))  # NaN counts as non-zero, as in vector_norm
    if np.isnan(a).any():
        return math.nan
    if p == math.inf:
        return float(a.max())
    if p == -math.inf:
        return float(a.min())
    if p == 1:
        return _fsum(a)
    if p == 2:
        return math.sqrt(_fsum(_squares(tensors)))
    with np.errstate(divide="ignore", over="ignore", under="ignore"):
        total = np.float64(_fsum(np.power(a, p)))  # |0|^p = inf for p < 0
        return float(np.power(total, 1.0 / p))  # inf^(1/p) = 0 for p < 0


def ulp_distance(a: torch.Tensor, b: torch.Tensor) -> int:
    """Distance in units in the last place between two finite, non-negative 0-dim tensors."""
    assert a.dtype == b.dtype and a.dtype.is_floating_point
    a, b = a.detach().cpu(), b.detach().cpu()
    assert a.item() >= 0 and b.item() >= 0 and math.isfinite(a.item()) and math.isfinite(b.item())
    ints = _INT_OF_SIZE[a.element_size()]
    return abs(int(a.view(ints).item()) - int(b.view(ints).item()))


def check_value(got: torch.Tensor, want: float, p: float) -> None:
    """``got`` (in its own dtype) against the float64 value ``want``, to the bounds of docs/semantics.md."""
    out = got.dtype
    g = got.item()
    if math.isnan(want):
        assert math.isnan(g), f"p={p}: expected NaN, got {g}"
        return
    want_rounded = torch.tensor(want, dtype=torch.float64).to(out)
    if not math.isfinite(want_rounded.item()) or want_rounded.item() == 0:
        assert g == want_rounded.item(), f"p={p}: expected {want_rounded.item()}, got {g}"
        return
    assert math.isfinite(g), f"p={p}: expected {want}, got {g}"
    if out == torch.float64:
        assert abs(g - want) <= 1e-13 * abs(want), f"p={p}: got {g!r}, want {want!r}"
    elif out == torch.float32 and p not in FAST_ORDERS:
        assert abs(g - want) <= 1e-6 * abs(want), f"p={p}: got {g!r}, want {want!r}"
    else:
        # float32 results of the fast orders, and float16/bfloat16 results of any
        # order: the result is rounded once from a float64 accumulation (docs/semantics.md, Result), so it
        # is within 1 ulp of the exactly rounded value, which the rounded float64
        # reference is (or is next to).
        d = ulp_distance(got, want_rounded)
        assert d <= 1, f"p={p}: got {g!r}, want {want_rounded.item()!r} ({d} ulps apart)"


def assert_norm(got: torch.Tensor, tensors: Sequence[torch.Tensor], p: float, *, dtype=None) -> None:
    """The whole result contract: 0-dim, dtype, device, no grad, and the value."""
    tensors = list(tensors)
    assert isinstance(got, torch.Tensor)
    assert got.dim() == 0, got.shape
    assert got.dtype == expected_dtype(tensors, dtype)
    assert got.device == tensors[0].device
    assert not got.requires_grad
    check_value(got, reference_norm(tensors, p), p)


def bits(t: torch.Tensor) -> torch.Tensor:
    """The raw bits of a tensor (NaN payloads and signed zeros included), on the CPU."""
    t = t.detach().cpu().resolve_conj().resolve_neg()
    if t.is_complex():
        t = torch.view_as_real(t)
    return t.contiguous().view(_INT_OF_SIZE[t.element_size()])


def assert_bitwise_equal(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.dtype == b.dtype, (a.dtype, b.dtype)
    assert a.shape == b.shape, (a.shape, b.shape)
    assert torch.equal(bits(a), bits(b)), f"not bitwise equal:\n{a}\n{b}"


def snapshot(tensors: Sequence[torch.Tensor]) -> list[tuple[torch.Tensor, int]]:
    """Bits and version counters, to show later that nothing was modified."""
    return [(bits(t).clone(), t._version) for t in tensors]


def assert_unchanged(tensors: Sequence[torch.Tensor], before) -> None:
    for i, (t, (old_bits, old_version)) in enumerate(zip(tensors, before)):
        assert torch.equal(bits(t), old_bits), f"tensors[{i}] was modified"
        assert t._version == old_version, f"tensors[{i}] had its version bumped"


_ISA_SCRIPT = r"""
import json, sys, torch, totalnorm
inputs = torch.load(sys.argv[1])
orders = json.loads(sys.argv[2])
out = {}
for name, tensors in inputs.items():
    for p in orders:
        out[f"{name}/{p}"] = [totalnorm.total_norm(tensors, p, dtype=torch.float64).item().hex(),
                              totalnorm.total_norm(tensors, p).double().item().hex()]
print(json.dumps(out))
"""


def assert_same_bits_for_every_isa(inputs: dict[str, list[torch.Tensor]], orders: Sequence[float],
                                   tmp_path: Path) -> dict[str, list[str]]:
    """Float64 and default-dtype results of every (input, order), bitwise equal for each CPU loop set.

    TOTALNORM_CPU_ISA=portable (read once at load) forces the portable loops; the
    in-process library and a subprocess without the variable use the best loops
    the processor runs (AVX2 on x86-64 machines that have it). Returns this
    process's results as hex strings, keyed "name/p".
    """
    import totalnorm

    path = tmp_path / "inputs.pt"
    torch.save(inputs, path)
    here = {}
    for name, tensors in inputs.items():
        for p in orders:
            here[f"{name}/{p}"] = [totalnorm.total_norm(tensors, p, dtype=torch.float64).item().hex(),
                                   totalnorm.total_norm(tensors, p).double().item().hex()]
    package_root = str(Path(totalnorm.__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONPATH=package_root)
    for isa in ("portable", None):
        run_env = dict(env)
        if isa is None:
            run_env.pop("TOTALNORM_CPU_ISA", None)
        else:
            run_env["TOTALNORM_CPU_ISA"] = isa
        proc = subprocess.run([sys.executable, "-c", _ISA_SCRIPT, str(path), json.dumps(list(orders))],
                              cwd=tmp_path, env=run_env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        there = json.loads(proc.stdout.strip().splitlines()[-1])
        mismatches = {k: (here[k], there[k]) for k in here if here[k] != there[k]}
        assert not mismatches, f"TOTALNORM_CPU_ISA={isa}: {mismatches}"
    return here
