"""totalnorm: the global p-norm of a list of tensors as a PyTorch operator.

Importing this package loads ``libtotalnorm.so``, which registers the operators
``torch.ops.totalnorm.total_norm`` and ``torch.ops.totalnorm.clip_grad_norm_``
with the dispatcher (CPU, CUDA, Meta and Autograd kernels). The functions here
are thin, typed wrappers that turn Python iterables into tensor lists.
"""
from __future__ import annotations

import importlib
import operator
import sys
from pathlib import Path
from typing import Iterable, NamedTuple, Optional, Union

import torch

__all__ = [
    "total_norm",
    "get_total_norm",
    "clip_grad_norm_",
    "PerTensorNorms",
    "GradNorms",
    "named_grad_norms",
    "library_path",
    "__version__",
]

from ._version import __version__  # noqa: E402


def library_path() -> str:
    """Path of the shared library holding the operators (for C++ and TorchScript users)."""
    return str(Path(__file__).resolve().parent / "libtotalnorm.so")


from ._loader import load as _load  # noqa: E402

_built_for_this_torch = _load(Path(library_path()))

# The operators on borrowed list items (csrc/python/borrowed_lists.cpp): the same
# dispatcher calls as torch.ops, without torch's per-tensor cost of building and
# releasing an owning Tensor[] (about 90 ns a tensor). Only with a build record naming
# the running torch (it links torch's Python bindings, whose ABI is less stable still),
# and where it was built (Python's headers found): else torch.ops serves every call.
_borrowed = None
if _built_for_this_torch:
    try:
        _borrowed = importlib.import_module(f"{__name__}._borrowed")
    except ImportError:
        pass
_fast_total_norm = getattr(_borrowed, "total_norm", None)
_fast_clip_grad_norm_ = getattr(_borrowed, "clip_grad_norm_", None)
_fast_total_norm_per_tensor = getattr(_borrowed, "total_norm_per_tensor", None)
_fast_clip_grad_norm_per_tensor_ = getattr(_borrowed, "clip_grad_norm_per_tensor_", None)
_fast_partials = getattr(_borrowed, "partials", None)
_fast_scale_ = getattr(_borrowed, "scale_", None)
_fast_local_parts = getattr(_borrowed, "local_parts", None)
_fast_local_summary = getattr(_borrowed, "local_summary", None)

TensorOrTensors = Union[torch.Tensor, Iterable[torch.Tensor]]


class PerTensorNorms(NamedTuple):
    """What ``per_tensor=True`` returns: the total norm and every tensor's own norm.

    ``total`` is bitwise what the call returns without ``per_tensor``;
    ``per_tensor`` is 1-D, one entry per tensor (per parameter with a gradient),
    in order, in the total's dtype and on its device.
    """

    total: torch.Tensor
    per_tensor: torch.Tensor


def _as_tensor_list(tensors: TensorOrTensors) -> list[torch.Tensor]:
    if isinstance(tensors, torch.Tensor):
        return [tensors]
    return tensors if type(tensors) is list else list(tensors)


def _fast_or(op, fast, *args):
    """op(*args), through `fast`, op's borrowed-list entry, where that takes the call.

    The entry takes a plain list of plain tensors (not under Dynamo, which traces
    torch.ops); it returns NotImplemented for anything else, which torch.ops then takes.
    """
    if fast is not None and not torch.compiler.is_compiling():
        out = fast(*args)
        if out is not NotImplemented:
            return out
    return op(*args)


def _call(op, fast, fn: str, name: str, items: list, *args):
    """`_fast_or(op, fast, items, *args)`; when the list is rejected, names the first
    entry that is not a Tensor.

    The entries are only inspected on failure: a loop over thousands of tensors in
    Python would cost more than the reduction itself.
    """
    try:
        return _fast_or(op, fast, items, *args)
    except (TypeError, RuntimeError):
        for i, t in enumerate(items):
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"{fn}: {name}[{i}] is a {type(t).__name__}, not a Tensor") from None
        raise


def _as_norm_type(fn: str, norm_type) -> float:
    """norm_type as the op's float, with an error naming it for what float() rejects."""
    if isinstance(norm_type, (complex, str, bytes)) or norm_type is None:
        raise TypeError(f"{fn}: norm_type must be a real number (or inf, -inf), got {norm_type!r}")
    return float(norm_type)


def _across_ranks(items: list, group) -> bool:
    """Whether the call needs a collective: a group was given, or a DTensor is in the list."""
    if group is not None:
        return True
    dtensor_module = sys.modules.get("torch.distributed.tensor")
    if dtensor_module is None:  # DTensor was never imported, so there is none to find
        return False
    dtensor = dtensor_module.DTensor
    if torch.compiler.is_compiling():
        return any(isinstance(t, dtensor) for t in items)
    return any(issubclass(kind, dtensor) for kind in set(map(type, items)))


def total_norm(
    tensors: TensorOrTensors,
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
    foreach: Optional[bool] = None,
    *,
    dtype: Optional[torch.dtype] = None,
    group=None,
    per_tensor: bool = False,
) -> Union[torch.Tensor, PerTensorNorms]:
    """The p-norm of all elements of ``tensors``, as if they were concatenated.

    A drop-in for ``torch.nn.utils.get_total_norm``: equal to
    ``torch.linalg.vector_norm(torch.cat([t.flatten() for t in tensors]).double(), norm_type)``
    rounded once to the result dtype, computed in one pass over the bytes with
    float64 accumulation.

    Args:
        tensors: a tensor or an iterable of tensors (float16, bfloat16, float32,
            float64, complex64, complex128; any shape, layout and device).
        norm_type: the order p: any number but NaN, including 0 (count of
            non-zero elements), ``inf`` and ``-inf``.
        error_if_nonfinite: raise ``RuntimeError`` when the result is NaN or
            infinite (this reads the result on the host).
        foreach: accepted for compatibility with torch and ignored: the op is
            always a single fused reduction.
        dtype: the result dtype (a floating dtype); default: the promotion of
            the inputs' real dtypes.
        group: a ``torch.distributed`` process group over which the tensors
            are parts of one gradient (pipeline stages, hand-made shards); see
            :mod:`totalnorm.distributed`. DTensors need no group: their meshes
            give it.
        per_tensor: also return every tensor's own norm, from the same read
            (docs/semantics.md, "Per-tensor norms").

    Returns:
        A 0-dim tensor on the first tensor's device that never requires grad.
        An empty list gives ``torch.tensor(0.0)``. Across ranks: a plain tensor,
        bitwise the same on every rank. With ``per_tensor=True``, a
        :class:`PerTensorNorms` ``(total, per_tensor)``.
    """
    del foreach
    items = _as_tensor_list(tensors)
    p = _as_norm_type("total_norm", norm_type)
    if _across_ranks(items, group):
        from . import distributed

        if per_tensor:
            return PerTensorNorms(
                *distributed.norms_across("total_norm", "tensors", items, p, error_if_nonfinite, dtype, group)
            )
        return distributed.norm_across("total_norm", "tensors", items, p, error_if_nonfinite, dtype, group)
    empty = not items
    if empty and torch.compiler.is_compiling():
        # An empty list gives fake tensors no device to follow; an empty CPU tensor
        # of the default dtype gives the same zero, and the op still checks norm_type.
        items = [torch.empty(0)]
    if per_tensor:
        op = torch.ops.totalnorm.total_norm_per_tensor.default
        total, per = _call(
            op, _fast_total_norm_per_tensor, "total_norm", "tensors", items, p, error_if_nonfinite, dtype
        )
        return PerTensorNorms(total, per[:0] if empty else per)
    op = torch.ops.totalnorm.total_norm.default
    return _call(op, _fast_total_norm, "total_norm", "tensors", items, p, error_if_nonfinite, dtype)


_grad_of = operator.attrgetter("grad")


def _grads(fn: str, parameters: TensorOrTensors) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The parameters as a list, and their defined gradients in order.

    One ``.grad`` read per parameter, in C (map/attrgetter): with thousands of
    parameters a Python loop would cost more than the reduction. Entries without a
    ``.grad`` are found, and named, only on failure.
    """
    params = _as_tensor_list(parameters)
    try:
        # Dynamo traces the comprehension, not attrgetter.
        grads = [p.grad for p in params] if torch.compiler.is_compiling() else map(_grad_of, params)
        return params, [g for g in grads if g is not None]
    except AttributeError:
        for i, p in enumerate(params):
            if not isinstance(p, torch.Tensor):
                raise TypeError(f"{fn}: parameters[{i}] is a {type(p).__name__}, not a Tensor") from None
        raise


def get_total_norm(
    parameters: TensorOrTensors,
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
    *,
    group=None,
    per_tensor: bool = False,
) -> Union[torch.Tensor, PerTensorNorms]:
    """The p-norm of the gradients of ``parameters`` (docs/semantics.md, Parameters and clipping).

    Parameters whose ``.grad`` is None are skipped; a generator is consumed once.
    No parameters give ``torch.tensor(0.0)``; parameters without any gradient
    give a zero on the first parameter's device, in its dtype. ``group`` and
    DTensor gradients work as in :func:`total_norm`. ``per_tensor=True`` returns
    :class:`PerTensorNorms`, one entry per parameter that has a gradient.
    """
    params, grads = _grads("get_total_norm", parameters)
    p = _as_norm_type("get_total_norm", norm_type)
    return _grads_norm("get_total_norm", params, grads, p, error_if_nonfinite, group, per_tensor)


def _grads_norm(
    fn: str, params: list, grads: list, p: float, error_if_nonfinite: bool, group, per_tensor: bool = False
) -> Union[torch.Tensor, PerTensorNorms]:
    """The norm of ``grads``, the defined gradients of ``params`` (get_total_norm's value; errors name ``fn``)."""
    if _across_ranks(params, group):
        from . import distributed

        if per_tensor:
            return PerTensorNorms(
                *distributed.norms_across(fn, "grads", grads, p, error_if_nonfinite, None, group, params)
            )
        return distributed.norm_across(fn, "grads", grads, p, error_if_nonfinite, None, group, params)
    no_grads = bool(params) and not grads
    if no_grads:
        # No gradients: zero on the first parameter's device, in its dtype (the op checks norm_type).
        grads = [torch.empty(0, dtype=params[0].dtype, device=params[0].device)]
    if per_tensor:
        op = torch.ops.totalnorm.total_norm_per_tensor.default
        total, per = _call(op, _fast_total_norm_per_tensor, fn, "grads", grads, p, error_if_nonfinite, None)
        return PerTensorNorms(total, per[:0] if no_grads else per)
    op = torch.ops.totalnorm.total_norm.default
    return _call(op, _fast_total_norm, fn, "grads", grads, p, error_if_nonfinite, None)


def clip_grad_norm_(
    parameters: TensorOrTensors,
    max_norm: float,
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
    foreach: Optional[bool] = None,
    *,
    optimizer: Optional[torch.optim.Optimizer] = None,
    skip_nonfinite: bool = False,
    scaler=None,
    group=None,
    per_tensor: bool = False,
) -> Union[torch.Tensor, PerTensorNorms]:
    """Clips the gradients of ``parameters`` in place; a drop-in for
    ``torch.nn.utils.clip_grad_norm_``.

    Computes the total norm of the gradients, then multiplies every gradient by
    ``clamp(max_norm / (total + 1e-6), max=1)`` on the device: no host branch
    and no host synchronisation (unless ``error_if_nonfinite``, which checks the
    norm before any gradient is touched). ``foreach`` is accepted and ignored.
    ``group`` and DTensor gradients work as in :func:`total_norm`; every local
    gradient, replicas included, is scaled by the same coefficient.

    With ``optimizer=`` (Adam, AdamW or SGD with ``fused=True``) the gradients are
    not touched: the coefficient is folded into that optimizer's next ``step()``
    (its ``grad_scale``), and ``skip_nonfinite=True`` makes that step a no-op on the
    device when the norm is NaN or infinite. ``scaler=`` is the ``GradScaler`` whose
    scaled gradients these are. See :func:`totalnorm.optim.clip_grad_norm_` and
    docs/fused_optimizers.md.

    Returns:
        The total norm of the gradients before clipping. With ``per_tensor=True``,
        :class:`PerTensorNorms`: the total and each gradient's own norm before
        clipping (one entry per parameter that has a gradient), from the same pass.
    """
    del foreach
    if optimizer is not None or skip_nonfinite or scaler is not None:
        if per_tensor:
            raise ValueError(
                "clip_grad_norm_: per_tensor=True is not supported together with optimizer=, "
                "skip_nonfinite= or scaler= yet; call totalnorm.get_total_norm(..., per_tensor=True) "
                "for the per-tensor norms (a second read of the gradients)"
            )
        from . import optim

        return optim.clip_grad_norm_(
            parameters, max_norm, norm_type, error_if_nonfinite, optimizer, skip_nonfinite, scaler, group
        )
    params, grads = _grads("clip_grad_norm_", parameters)
    p = _as_norm_type("clip_grad_norm_", norm_type)
    if _across_ranks(params, group):
        from . import distributed

        if per_tensor:
            return PerTensorNorms(
                *distributed.clips_across_(
                    "clip_grad_norm_", "grads", grads, float(max_norm), p, error_if_nonfinite, group, params
                )
            )
        return distributed.clip_across_(
            "clip_grad_norm_", "grads", grads, float(max_norm), p, error_if_nonfinite, group, params
        )
    if per_tensor:
        op = torch.ops.totalnorm.clip_grad_norm_per_tensor_.default
        return PerTensorNorms(
            *_call(
                op, _fast_clip_grad_norm_per_tensor_, "clip_grad_norm_", "grads", grads, float(max_norm), p,
                error_if_nonfinite,
            )
        )
    op = torch.ops.totalnorm.clip_grad_norm_.default
    return _call(op, _fast_clip_grad_norm_, "clip_grad_norm_", "grads", grads, float(max_norm), p, error_if_nonfinite)


from .monitor import GradNorms, named_grad_norms  # noqa: E402
