"""Loss curves for the report: a branch's loss and gradient along the sweeps the papers draw.

Each kind has its sweeps, each a batch of inputs along one abscissa: its
:class:`~gp_loss.kinds.KindSpec`'s ``curve_sweeps`` (:func:`sweeps_for`), defined in
:mod:`gp_loss.probes.curve_sweeps`.

The loss is one sample's (box pair's, pixel's) share of the kind's reduction: the
raw output summed over classes. The gradient is the norm of its gradient with
respect to what the network predicts there: the logits (``x``, ``yhat``) or the
box deltas ``(dx, dy, dw, dh)``. Everything is computed in float64 with the
compiled tree (:mod:`gp_loss.language.compile`), the same function that trains.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from deap import gp

from primitives import Kind, UnknownKindError

from gp_loss.kinds import kind_spec
from gp_loss.language.compile import compile_tree
from gp_loss.probes.curve_sweeps import Sweep


def sweeps_for(kind_name: str) -> tuple[Sweep, ...]:
    """The sweeps drawn for a kind (none for a kind without any, or a name that is no kind)."""
    try:
        return kind_spec(kind_name).curve_sweeps
    except UnknownKindError:
        return ()


@dataclass
class CurveData:
    """One loss along one sweep: abscissa, per-sample loss and gradient norm (NaN where not finite)."""

    x: np.ndarray
    loss: np.ndarray
    grad: np.ndarray


def _rows(out: torch.Tensor, n: int) -> torch.Tensor:
    """Per-sample loss: the raw output summed over everything but the batch (as the reductions do)."""
    if out.dim() == 0 or out.shape[0] != n:
        raise ValueError(f"output shape {tuple(out.shape)} does not give one loss per sample")
    return out.reshape(n, -1).sum(1)


def _evaluate(fn, pred: torch.Tensor, inputs_of) -> tuple[np.ndarray, np.ndarray]:
    pred = pred.detach().clone().requires_grad_(True)
    rows = _rows(fn(*inputs_of(pred)), pred.shape[0])
    (grad,) = torch.autograd.grad(rows.sum(), pred, allow_unused=True)
    grad = torch.zeros_like(pred) if grad is None else grad
    return rows.detach().numpy(), grad.reshape(pred.shape[0], -1).norm(dim=1).detach().numpy()


def loss_curve(kind: Kind, tree: gp.PrimitiveTree, sweep: Sweep) -> CurveData:
    """The branch ``tree`` of ``kind`` along ``sweep``; raises what the loss raises."""
    fn = compile_tree(kind, tree)
    x, pred, inputs_of = sweep.make()
    with np.errstate(all="ignore"):
        if sweep.one_at_a_time:  # (the prediction is the first input; the others are fixed per point)
            fixed = inputs_of(pred.detach())[1:]
            parts = [_evaluate(fn, pred[k:k + 1], lambda p, k=k: (p, *(t[k:k + 1] for t in fixed)))
                     for k in range(len(x))]
            loss = np.concatenate([a for a, _ in parts])
            grad = np.concatenate([g for _, g in parts])
        else:
            loss, grad = _evaluate(fn, pred, inputs_of)
    loss = np.where(np.isfinite(loss), loss, np.nan)
    grad = np.where(np.isfinite(grad), grad, np.nan)
    return CurveData(np.asarray(x, dtype=float), loss.astype(float), grad.astype(float))
