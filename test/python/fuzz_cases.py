"""Seeded random cases for test_fuzz.py, and a command line that replays one.

A case is a pure function of its seed: a list of tensors (dtypes mixed in one list,
shapes from 0-dim to 4-D and empty, layouts from contiguous to byte-misaligned,
values from subnormal to 1e30 with zeros, inf and NaN), an order, the ``dtype=``
and ``error_if_nonfinite`` arguments and, for clipping cases, a ``max_norm``.
Replaying a seed rebuilds exactly the same tensors, so the reproducer printed for a
failure is one command:

    python test/python/fuzz_cases.py 1234          # a total_norm case
    python test/python/fuzz_cases.py --clip 1234   # a clip_grad_norm_ case
    python test/python/fuzz_cases.py --device cuda 1234   # the same case on the GPU

The values are checked against reference.reference_norm (math.fsum over the float64
contributions, rounded once) to the bounds of docs/semantics.md; clipping is checked against
torch.nn.utils.clip_grad_norm_ bit for bit where the two norms are equal, and against
torch.nn.utils.clip_grads_with_norm_ given totalnorm's norm everywhere else.
"""
from __future__ import annotations

import math
import random
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from reference import FAST_ORDERS, bits, dtype_id, expected_dtype, real_dtype, reference_norm

import totalnorm

INF = math.inf
DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.complex64, torch.complex128]
RESULT_DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
# How a tensor's elements sit in memory. "large" crosses the CPU block size (65,536).
LAYOUTS = ["contiguous", "zero_dim", "empty", "transposed", "channels_last", "gaps", "expanded",
           "overlap", "offset", "misaligned", "conj", "real_part", "imag_of_conj", "large"]
NOT_WRITABLE = {"expanded", "overlap"}  # several elements share one memory location
VIEW_BITS = {"conj", "imag_of_conj"}  # conjugate/negative bit: in-place list ops reject them
COMPLEX_ONLY = {"conj"}
FROM_COMPLEX = {"real_part", "imag_of_conj"}  # real float32/float64 views of a complex tensor
VALUE_KINDS = ["normal", "wide", "zeros", "sparse", "subnormal", "special", "constant", "ints"]
VALUE_WEIGHTS = [30, 12, 5, 10, 8, 10, 12, 8]
ORDERS = [0, 1, -1, 2, -2, 0.5, 3, INF, -INF, "random"]
ORDER_WEIGHTS = [8, 12, 5, 16, 5, 8, 8, 10, 8, 20]

_INT_OF = {2: torch.int16, 4: torch.int32, 8: torch.int64}
_THIS_FILE = Path(__file__).resolve()


@dataclass
class Spec:
    """One tensor of a case: everything needed to build it again."""

    dtype: torch.dtype
    layout: str
    values: str
    shape: tuple
    seed: int
    requires_grad: bool = False
    # Layout details drawn with the case: a permutation, a step, an offset, ...
    detail: dict = field(default_factory=dict)

    def describe(self) -> str:
        extra = "".join(f" {k}={v}" for k, v in self.detail.items())
        rg = " requires_grad" if self.requires_grad else ""
        return f"{dtype_id(self.dtype)}{list(self.shape)} {self.layout}{extra} values={self.values}{rg}"


@dataclass
class Case:
    seed: int
    clip: bool
    specs: list
    p: float
    dtype: Optional[torch.dtype]
    error_if_nonfinite: bool
    max_norm: float = 1.0
    device: str = "cpu"  # where the tensors are built (values drawn on the CPU, the same everywhere)

    def tensors(self) -> list:
        return [make_tensor(s, self.device) for s in self.specs]

    def numel(self) -> int:
        return sum(math.prod(s.shape) for s in self.specs)

    def reproducer(self) -> str:
        flag = (" --clip" if self.clip else "") + (f" --device {self.device}" if self.device != "cpu" else "")
        return f"{sys.executable} {_THIS_FILE}{flag} {self.seed}"

    def describe(self) -> str:
        if self.clip:
            head = f"clip_grad_norm_(grads, max_norm={self.max_norm!r}, norm_type={self.p!r}, " \
                   f"error_if_nonfinite={self.error_if_nonfinite})"
        else:
            dt = None if self.dtype is None else f"torch.{dtype_id(self.dtype)}"
            head = f"total_norm(tensors, {self.p!r}, error_if_nonfinite={self.error_if_nonfinite}, dtype={dt})"
        rows = [f"  [{i}] {s.describe()}" for i, s in enumerate(self.specs)]
        return "\n".join([head] + rows)


# --- Case generation ------------------------------------------------------------------


def _pick(rng: random.Random, items, weights=None):
    return rng.choices(items, weights=weights)[0] if weights else rng.choice(items)


def _sizes(rng: random.Random, ndim: int, hi: int) -> tuple:
    return tuple(rng.randint(1, hi) for _ in range(ndim))


def _shape_for(rng: random.Random, layout: str) -> tuple:
    if layout == "zero_dim":
        return ()
    if layout == "empty":
        shape = list(_sizes(rng, rng.randint(1, 3), 5))
        shape[rng.randrange(len(shape))] = 0
        return tuple(shape)
    if layout == "transposed":
        return _sizes(rng, rng.randint(2, 3), 12)
    if layout == "channels_last":
        return (rng.randint(1, 3), rng.randint(2, 6), rng.randint(1, 5), rng.randint(1, 5))
    if layout == "overlap":
        return (rng.randint(1, 8), rng.randint(2, 12))
    if layout == "large":
        return (rng.randint(65536 - 40, 140000),)
    if layout in ("offset", "misaligned") and rng.random() < 0.5:
        return (rng.randint(1, 300),)
    ndim = rng.randint(1, 4)
    return _sizes(rng, ndim, {1: 300, 2: 24, 3: 8, 4: 5}[ndim])


def _layout_detail(rng: random.Random, layout: str, shape: tuple, dtype: torch.dtype) -> dict:
    if layout == "transposed":
        perm = list(range(len(shape)))
        while perm == sorted(perm):
            rng.shuffle(perm)
        return {"perm": tuple(perm)}
    if layout == "gaps":
        return {"dim": rng.randrange(len(shape)), "step": rng.randint(2, 3), "narrow": rng.random() < 0.3}
    if layout == "expanded":
        dims = [d for d in range(len(shape)) if rng.random() < 0.5] or [rng.randrange(len(shape))]
        return {"dims": tuple(dims)}
    if layout == "overlap":
        return {"stride": rng.randint(1, shape[1] - 1)}
    if layout == "offset":
        return {"offset": rng.randint(1, 7)}
    if layout == "misaligned":
        size = torch.empty(0, dtype=dtype).element_size()
        return {"byte_offset": rng.randint(1, size - 1)}
    if layout == "large":
        return {"step": rng.choice([1, 1, 1, 2])}
    return {}


def _weight(layout: str, clip: bool) -> float:
    if layout in ("contiguous", "zero_dim"):
        return 3
    if layout == "large" or (clip and layout in NOT_WRITABLE | VIEW_BITS):
        return 0.3  # clipping these is rejected (by torch too): rarely
    return 1


def _spec(rng: random.Random, seed: int, dtype: torch.dtype, clip: bool) -> Spec:
    layout = _pick(rng, LAYOUTS, [_weight(lay, clip) for lay in LAYOUTS])
    if layout in COMPLEX_ONLY and not dtype.is_complex:
        dtype = rng.choice([torch.complex64, torch.complex128])
    if layout in FROM_COMPLEX and dtype not in (torch.float32, torch.float64):
        dtype = rng.choice([torch.float32, torch.float64])
    if layout == "misaligned" and dtype == torch.complex128:
        dtype = torch.complex64  # torch's own copy kernels crash on misaligned complex128
    shape = _shape_for(rng, layout)
    values = _pick(rng, VALUE_KINDS, VALUE_WEIGHTS)
    return Spec(dtype, layout, values, shape, seed, detail=_layout_detail(rng, layout, shape, dtype))


def _order(rng: random.Random):
    p = _pick(rng, ORDERS, ORDER_WEIGHTS)
    if p == "random":
        p = round(rng.uniform(-4.0, 6.0), rng.choice([1, 3, 6]))
        if p in (0.0, 1.0, 2.0):
            p += 0.25
    elif math.isfinite(p) and p == int(p) and rng.random() < 0.3:
        p = int(p)  # a Python int, as users write norm_type=2
    return p


def make_case(seed: int, clip: bool = False, device: str = "cpu") -> Case:
    """The case of a seed (norm cases and clip cases draw from separate streams), its
    tensors on `device`: the same case, values and layouts on every device."""
    rng = random.Random(f"{'clip' if clip else 'norm'}:{seed}")
    count = 0 if rng.random() < 0.03 else rng.randint(1, 6)
    same = rng.random() < 0.4
    first = rng.choice(DTYPES)
    specs = []
    for i in range(count):
        spec = _spec(rng, seed * 64 + i, first if same else rng.choice(DTYPES), clip)
        spec.requires_grad = not clip and rng.random() < 0.1
        specs.append(spec)
    p = _order(rng)
    dtype = rng.choice(RESULT_DTYPES) if (not clip and specs and rng.random() < 0.25) else None
    error = rng.random() < 0.25
    max_norm = _pick(rng, [10.0 ** rng.uniform(-3, 6), 1.0, 0.0, -0.5, INF], [80, 8, 4, 4, 4])
    return Case(seed, clip, specs, p, dtype, error, max_norm, device)


# --- Tensor construction ---------------------------------------------------------------


def _subnormal_range(dtype: torch.dtype) -> tuple[float, int]:
    info = torch.finfo(real_dtype(dtype))
    mantissa_bits = {torch.float16: 10, torch.bfloat16: 7, torch.float32: 23, torch.float64: 52}[real_dtype(dtype)]
    return info.smallest_normal * info.eps, mantissa_bits


def _real_values(rng: np.random.Generator, kind: str, n: int, dtype: torch.dtype) -> np.ndarray:
    """n float64 values of a kind, meant for `dtype` (16-bit types get their own scales)."""
    narrow = real_dtype(dtype) == torch.float16
    if kind == "normal":
        exp = rng.integers(-4, 5) if narrow and rng.random() < 0.7 else rng.integers(-30, 31)
        return rng.standard_normal(n) * 10.0 ** float(exp)
    if kind == "wide":
        return rng.choice([-1.0, 1.0], n) * 10.0 ** rng.uniform(-30, 30, n)
    if kind == "zeros":
        return rng.choice([-0.0, 0.0], n)
    if kind == "sparse":
        x = rng.standard_normal(n) * 10.0 ** float(rng.integers(-3, 4))
        x[rng.random(n) < rng.uniform(0.2, 0.9)] = 0.0
        return x
    if kind == "subnormal":
        smallest, mantissa_bits = _subnormal_range(dtype)
        k = rng.integers(1, 2 ** min(mantissa_bits, 40), n).astype(np.float64)
        return rng.choice([-1.0, 1.0], n) * k * smallest
    if kind == "special":
        x = rng.standard_normal(n) * 10.0 ** float(rng.integers(-2, 3))
        for _ in range(rng.integers(1, 4) if n else 0):
            x[rng.integers(n)] = rng.choice([INF, -INF, math.nan, 0.0])
        return x
    if kind == "constant":
        return np.full(n, rng.standard_normal() * 10.0 ** float(rng.integers(-3, 4)))
    if kind == "ints":
        return rng.integers(-8, 9, n).astype(np.float64)
    raise ValueError(kind)


def _values(spec: Spec, n: int, dtype: torch.dtype) -> torch.Tensor:
    """A 1-D tensor of n values of `dtype` (complex: both parts of the spec's kind)."""
    rng = np.random.default_rng(spec.seed)
    if dtype.is_complex:
        z = np.empty(n, dtype=np.complex128)
        z.real = _real_values(rng, spec.values, n, dtype)
        z.imag = _real_values(rng, spec.values, n, dtype)  # not z = re + 1j * im: 1j * inf has a NaN part
        return torch.from_numpy(z).to(dtype)
    return torch.from_numpy(_real_values(rng, spec.values, n, dtype)).to(dtype)


def make_tensor(spec: Spec, device: str = "cpu") -> torch.Tensor:
    t = _layout(spec, device)
    assert tuple(t.shape) == tuple(spec.shape), (spec, t.shape)
    if spec.requires_grad:
        t = t.detach().requires_grad_()
    return t


def _layout(spec: Spec, device: str = "cpu") -> torch.Tensor:
    shape, dtype, d = spec.shape, spec.dtype, spec.detail

    def _values_on(n, dt):
        return _values(spec, n, dt).to(device)

    n = math.prod(shape)
    lay = spec.layout
    if lay in ("contiguous", "zero_dim", "empty"):
        return _values_on(n, dtype).reshape(shape)
    if lay == "transposed":
        perm = d["perm"]
        inverse = [perm.index(i) for i in range(len(perm))]
        base = _values_on(n, dtype).reshape([shape[i] for i in perm])
        return base.permute(inverse)  # base.permute(inverse).shape == shape
    if lay == "channels_last":
        return _values_on(n, dtype).reshape(shape).contiguous(memory_format=torch.channels_last)
    if lay == "gaps":
        dim, step = d["dim"], d["step"]
        big = list(shape)
        if d["narrow"]:
            big[dim] += step
            return _values_on(math.prod(big), dtype).reshape(big).narrow(dim, 1, shape[dim])
        big[dim] *= step
        base = _values_on(math.prod(big), dtype).reshape(big)
        return base[(slice(None),) * dim + (slice(None, None, step),)]
    if lay == "expanded":
        small = [1 if i in d["dims"] else s for i, s in enumerate(shape)]
        return _values_on(math.prod(small), dtype).reshape(small).expand(shape)
    if lay == "overlap":
        rows, width = shape
        length = (rows - 1) * d["stride"] + width
        return _values_on(length, dtype).as_strided(shape, (d["stride"], 1))
    if lay == "offset":
        off = d["offset"]
        return _values_on(n + off, dtype)[off:].view(shape)
    if lay == "misaligned" and device != "cpu":
        # A GPU tensor must be aligned for its element type (torch's own kernels need
        # it): off a 16-byte boundary by a whole element, the closest there is.
        buffer = torch.empty(n + 1, dtype=dtype, device=device)
        buffer[1:] = _values_on(n, dtype)
        return buffer[1:].view(shape)
    if lay == "misaligned":
        size = torch.empty(0, dtype=dtype).element_size()
        buf = bytearray(n * size + size)
        t = torch.frombuffer(buf, dtype=dtype, count=n, offset=d["byte_offset"]).view(shape)
        t.copy_(_values_on(n, dtype).reshape(shape))
        return t
    if lay == "conj":
        return _values_on(n, dtype).conj_physical().conj().reshape(shape)
    if lay in ("real_part", "imag_of_conj"):
        complex_dtype = torch.complex64 if dtype == torch.float32 else torch.complex128
        z = _values_on(n, complex_dtype).reshape(shape)
        return z.real if lay == "real_part" else z.conj().imag
    if lay == "large":
        step = d["step"]
        return _values_on(n * step, dtype)[::step]
    raise ValueError(lay)


# --- Checks ----------------------------------------------------------------------------


def _nonneg_bits(t: torch.Tensor) -> int:
    return int(t.detach().reshape(()).view(_INT_OF[t.element_size()]).item())


def value_error(got: torch.Tensor, want: float, p) -> Optional[str]:
    """Why `got` misses the float64 reference `want` under the bounds of docs/semantics.md (None: it does not).

    float64 results: 1e-13 relative. float32 results of p outside {0, 1, 2, inf, -inf}:
    1e-6 relative or 1 ulp. Every other result: within 1 ulp of the reference rounded to
    the result dtype, counting ulps on the bit patterns, so the largest finite value and
    inf are 1 ulp apart (a norm at the edge of the range may round either way).
    """
    g = got.item()
    if math.isnan(want) or math.isnan(g):
        return None if math.isnan(want) and math.isnan(g) else f"got {g!r}, want {want!r}"
    if got.dtype == torch.float64:
        if want == 0 or math.isinf(want):
            ok = g == want
        else:
            ok = abs(g - want) <= 1e-13 * abs(want)
        return None if ok else f"got {g!r}, want {want!r} (rel {abs(g - want) / abs(want) if want else math.inf:.3g} > 1e-13)"
    rounded = torch.tensor(want, dtype=torch.float64).to(got.dtype)
    if g < 0 or math.copysign(1.0, g) < 0:
        return f"got {g!r}: a norm is never negative"
    ulps = abs(_nonneg_bits(got) - _nonneg_bits(rounded))
    if ulps <= 1:
        return None
    if got.dtype == torch.float32 and float(p) not in FAST_ORDERS and math.isfinite(g) and want != 0:
        if abs(g - want) <= 1e-6 * abs(want):
            return None
    return f"got {g!r}, want {rounded.item()!r} ({ulps} ulps apart; float64 reference {want!r})"


def snapshot(tensors) -> list:
    return [(bits(t).clone(), t._version) for t in tensors]


def changed(tensors, before) -> Optional[str]:
    for i, (t, (old, version)) in enumerate(zip(tensors, before)):
        if not torch.equal(bits(t), old):
            return f"tensors[{i}] was modified"
        if t._version != version:
            return f"tensors[{i}] had its version bumped ({version} -> {t._version})"
    return None


def equal_bits_nan_any(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bitwise equal, but any NaN equals any NaN (payloads and signs of NaN may differ)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    ar, br = a.detach().resolve_conj().resolve_neg(), b.detach().resolve_conj().resolve_neg()
    if ar.is_complex():
        ar, br = torch.view_as_real(ar), torch.view_as_real(br)
    both_nan = ar.isnan() & br.isnan()
    return bool(((bits(ar) == bits(br)) | both_nan).all())


# --- Running a case --------------------------------------------------------------------


@dataclass
class Outcome:
    failure: Optional[str] = None
    skipped: Optional[str] = None  # a known break: the case ran but was not asserted


def _resolved(tensors) -> list:
    """Views with the negative bit resolved: reference.py's numpy() calls reject them."""
    return [t.detach().resolve_neg() for t in tensors]


def run_norm_case(case: Case) -> Outcome:
    tensors = case.tensors()
    before = snapshot(tensors)
    want_dtype = expected_dtype(tensors, case.dtype) if tensors else torch.get_default_dtype()
    want = reference_norm(_resolved(tensors), float(case.p))
    call = lambda e: totalnorm.total_norm(tensors, case.p, e, dtype=case.dtype)  # noqa: E731
    try:
        got = call(case.error_if_nonfinite)
    except RuntimeError as err:
        if not case.error_if_nonfinite or "total norm of order" not in str(err):
            return Outcome(f"raised {type(err).__name__}: {err}")
        got = call(False)  # the norm it refused: must be non-finite, and right
        if math.isfinite(got.item()):
            return Outcome(f"raised for a finite norm {got.item()!r}: {err}")
    else:
        if case.error_if_nonfinite and not math.isfinite(got.item()):
            return Outcome(f"error_if_nonfinite=True returned the non-finite {got.item()!r}")
    modified = changed(tensors, before)
    if modified:
        return Outcome(modified)
    return Outcome(_norm_error(case, tensors, got, want, want_dtype) or _per_tensor_error(case, tensors, want_dtype))


def _per_tensor_error(case, tensors, want_dtype) -> Optional[str]:
    """per_tensor=True (docs/semantics.md, Per-tensor norms): the total-only bits, and
    every entry its own tensor's norm to the same bounds. CPU tensors only: the
    per-tensor steps have no CUDA kernels yet (test_per_tensor.py's strict xfail)."""
    if any(t.device.type != "cpu" for t in tensors):
        return None
    total, per = totalnorm.total_norm(tensors, case.p, dtype=case.dtype, per_tensor=True)
    if not equal_bits_nan_any(total, totalnorm.total_norm(tensors, case.p, dtype=case.dtype)):
        return f"per_tensor=True total {total!r} is not the total-only call's bits"
    if per.shape != (len(tensors),) or per.dtype != want_dtype:
        return f"per_tensor has shape {tuple(per.shape)} and dtype {per.dtype}"
    for i, t in enumerate(tensors):
        failure = value_error(per[i], reference_norm(_resolved([t]), float(case.p)), case.p)
        if failure:
            return f"per_tensor[{i}]: {failure}"
    return None


def _norm_error(case, tensors, got, want, want_dtype) -> Optional[str]:
    if not isinstance(got, torch.Tensor) or got.dim() != 0:
        return f"not a 0-dim tensor: {got!r}"
    if got.dtype != want_dtype:
        return f"dtype {got.dtype}, want {want_dtype}"
    want_device = tensors[0].device if tensors else torch.device("cpu")
    if got.device != want_device or got.requires_grad:
        return f"device {got.device} (want {want_device}), requires_grad {got.requires_grad}"
    return value_error(got, want, case.p)


def params_with_grads(grads) -> list:
    """A Parameter for each grad (zeros of its shape and dtype) with the grad itself as .grad."""
    params = []
    for g in grads:
        p = torch.nn.Parameter(torch.zeros(g.shape, dtype=g.dtype, device=g.device))
        p.grad = g
        params.append(p)
    return params


def _torch_clip(case: Case, grads) -> torch.Tensor:
    with warnings.catch_warnings():
        # Its foreach norm of complex grads warns about discarding imaginary parts.
        warnings.simplefilter("ignore")
        return torch.nn.utils.clip_grad_norm_(params_with_grads(grads), case.max_norm, case.p, case.error_if_nonfinite)


def run_clip_case(case: Case) -> Outcome:
    ours = case.tensors()
    before = snapshot(ours)
    want = reference_norm(_resolved(ours), float(case.p))
    try:
        total = totalnorm.clip_grad_norm_(params_with_grads(ours), case.max_norm, case.p, case.error_if_nonfinite)
    except RuntimeError as err:
        if not case.error_if_nonfinite or "total norm of order" not in str(err):
            # Overlapping grads, conjugate/negative views: torch rejects them too.
            try:
                _torch_clip(case, case.tensors())
            except RuntimeError:
                modified = changed(ours, before)
                return Outcome(modified and f"raised ({err}) and {modified}")
            return Outcome(f"raised {type(err).__name__} where torch does not: {err}")
        plain = totalnorm.total_norm(ours, case.p)
        if math.isfinite(plain.item()):
            return Outcome(f"raised for a finite norm {plain.item()!r}: {err}")
        return Outcome(changed(ours, before))  # a rejected clip changes nothing
    if not ours:
        return Outcome(None if total.item() == 0 else f"empty list gave {total.item()!r}")
    outcome = Outcome(_norm_error(case, ours, total, want, expected_dtype(ours)))
    if outcome.failure or outcome.skipped:
        return Outcome(outcome.failure and f"returned norm: {outcome.failure}", outcome.skipped)
    if case.error_if_nonfinite and not math.isfinite(total.item()):
        return Outcome(f"error_if_nonfinite=True returned the non-finite {total.item()!r}")
    # torch's own clip: bit for bit where its norm is ours.
    theirs = case.tensors()
    try:
        their_total = _torch_clip(case, theirs)
    except RuntimeError:
        their_total = None  # torch raises for p = +-inf over an empty tensor, or on its own inf
    if their_total is None or their_total.dtype != total.dtype or not equal_bits_nan_any(their_total, total):
        # Otherwise torch's scaling given our norm.
        theirs = case.tensors()
        torch.nn.utils.clip_grads_with_norm_(params_with_grads(theirs), case.max_norm, total)
    coef = torch.clamp(case.max_norm / (total + 1e-6), max=1.0).item()
    for i, (a, b) in enumerate(zip(ours, theirs)):
        if not equal_bits_nan_any(a, b):
            diff = (a.detach().resolve_conj() != b.detach().resolve_conj()).nonzero()[:3].tolist()
            return Outcome(f"grads[{i}] differs from torch (norm {total.item()!r}, coefficient {coef!r}; "
                           f"first differing indices {diff})")
    return Outcome()


def run_case(case: Case) -> Outcome:
    try:
        return run_clip_case(case) if case.clip else run_norm_case(case)
    except Exception as err:  # noqa: BLE001  (any crash of a case is a failure to report)
        return Outcome(f"crashed: {type(err).__name__}: {err}")


def report(case: Case, outcome: Outcome) -> str:
    return f"seed {case.seed}: {outcome.failure}\n{case.describe()}\n  reproduce: {case.reproducer()}"


def run_seeds(seeds, clip: bool, on_failure: Callable[[str], None] = print,
              device: str = "cpu") -> tuple[int, int, list]:
    """Runs the cases of `seeds` on `device`; returns (checked, known-break count, failure reports)."""
    failures, known = [], 0
    for seed in seeds:
        case = make_case(seed, clip, device)
        outcome = run_case(case)
        if outcome.skipped:
            known += 1
        if outcome.failure:
            text = report(case, outcome)
            failures.append(text)
            on_failure(text)
    return len(seeds), known, failures


def main(argv: list) -> int:
    clip = "--clip" in argv
    device = "cpu"
    if "--device" in argv:
        at = argv.index("--device")
        device = argv[at + 1]
        argv = argv[:at] + argv[at + 2:]
    seeds = [int(a) for a in argv if a != "--clip"]
    if not seeds:
        print(__doc__)
        return 2
    status = 0
    for seed in seeds:
        case = make_case(seed, clip, device)
        print(case.describe())
        tensors = case.tensors()
        if not clip:
            print(f"  reference (float64): {reference_norm(_resolved(tensors), float(case.p))!r}")
            try:
                print(f"  totalnorm: {totalnorm.total_norm(tensors, case.p, dtype=case.dtype)!r}")
            except RuntimeError as err:
                print(f"  totalnorm raised: {err}")
        outcome = run_case(case)
        print(f"  {'FAIL: ' + outcome.failure if outcome.failure else 'ok'}"
              f"{' (' + outcome.skipped + ')' if outcome.skipped else ''}")
        status |= outcome.failure is not None
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
