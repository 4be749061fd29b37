"""Per-parameter gradient norms for training loops: computed every step on the
device, read to the host only when the loop logs them.

    norms = totalnorm.named_grad_norms(model.named_parameters(), max_norm=1.0)  # clips too
    if step % 100 == 0:
        log({"grad_norm": norms.total.item(), **norms.to_dict()})
        print(norms.top_k(5))  # the five largest, NaN and inf first

One read of the gradients gives the total and every parameter's own norm
(``per_tensor=True`` of :func:`totalnorm.get_total_norm` and
:func:`totalnorm.clip_grad_norm_`); nothing here synchronizes with the device
until ``to_dict``, ``top_k`` or ``tolist`` is called.
"""
from __future__ import annotations

import itertools
import operator
from typing import Iterable, Optional

import torch

__all__ = ["GradNorms", "named_grad_norms"]

_grad_of = operator.attrgetter("grad")


class GradNorms:
    """The gradient norms of one step: ``total`` (0-dim) and ``per_tensor`` (1-D,
    one entry per name in ``names``), both still on the device."""

    __slots__ = ("names", "total", "per_tensor")

    def __init__(self, names: tuple[str, ...], total: torch.Tensor, per_tensor: torch.Tensor) -> None:
        if len(names) != per_tensor.numel():
            raise ValueError(f"GradNorms: {len(names)} names for {per_tensor.numel()} norms")
        self.names = names
        self.total = total
        self.per_tensor = per_tensor

    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        return f"GradNorms({len(self.names)} parameters, total={self.total!r})"

    def tolist(self) -> list[float]:
        """The per-parameter norms as Python floats (one host read)."""
        return self.per_tensor.tolist()

    def to_dict(self, prefix: str = "") -> dict[str, float]:
        """``{prefix + name: norm}`` for every parameter with a gradient (one host read)."""
        return {prefix + name: value for name, value in zip(self.names, self.tolist())}

    def top_k(self, k: int) -> list[tuple[str, float]]:
        """The k largest norms with their names, largest first; NaN counts as the
        largest (a diverged layer comes first). Reads k values to the host."""
        k = min(int(k), len(self.names))
        if k <= 0:
            return []
        values = self.per_tensor.float()
        nan = torch.isnan(values)
        # Two stable sorts: by value, largest first (NaN placed with +inf), then
        # NaN ahead of everything else; ties keep the parameters' order.
        key = torch.where(nan, torch.full_like(values, float("inf")), values)
        order = torch.argsort(key, descending=True, stable=True)
        order = order[torch.argsort((~nan[order]).to(torch.uint8), stable=True)][:k]
        idx = order.tolist()
        picked = self.per_tensor[order].tolist()
        return [(self.names[i], v) for i, v in zip(idx, picked)]


def named_grad_norms(
    named_parameters: Iterable[tuple[str, torch.Tensor]],
    norm_type: float = 2.0,
    *,
    max_norm: Optional[float] = None,
    error_if_nonfinite: bool = False,
    group=None,
) -> GradNorms:
    """The gradient norms of ``named_parameters`` (e.g. ``model.named_parameters()``),
    in one pass: the total and each parameter's own norm, paired with its name.

    With ``max_norm`` the gradients are also clipped, as by
    :func:`totalnorm.clip_grad_norm_` (the norms returned are those before
    clipping). Parameters without a gradient are left out. ``group`` and DTensor
    gradients work as in :func:`totalnorm.total_norm`: each entry is then the
    norm of the whole gradient, the same on every rank.
    """
    import totalnorm

    pairs = list(named_parameters)
    names = [name for name, _ in pairs]
    params = [param for _, param in pairs]
    has_grad = map(operator.is_not, map(_grad_of, params), itertools.repeat(None))
    with_grad = tuple(itertools.compress(names, has_grad))
    if max_norm is None:
        total, per = totalnorm.get_total_norm(params, norm_type, error_if_nonfinite, group=group, per_tensor=True)
    else:
        total, per = totalnorm.clip_grad_norm_(
            params, max_norm, norm_type, error_if_nonfinite, group=group, per_tensor=True
        )
    return GradNorms(with_grad, total, per)
