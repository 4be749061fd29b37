"""Clipping folded into a fused optimizer's step (``clip_grad_norm_(..., optimizer=)``).

torch's fused optimizers (``Adam``, ``AdamW``, ``SGD`` and ``Adagrad`` built with
``fused=True``) read two optional 0-dim float32 tensors from attributes of the
optimizer, which ``torch.amp.GradScaler.step`` sets for them and deletes after the
step:

- ``grad_scale``: the kernel divides every gradient by it (and writes the quotient
  back into ``.grad``) before the update;
- ``found_inf``: when it is exactly 1.0 the kernel returns before touching anything,
  and ``Adam``'s Python code takes the 1.0 back off the step counts it had added.

So a clip needs no pass of its own: the norm is one read of the gradients, and
``1 / coef`` goes into ``grad_scale``. It cannot be set at clip time, because
``GradScaler.step`` overwrites ``found_inf`` and, when it unscales in the kernel,
multiplies ``grad_scale`` by its scale. Instead each optimizer used here gets one
step pre-hook and one post-hook, registered once. ``clip_grad_norm_`` leaves a
*pending fold* (the coefficient's reciprocal, the non-finite flag) on the optimizer;
the pre-hook of the next ``step()``, which runs inside the step and so after
``GradScaler`` has set its attributes, multiplies whatever ``grad_scale`` is there
by ``1 / coef`` and combines the flags into exactly 1.0 or 0.0; the post-hook puts
back what was there before (or removes what was not), so GradScaler's own ``del``
still works and nothing of a clip survives its step. A pending fold is consumed by
that one step; a later clip replaces a fold that no step consumed.

Gradients are scaled in place instead (one extra pass, like ``optimizer=None``):

- for an optimizer whose step cannot take the coefficient (not fused, or a
  third-party one): ``skip_nonfinite=True`` is then an error, because skipping would
  need the host to read the norm;
- for a float64 norm (float64 gradients): the fused kernels read ``grad_scale`` as
  float32, which would round ``1 / coef`` to 24 bits. The non-finite flag is still
  folded, so ``skip_nonfinite=True`` works.

See docs/semantics.md (Clipping folded into a fused optimizer) for the contract.
"""
from __future__ import annotations

import sys
from typing import NamedTuple, Optional

import torch

import totalnorm as _package

__all__ = ["clip_grad_norm_", "folds_into"]

_FN = "clip_grad_norm_"
_MISSING = object()  # an attribute the optimizer did not have
_ATTRS = ("grad_scale", "found_inf")
_PENDING = "_totalnorm_pending"  # what the next step folds in
_APPLIED = "_totalnorm_applied"  # what a step in progress must put back
_HOOKS = "_totalnorm_hooks"


class _Fold(NamedTuple):
    inv_coef: Optional[torch.Tensor]  # float32 1 / coef for grad_scale; None: the grads were scaled in place
    found: Optional[torch.Tensor]  # float32 1.0 when the norm is NaN or infinite (skip_nonfinite), else 0.0
    loss_scaled: bool  # the norm was taken of GradScaler-scaled gradients


class _Applied(NamedTuple):
    before: tuple  # the optimizer's grad_scale and found_inf before the pre-hook (or _MISSING)
    found: Optional[torch.Tensor]  # the flag the step read
    fresh: tuple  # (param, had a state entry) for SGD momentum buffers this step creates


def folds_into(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer.step()`` takes the clip coefficient and the skip on the device.

    True for torch optimizers that take GradScaler's ``grad_scale`` and ``found_inf``
    attributes in their kernels: ``_step_supports_amp_scaling`` set (torch sets it for
    ``fused=True``) and every parameter group fused (a group added later without
    ``fused`` would reject the attributes). Third-party optimizers with their own
    contract (a ``grad_scaler`` keyword, no ``fused`` groups) are not trusted.
    """
    if not getattr(optimizer, "_step_supports_amp_scaling", False):
        return False
    return bool(optimizer.param_groups) and all(group.get("fused") for group in optimizer.param_groups)


def _describe(optimizer) -> str:
    fused = {group.get("fused") for group in optimizer.param_groups}
    return f"{type(optimizer).__name__} (fused={fused.pop() if len(fused) == 1 else sorted(map(str, fused))})"


def _loss_scale(scaler, optimizer) -> Optional[torch.Tensor]:
    """GradScaler's scale when the gradients are still scaled by it, else None."""
    if scaler is None or not scaler.is_enabled():
        return None
    from torch.amp.grad_scaler import OptState

    stage = scaler._per_optimizer_states[id(optimizer)]["stage"]
    if stage is OptState.STEPPED:
        raise RuntimeError(
            f"{_FN}: scaler.step(optimizer) was already called since the last scaler.update(); "
            "clip before scaler.step(optimizer)"
        )
    if stage is OptState.UNSCALED:  # scaler.unscale_(optimizer) ran: the gradients are true ones
        return None
    return scaler._scale  # None before the first scaler.scale(loss): nothing is scaled yet


def _check_same_parameters(params: list, optimizer) -> None:
    """The optimizer must step exactly the parameters whose gradients were measured.

    The coefficient reaches only what the optimizer steps: a clipped parameter it
    does not hold would keep its gradient unclipped, and one it holds but the call
    did not measure would be clipped by a norm it is not part of.
    """
    stepped = [p for group in optimizer.param_groups for p in group["params"]]
    given = set(map(id, params))
    held = set(map(id, stepped))
    for i, p in enumerate(params):
        if id(p) not in held and p.grad is not None:
            raise ValueError(
                f"{_FN}: parameters[{i}] has a gradient but is not stepped by the optimizer passed as "
                "optimizer=; its gradient would stay unclipped. Pass the optimizer's own parameters"
            )
    for p in stepped:
        if id(p) not in given and p.grad is not None:
            raise ValueError(
                f"{_FN}: the optimizer steps a parameter with a gradient (shape {tuple(p.shape)}) that is not "
                "among the parameters clipped; its step would take a coefficient from a norm it is not part "
                "of. Pass all of the optimizer's parameters"
            )


def _scale_in_place(grads: list, coef: torch.Tensor) -> None:
    """Every (local) gradient times ``coef``, one scale_ call per device."""
    dtensor = getattr(sys.modules.get("torch.distributed.tensor"), "DTensor", ())
    by_device: dict = {}
    for g in grads:
        local = g.to_local() if isinstance(g, dtensor) else g
        by_device.setdefault(local.device, []).append(local)
    for device, tensors in by_device.items():
        _package._fast_or(torch.ops.totalnorm.scale_.default, _package._fast_scale_, tensors, coef.to(device))


def clip_grad_norm_(
    parameters,
    max_norm: float,
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
    optimizer: Optional[torch.optim.Optimizer] = None,
    skip_nonfinite: bool = False,
    scaler=None,
    group=None,
) -> torch.Tensor:
    """``totalnorm.clip_grad_norm_`` with ``optimizer=``, ``skip_nonfinite=`` or ``scaler=``.

    With a fused ``optimizer`` the gradients are left as they are: ``1 / coef`` is
    folded into the optimizer's next ``step()``, where the kernel divides each gradient
    by it; with ``skip_nonfinite=True`` that step is skipped on the device (parameters,
    moments and step counts unchanged) when the norm is NaN or infinite. No host
    synchronisation. With any other optimizer the gradients are scaled in place, as
    without ``optimizer=``.

    ``scaler``: the ``torch.amp.GradScaler`` that scaled the loss. Its gradients, when
    not yet unscaled (``scaler.unscale_(optimizer)`` not called), are measured and the
    norm divided by the loss scale; the step then divides by the product of both
    scales. Needed only to clip scaled gradients; a fold meeting a loss scale it was
    not told about raises in ``step()``.

    Returns the total norm of the (unscaled) gradients, as ``clip_grad_norm_`` does.
    """
    if optimizer is None:
        raise ValueError(
            f"{_FN}: skip_nonfinite=True and scaler= act on an optimizer's next step(); pass optimizer="
        )
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"{_FN}: optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    folds = folds_into(optimizer)
    if skip_nonfinite and not folds:
        raise ValueError(
            f"{_FN}: skip_nonfinite=True needs an optimizer whose step can be skipped on the device "
            f"(Adam, AdamW, SGD or Adagrad with fused=True); {_describe(optimizer)} cannot, and skipping "
            "would need the host to read the norm: check torch.isfinite(norm) on the host and skip "
            "optimizer.step() yourself"
        )
    loss_scale = _loss_scale(scaler, optimizer)
    compiling = torch.compiler.is_compiling()
    if not folds and loss_scale is None:
        # Nothing to fold and nothing to unscale: the plain clip, bit for bit.
        return _package.clip_grad_norm_(parameters, max_norm, norm_type, error_if_nonfinite, group=group)

    params, grads = _package._grads(_FN, parameters)
    p = _package._as_norm_type(_FN, norm_type)
    max_norm = float(max_norm)
    if folds and not compiling:
        _check_same_parameters(params, optimizer)
    total = _package._grads_norm(_FN, params, grads, p, error_if_nonfinite, group)
    if loss_scale is not None:
        # Divided in float64 and rounded once: exact for GradScaler's powers of two.
        total = (total.double() / loss_scale.to(total.device, torch.float64)).to(total.dtype)
    # torch's clip_grad_norm_ arithmetic, op for op (the op's own coefficient has its bits).
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    found = torch.isfinite(total).logical_not().to(torch.float32) if skip_nonfinite else None
    if folds and total.dtype != torch.float64:
        # The reciprocal in float64, rounded once (as GradScaler computes its inverse scale).
        fold = _Fold(coef.double().reciprocal().float(), found, loss_scale is not None)
    else:
        _scale_in_place(grads, coef)
        fold = _Fold(None, found, loss_scale is not None) if found is not None else None
    if folds:
        _set_pending(optimizer, fold)
    return total


@torch.compiler.disable
def _set_pending(optimizer, fold: Optional[_Fold]) -> None:
    """Leaves ``fold`` for the optimizer's next step (replacing one no step took)."""
    if _HOOKS not in optimizer.__dict__:
        setattr(optimizer, _HOOKS, (
            optimizer.register_step_pre_hook(_before_step),
            optimizer.register_step_post_hook(_after_step),
        ))
    _put_back(optimizer, after_step=False)  # a step that raised left its attributes
    setattr(optimizer, _PENDING, fold)


def _fresh_sgd_buffers(optimizer) -> tuple:
    """The parameters whose momentum buffers this step of a fused SGD creates.

    torch's _fused_sgd allocates them with empty_like before the kernel reads
    found_inf, so a skipped first step would leave uninitialised buffers (with or
    without GradScaler); they are removed again after a skipped step.
    """
    if not isinstance(optimizer, torch.optim.SGD):
        return ()
    state = optimizer.state
    fresh = []
    for group in optimizer.param_groups:
        if group["momentum"] == 0:
            continue
        with_grad = (p for p in group["params"] if p.grad is not None)
        # torch's rule: a group's first step is when none of its buffers exist.
        if any(p in state and state[p].get("momentum_buffer") is not None for p in with_grad):
            continue
        fresh += [(p, p in state) for p in group["params"] if p.grad is not None]
    return tuple(fresh)


@torch.compiler.disable
def _before_step(optimizer, args, kwargs) -> None:
    _put_back(optimizer, after_step=False)
    fold = optimizer.__dict__.pop(_PENDING, None)
    if fold is None:
        return None
    attrs = optimizer.__dict__
    before = tuple(attrs.get(name, _MISSING) for name in _ATTRS)
    scale, flag = (None if v is _MISSING else v for v in before)
    if scale is not None and not fold.loss_scaled:
        raise RuntimeError(
            f"{_FN}: the optimizer's step divides the gradients by a grad_scale (a GradScaler's loss scale) "
            "that the clip did not know of, so the norm was taken of scaled gradients: pass "
            "scaler=your_grad_scaler to totalnorm.clip_grad_norm_, or call scaler.unscale_(optimizer) first"
        )
    if fold.inv_coef is not None:
        inv = fold.inv_coef
        optimizer.grad_scale = inv if scale is None else scale * inv.to(scale.device)
    found = fold.found
    if flag is not None:
        # The kernel skips only on exactly 1.0 (GradScaler sums its per-device flags).
        theirs = flag.to(found.device) if found is not None else flag
        found = theirs.ne(0) if found is None else theirs.ne(0).logical_or(found)
        found = found.to(torch.float32)
    if found is not None:
        optimizer.found_inf = found
    fresh = _fresh_sgd_buffers(optimizer) if found is not None else ()
    setattr(optimizer, _APPLIED, _Applied(before, found, fresh))
    return None


@torch.compiler.disable
def _after_step(optimizer, args, kwargs) -> None:
    _put_back(optimizer, after_step=True)


def _put_back(optimizer, after_step: bool) -> None:
    """Restores the attributes a pre-hook changed; after a skipped step, the SGD buffers it created."""
    applied = optimizer.__dict__.pop(_APPLIED, None)
    if applied is None:
        return
    for name, value in zip(_ATTRS, applied.before):
        if value is _MISSING:
            optimizer.__dict__.pop(name, None)
        else:
            setattr(optimizer, name, value)
    if after_step and applied.fresh and applied.found.item() == 1.0:  # a host read, on a first step only
        for p, had_state in applied.fresh:
            if had_state:
                optimizer.state[p].pop("momentum_buffer", None)
            else:
                optimizer.state.pop(p, None)
