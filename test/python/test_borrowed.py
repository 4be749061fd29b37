"""totalnorm._borrowed: the Python entry that passes a plain list to the operators.

totalnorm.total_norm, get_total_norm and clip_grad_norm_ (and the across-ranks path's
partials and scale_) call it for a plain list of plain tensors; it must behave exactly
like torch.ops.totalnorm (same results, same errors, same dispatch: autograd version
counters, dispatch modes, the tracer) and hand every other call back (NotImplemented)
so torch.ops takes it. Short calls borrow the tensors with the GIL held; long ones own
them with the GIL released, and must survive what other threads do to the list meanwhile.
"""
from __future__ import annotations

import gc
import math
import sys
import threading
import time
import warnings

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

import totalnorm
from reference import assert_bitwise_equal, assert_norm, sample

B = totalnorm._borrowed
OPS = torch.ops.totalnorm


def test_the_installed_package_has_the_borrowed_entry():
    # Built by setup.py (CMake target totalnorm_python); without it every call takes torch.ops.
    assert B is not None
    assert totalnorm._fast_total_norm is B.total_norm
    assert totalnorm._fast_clip_grad_norm_ is B.clip_grad_norm_


def mixed_list(device: str) -> list[torch.Tensor]:
    return [
        sample((3, 5), torch.float32, device=device, seed=1),
        sample((7,), torch.float16, device=device, seed=2),
        sample((4, 4), torch.float64, device=device, seed=3).t(),  # dense, not contiguous
        sample((6, 6), torch.bfloat16, device=device, seed=4)[::2],  # strided
        sample((2, 3), torch.complex64, device=device, seed=5),
        torch.empty(0, device=device),
        torch.nn.Parameter(sample((5,), torch.float32, device=device, seed=6)),
    ]


@pytest.mark.parametrize("p", [2.0, 1.0, 0.0, 3.5, math.inf, -math.inf])
@pytest.mark.parametrize("dtype", [None, torch.float64, torch.bfloat16])
def test_total_norm_has_the_bits_of_torch_ops(device, p, dtype):
    tensors = mixed_list(device)
    got = B.total_norm(tensors, p, False, dtype)
    want = OPS.total_norm.default(tensors, p, False, dtype)
    assert got is not NotImplemented
    assert got.dtype == want.dtype and got.device == want.device
    assert_bitwise_equal(got, want)
    assert_norm(got, tensors, p, dtype=dtype)


def test_clip_has_the_bits_of_torch_ops_and_bumps_versions(device):
    grads = [sample((300,), torch.float32, device=device, seed=s) for s in range(5)]
    ours = [g.clone() for g in grads]
    theirs = [g.clone() for g in grads]
    versions = [g._version for g in ours]
    got = B.clip_grad_norm_(ours, 0.5, 2.0, False)
    want = OPS.clip_grad_norm_.default(theirs, 0.5, 2.0, False)
    assert_bitwise_equal(got, want)
    for a, b in zip(ours, theirs):
        assert_bitwise_equal(a, b)
    # The Autograd kernel (reached through the dispatcher) records the in-place write.
    assert [g._version for g in ours] == [v + 1 for v in versions]


def test_the_steps_have_the_bits_of_torch_ops(device):
    # partials and scale_: what the across-ranks path calls on each rank's local tensors.
    tensors = mixed_list(device)
    for p in (2.0, 0.0, math.inf, 3.5):
        assert_bitwise_equal(B.partials(tensors, p), OPS.partials.default(tensors, p))
    grads = [sample((257,), dtype, device=device, seed=7) for dtype in (torch.float32, torch.bfloat16)]
    ours, theirs = [g.clone() for g in grads], [g.clone() for g in grads]
    coef = torch.tensor(0.37, dtype=torch.float64, device=device)
    assert B.scale_(ours, coef) is None
    OPS.scale_.default(theirs, coef)
    for a, b in zip(ours, theirs):
        assert_bitwise_equal(a, b)
    assert not torch.equal(ours[0], grads[0])


def test_the_public_functions_take_it():
    grads = [torch.randn(10) for _ in range(50)]
    params = [torch.nn.Parameter(torch.zeros(10)) for _ in grads]
    for p, g in zip(params, grads):
        p.grad = g
    calls = []
    real_norm, real_clip = totalnorm._fast_total_norm, totalnorm._fast_clip_grad_norm_

    def spy(real):
        def call(*args):
            calls.append((real.__name__, len(args[0])))
            return real(*args)

        return call

    totalnorm._fast_total_norm, totalnorm._fast_clip_grad_norm_ = spy(real_norm), spy(real_clip)
    try:
        a = totalnorm.total_norm(grads)
        b = totalnorm.get_total_norm(params)
        c = totalnorm.clip_grad_norm_(params, 1e9)
    finally:
        totalnorm._fast_total_norm, totalnorm._fast_clip_grad_norm_ = real_norm, real_clip
    assert calls == [("total_norm", 50), ("total_norm", 50), ("clip_grad_norm_", 50)]
    assert_bitwise_equal(a, b)
    assert_bitwise_equal(a, c)


class TensorWithTorchFunction(torch.Tensor):
    seen: list = []

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        cls.seen.append(func)
        return super().__torch_function__(func, types, args, kwargs or {})


def handed_back_cases() -> dict:
    t = [torch.randn(3), torch.randn(4)]
    sub = [t[0], t[1].as_subclass(TensorWithTorchFunction)]
    return {
        "tuple": ((tuple(t), 2.0, False, None), (tuple(t), 1.0, 2.0, False)),
        "empty": (([], 2.0, False, None), ([], 1.0, 2.0, False)),
        "not a tensor": (([t[0], 3.0], 2.0, False, None), ([t[0], 3.0], 1.0, 2.0, False)),
        "subclass": ((sub, 2.0, False, None), (sub, 1.0, 2.0, False)),
        "int order": ((t, 2, False, None), (t, 1.0, 2, False)),
        "int flag": ((t, 2.0, 0, None), (t, 1.0, 2.0, 0)),
        "int max_norm / str dtype": ((t, 2.0, False, "float64"), (t, 1, 2.0, False)),
        "too few arguments": ((t, 2.0), (t, 1.0)),
    }


@pytest.mark.parametrize("case", list(handed_back_cases()))
def test_anything_but_the_plain_case_is_handed_back(case):
    norm_args, clip_args = handed_back_cases()[case]
    assert B.total_norm(*norm_args) is NotImplemented
    assert B.clip_grad_norm_(*clip_args) is NotImplemented
    if case in ("tuple", "empty", "not a tensor", "subclass"):  # the steps take the same lists
        assert B.partials(clip_args[0], 2.0) is NotImplemented
        assert B.scale_(clip_args[0], torch.tensor(1.0)) is NotImplemented


@pytest.mark.parametrize("case", ["int order", "coef subclass", "coef not a tensor", "too few arguments"])
def test_the_steps_hand_back_the_rest(case):
    t = [torch.randn(3), torch.randn(4)]
    coef = torch.tensor(0.5)
    args = {
        "int order": (("partials", (t, 2)),),
        "coef subclass": (("scale_", (t, coef.as_subclass(TensorWithTorchFunction))),),
        "coef not a tensor": (("scale_", (t, 0.5)),),
        "too few arguments": (("partials", (t,)), ("scale_", (t,))),
    }[case]
    for name, a in args:
        assert getattr(B, name)(*a) is NotImplemented


def test_a_subclass_with_torch_function_still_sees_the_call():
    TensorWithTorchFunction.seen.clear()
    t = [torch.randn(3), torch.randn(4).as_subclass(TensorWithTorchFunction)]
    got = totalnorm.total_norm(t)
    assert OPS.total_norm.default in TensorWithTorchFunction.seen
    assert_norm(got, [x.as_subclass(torch.Tensor) for x in t], 2.0)


@pytest.mark.parametrize("mode", [TorchFunctionMode, TorchDispatchMode])
def test_an_active_mode_sees_the_operators(mode):
    # Either mode makes the borrowed entry hand the call back (a mode runs Python
    # code inside the call, which may let other threads at the list); torch.ops then
    # shows it the operators.
    seen = []
    hook = "__torch_function__" if mode is TorchFunctionMode else "__torch_dispatch__"

    def record(self, func, types, args=(), kwargs=None):
        seen.append(func)
        return func(*args, **(kwargs or {}))

    t = [torch.randn(3), torch.randn(4)]
    param = torch.nn.Parameter(torch.randn(3))
    param.grad = torch.randn(3)
    with type("Record", (mode,), {hook: record})():
        assert B.total_norm(t, 2.0, False, None) is NotImplemented
        assert B.partials(t, 2.0) is NotImplemented
        got = totalnorm.total_norm(t)
        totalnorm.clip_grad_norm_([param], 1.0)
    assert OPS.total_norm.default in seen
    assert OPS.clip_grad_norm_.default in seen
    assert_norm(got, t, 2.0)


def test_the_tracer_records_the_operator():
    t = [torch.randn(3), torch.randn(4)]
    traced = torch.jit.trace(lambda a, b: totalnorm.total_norm([a, b]), tuple(t), check_trace=False)
    assert "totalnorm::total_norm" in str(traced.graph)
    assert_bitwise_equal(traced(*t), totalnorm.total_norm(t))


@pytest.mark.parametrize("bad", ["nan order", "integer tensor", "mixed devices"])
def test_errors_are_those_of_torch_ops(bad):
    t = [torch.randn(3), torch.randn(4)]
    if bad == "nan order":
        args = (t, math.nan, False, None)
    elif bad == "integer tensor":
        args = ([t[0], torch.ones(2, dtype=torch.int64)], 2.0, False, None)
    else:
        args = ([t[0], torch.empty(2, device="meta")], 2.0, False, None)
    with pytest.raises(Exception) as ours:
        B.total_norm(*args)
    with pytest.raises(Exception) as theirs:
        OPS.total_norm.default(*args)
    assert type(ours.value) is type(theirs.value)
    assert str(ours.value) == str(theirs.value)
    assert "tensors[1]" in str(ours.value) or bad == "nan order"


def test_error_if_nonfinite_raises_and_clip_leaves_gradients_alone():
    grads = [torch.randn(4), torch.tensor([1.0, math.inf])]
    before = [g.clone() for g in grads]
    with pytest.raises(RuntimeError, match="non-finite"):
        B.clip_grad_norm_(grads, 1.0, 2.0, True)
    for a, b in zip(grads, before):
        assert_bitwise_equal(a, b)


def constant_norm(tensors: list[torch.Tensor]) -> float:
    """The 2-norm of float32 tensors each filled with one value, rounded as the op
    rounds it: these sums of squares are exact in float64, so the op's float64 sum
    and square root are those below, then rounded once to float32."""
    squares = math.fsum(t.numel() * t[0].item() ** 2 for t in tensors)
    return torch.tensor(math.sqrt(squares), dtype=torch.float64).float().item()


def race_with_the_call(tensors: list, interfere):
    """B.total_norm(tensors) in a worker thread, and interfere(tensors) in this one
    2 ms after the worker starts (well inside a call of about 10 ms, though a busy
    machine may put it before or after). Returns the call's result and whether the
    interference happened between the call's start and its return."""
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        clock = {}

        def work():
            clock["start"] = time.perf_counter()
            clock["out"] = B.total_norm(tensors, 2.0, False, None)
            clock["end"] = time.perf_counter()

        worker = threading.Thread(target=work)
        worker.start()
        while "start" not in clock:
            time.sleep(0)
        time.sleep(0.002)
        interfere(tensors)
        done = time.perf_counter()
        worker.join()
    finally:
        sys.setswitchinterval(switch_interval)
    return clock["out"], clock["start"] < done < clock["end"]


def big_list() -> list[torch.Tensor]:
    # 160 MiB on the CPU, past the 128 MiB up to which calls keep the GIL: this call
    # releases it, holding owning references. 4 MiB tensors: freeing one unmaps it.
    return [torch.full((1 << 20,), 0.5 + i / 64) for i in range(40)]


def test_items_stay_alive_while_another_thread_empties_the_list():
    # The list holds the only references; clearing it during the call must not free
    # what the call reads. (A clear before the call leaves an empty list: handed back.)
    torch.set_num_threads(1)
    inside = 0
    for _ in range(10):
        tensors = big_list()
        want = constant_norm(tensors)
        out, during = race_with_the_call(tensors, list.clear)
        assert out is NotImplemented or out.item() == want
        inside += during and out is not NotImplemented
    assert inside > 0


def test_a_tensor_being_read_cannot_be_swapped():
    # torch.utils.swap_tensors refuses a tensor that C++ also holds (its count is
    # above 1), as it does during a call through torch.ops; a swap that went through
    # would free the storage the call is reading. Before or after the call a swap
    # succeeds, and the call reads the list as it is then.
    torch.set_num_threads(1)
    refused = 0
    reuse = []
    for _ in range(10):
        tensors = big_list()
        want = constant_norm(tensors)
        want_swapped = constant_norm(tensors[:-1])  # the last one becomes three zeros

        def swap(items):
            nonlocal refused
            other = torch.zeros(3)
            try:
                torch.utils.swap_tensors(items[-1], other)
            except RuntimeError:
                refused += 1
                return
            del other  # frees the swapped-out tensor's storage
            reuse.append(torch.full((1 << 22,), 1e30))  # and reuses it

        out, _ = race_with_the_call(tensors, swap)
        assert out.item() in (want, want_swapped)
    assert refused > 0


def test_a_garbage_collection_during_the_call_cannot_free_an_item():
    # A finalizer run by a collection replaces the last item (its only reference).
    # Items hold references to the list's objects before anything can allocate, so
    # the call reads either the old list or the new one, never freed memory.
    tensors = [torch.full((1 << 22,), 1.0) for _ in range(24)]
    before = constant_norm(tensors)

    class Finalizer:
        def __del__(self):
            tensors[-1] = torch.full((4,), 3.0)

    gc.disable()
    try:
        cycle = Finalizer()
        cycle.self = cycle
        del cycle
        threshold = gc.get_threshold()
        gc.set_threshold(1)
        gc.enable()
        got = B.total_norm(tensors, 2.0, False, None)
    finally:
        gc.set_threshold(*threshold)
        gc.enable()
    assert got.item() in (before, constant_norm(tensors))


def test_the_coefficient_being_used_cannot_be_swapped():
    # scale_ owns its coefficient as torch.ops does: during a call that released the
    # GIL, swapping the coefficient tensor is refused, and every tensor is scaled by
    # the value it had when the call started.
    torch.set_num_threads(1)
    refused = 0
    for _ in range(10):
        tensors = big_list()
        want = [t[0].item() * 0.5 for t in tensors]
        coef = torch.tensor(0.5, dtype=torch.float64)
        clock = {}

        def work():
            clock["start"] = True
            clock["out"] = B.scale_(tensors, coef)

        worker = threading.Thread(target=work)
        worker.start()
        while "start" not in clock:
            time.sleep(0)
        time.sleep(0.002)
        other = torch.tensor(4.0, dtype=torch.float64)
        try:
            torch.utils.swap_tensors(coef, other)
        except RuntimeError:
            refused += 1
        del other
        worker.join()
        assert clock["out"] is None
        got = [t[0].item() for t in tensors]
        # A swap before the call started scales by 4.
        assert got == want or got == [w * 8 for w in want]
    assert refused > 0


def test_calls_keep_the_gil_only_when_short():
    # The policy (csrc/python/borrowed_lists.cpp, Work): CPU calls up to about 128 MiB
    # of float32 reading keep it; general orders cost 128x, clipping 3 passes, each
    # tensor 1 KiB more; accelerator calls keep it unless they wait for the result.
    small = [torch.ones(1 << 16) for _ in range(64)]  # 16 MiB
    mid = [torch.ones(1 << 18) for _ in range(64)]  # 64 MiB
    zero_dim = [torch.ones(()) for _ in range(100_000)]
    releases = B._releases_gil
    assert releases(small, 1, 2.0, False) is False
    assert releases(small, 1, math.inf, False) is False
    assert releases(small, 1, 3.5, False) is True  # pow() per element
    assert releases(mid, 1, 2.0, False) is False
    assert releases(mid, 3, 2.0, False) is True  # clipping reads twice and writes once
    assert releases(big_list(), 1, 2.0, False) is True
    assert releases(zero_dim, 1, 2.0, False) is False
    assert releases(zero_dim, 3, 2.0, False) is True  # clipped 0-dim tensors go to torch's mul_
    meta = [torch.empty(1 << 30, device="meta")]  # not the CPU: asynchronous unless waited for
    assert releases(meta, 1, 2.0, False) is False
    assert releases(meta, 1, 2.0, True) is True
    assert releases(small + meta, 1, 2.0, False) is True  # mixed devices may copy and wait


# --- local_parts and local_summary: the across-ranks path's passes over the list ---
# local_parts takes the DTensor type as an argument; here a stand-in Tensor subclass
# with the attributes it reads (test_distributed.py compares it with real DTensors).


class _Spec:
    def __init__(self, mesh, placements):
        self.mesh, self.placements = mesh, placements


class _Kind:
    """Stand-ins for placement kinds: the key is the tuple of their types."""


class _Other:
    pass


class FakeDTensor(torch.Tensor):
    pass


def fake_dtensor(local: torch.Tensor, mesh, placements) -> FakeDTensor:
    t = torch.empty(0).as_subclass(FakeDTensor)
    t._spec, t._local_tensor = _Spec(mesh, placements), local
    return t


def test_local_parts_decides_once_per_mesh_and_placement_kinds():
    mesh_a, mesh_b = object(), object()
    calls = []

    def counts_here(fn, arg, i, mesh, placements):
        calls.append((fn, arg, i, mesh, type(placements[0])))
        return mesh is mesh_a and type(placements[0]) is _Kind

    parts = [torch.randn(k + 1) for k in range(6)]
    plain = torch.nn.Parameter(torch.randn(2))
    items = [fake_dtensor(parts[0], mesh_a, (_Kind(),)), plain, fake_dtensor(parts[1], mesh_b, (_Kind(),)),
             fake_dtensor(parts[2], mesh_a, (_Other(),)), fake_dtensor(parts[3], mesh_a, (_Kind(),)),
             fake_dtensor(parts[4], mesh_b, (_Kind(),)), fake_dtensor(parts[5], mesh_a, [_Kind()])]
    assert B.local_parts(items, FakeDTensor, counts_here, "f", "grads") is NotImplemented  # a list of placements
    calls.clear()
    counted, local, meshes = B.local_parts(items[:-1], FakeDTensor, counts_here, "f", "grads")
    assert [c[2] for c in calls] == [0, 2, 3] and all(c[:2] == ("f", "grads") for c in calls)
    assert [id(t) for t in counted] == [id(parts[0]), id(plain), id(parts[3])]
    assert [id(t) for t in local] == [id(parts[0]), id(plain), id(parts[1]), id(parts[2]), id(parts[3]), id(parts[4])]
    assert [id(m) for m in meshes] == [id(mesh_a), id(mesh_b)]


def test_local_parts_raises_what_counts_here_raises_and_hands_back_the_rest():
    mesh = object()

    def refuses(fn, arg, i, mesh, placements):
        raise ValueError(f"{fn}: {arg}[{i}] refused")

    good = fake_dtensor(torch.ones(2), mesh, (_Kind(),))
    with pytest.raises(ValueError, match=r"^f: tensors\[1\] refused$"):
        B.local_parts([torch.ones(1), good], FakeDTensor, refuses, "f", "tensors")
    for other in ("not a tensor", torch.ones(1).as_subclass(TensorWithTorchFunction)):
        assert B.local_parts([good, other], FakeDTensor, lambda *a: True, "f", "t") is NotImplemented
    assert B.local_parts((good,), FakeDTensor, lambda *a: True, "f", "t") is NotImplemented
    assert B.local_parts([], FakeDTensor, lambda *a: True, "f", "t") == ([], [], [])


def test_local_parts_survives_a_decision_that_empties_the_list_and_collects_garbage():
    # The item being read and the key's mesh and types are owned across the call into
    # Python; the list is read again at every index, as a Python loop reads it.
    items = [fake_dtensor(torch.full((3,), float(k)), object(), (_Kind(),)) for k in range(4)]

    def clears(fn, arg, i, mesh, placements):
        items.clear()
        gc.collect()
        return True

    counted, local, meshes = B.local_parts(items, FakeDTensor, clears, "f", "t")
    assert len(counted) == len(local) == len(meshes) == 1 and counted[0] is local[0]
    assert counted[0].tolist() == [0.0, 0.0, 0.0]


def test_local_summary_is_the_result_dtype_and_the_common_device():
    from totalnorm.distributed import result_dtype

    cases = [
        ([torch.ones(2, dtype=torch.bfloat16), torch.ones(1, dtype=torch.float16)], torch.float32),
        ([torch.ones(2, dtype=torch.complex128), torch.ones(1, dtype=torch.float32)], torch.float64),
        ([torch.ones(2, dtype=torch.complex64), torch.nn.Parameter(torch.ones(1, dtype=torch.bfloat16))],
         torch.float32),
        ([torch.ones(2, dtype=torch.float16)] * 3, torch.float16),
    ]
    for tensors, want in cases:
        assert B.local_summary(tensors) == (want, torch.device("cpu"))
        assert result_dtype(tensors, None) == want
    assert B.local_summary([torch.ones(1), torch.ones(1, device="meta")]) == (torch.float32, None)
    with warnings.catch_warnings():  # "ComplexHalf support is experimental"
        warnings.simplefilter("ignore", UserWarning)
        # complex32: result_dtype keeps it (torch.complex32 has no entry in _REAL_OF)
        complex_half = torch.ones(1, dtype=torch.complex32)
    handed_back = [[], (torch.ones(1),), [torch.ones(1), 2.0], [torch.ones(1, dtype=torch.int64)],
                   [complex_half], [torch.ones(1).as_subclass(TensorWithTorchFunction)]]
    for tensors in handed_back:
        assert B.local_summary(tensors) is NotImplemented
    plain = [torch.ones(1)]
    with TorchFunctionMode():  # Python's .dtype reads would reach the mode
        assert B.local_summary(plain) is NotImplemented
