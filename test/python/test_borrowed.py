"""totalnorm._borrowed: the Python entry that borrows a plain list's tensors.

totalnorm.total_norm, get_total_norm and clip_grad_norm_ call it for a plain list
of plain tensors; it must behave exactly like torch.ops.totalnorm (same results,
same errors, same dispatch: autograd version counters, dispatch modes, the
tracer) and hand every other call back (NotImplemented) so torch.ops takes it.
Borrowing means no reference is taken per tensor: the items must stay alive
while the GIL is released, even when another thread empties the list.
"""
from __future__ import annotations

import math
import sys
import threading
import time

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


def test_a_subclass_with_torch_function_still_sees_the_call():
    TensorWithTorchFunction.seen.clear()
    t = [torch.randn(3), torch.randn(4).as_subclass(TensorWithTorchFunction)]
    got = totalnorm.total_norm(t)
    assert OPS.total_norm.default in TensorWithTorchFunction.seen
    assert_norm(got, [x.as_subclass(torch.Tensor) for x in t], 2.0)


@pytest.mark.parametrize("mode", [TorchFunctionMode, TorchDispatchMode])
def test_an_active_mode_sees_the_operators(mode):
    # A torch function mode makes the borrowed entry hand the call back; a Python
    # dispatch mode (a thread-local dispatch key) intercepts the dispatcher call the
    # borrowed entry makes, as it intercepts torch.ops.
    seen = []
    hook = "__torch_function__" if mode is TorchFunctionMode else "__torch_dispatch__"

    def record(self, func, types, args=(), kwargs=None):
        seen.append(func)
        return func(*args, **(kwargs or {}))

    t = [torch.randn(3), torch.randn(4)]
    param = torch.nn.Parameter(torch.randn(3))
    param.grad = torch.randn(3)
    with type("Record", (mode,), {hook: record})():
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


def test_items_stay_alive_while_another_thread_empties_the_list():
    # The list holds the only references to these tensors (1 MB each: freeing one
    # unmaps its memory). The main thread clears the list while the worker's call
    # runs with the GIL released; the borrowed entry keeps the items alive for the
    # call, so the result is still the norm of all of them. Runs where the clear
    # did not fall inside the call are not counted; at least one must.
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        torch.set_num_threads(1)
        inside = 0
        for _ in range(20):
            tensors = [torch.full((1 << 18,), 0.5) for _ in range(64)]
            want = math.sqrt(64 * (1 << 18) * 0.25)
            clock = {}

            def work():
                clock["start"] = time.perf_counter()
                clock["out"] = B.total_norm(tensors, 2.0, False, None)
                clock["end"] = time.perf_counter()

            worker = threading.Thread(target=work)
            worker.start()
            while "start" not in clock:
                pass
            tensors.clear()
            clock["clear"] = time.perf_counter()
            worker.join()
            if clock["out"] is NotImplemented:
                continue  # the list was empty before the call read it
            assert clock["out"].item() == want
            inside += clock["start"] < clock["clear"] < clock["end"]
        assert inside > 0
    finally:
        sys.setswitchinterval(switch_interval)
