"""Convergence probe of box regression (``reg``): distance–loss consistency.

Predicted boxes move away from their target (translations in 8 directions, up to
past the point of no overlap; rescaling, stretching) and the loss must grow as the
IoU falls, be lowest at perfect overlap, and rank the boxes in the opposite order
to their IoU, on targets of every scale a detector regresses (4 to 300 px a side).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from gp_loss.probes.boxes import convert, paired_areas
from gp_loss.probes.convergence import DTYPE, ConvergenceSettings, Judgement


@dataclass(frozen=True)
class BoxSweep:
    """T targets × D displacements × G distances, as N = T*D*G box pairs.

    ``inputs``: ``(i, u, e)``, each N (row ``(t*D + d)*G + g``).
    ``iou_ranks``: T×(D*G) centred ranks (:func:`centred_ranks`) of the IoU of
    every pair, grouped by target.
    ``varying``: the inputs that change along a sweep (all three areas).
    """

    inputs: tuple[torch.Tensor, ...]
    iou_ranks: np.ndarray
    shape: tuple[int, int, int]
    varying: frozenset[str] = frozenset({"i", "u", "e"})


# The target boxes (x1, y1, x2, y2, pixels): three of a few tens of pixels at different aspect
# ratios, and one each at the small and the large end of what a detector regresses (4 to 300 px
# a side). A loss that mixes areas with constants or with each other at the wrong power can be
# consistent at one scale and not at another, so every scale must pass; and the tolerances are
# relative to the loss's range over all of them, so a loss whose change on a small box is lost
# against its range on a large one (raw areas) does not grow on the small one.
SWEEP_TARGETS = ((10, 10, 30, 30), (0, 0, 36, 12), (5, 5, 13, 29), (2, 2, 6, 8), (0, 0, 300, 220))


def centred_ranks(v: np.ndarray) -> np.ndarray:
    """Ranks along the last axis of ``v`` (R×M), ties sharing their average rank, minus the row mean."""
    order = np.argsort(v, axis=1)
    s = np.take_along_axis(v, order, 1)
    # A tie group runs from its first to its last sorted position; its members share the mean.
    starts = np.ones(v.shape, bool)
    starts[:, 1:] = s[:, 1:] != s[:, :-1]
    ends = np.ones(v.shape, bool)
    ends[:, :-1] = starts[:, 1:]
    position = np.broadcast_to(np.arange(v.shape[1]), v.shape)
    first = np.maximum.accumulate(np.where(starts, position, 0), 1)
    last = np.minimum.accumulate(np.where(ends, position, v.shape[1] - 1)[:, ::-1], 1)[:, ::-1]
    ranks = np.empty_like(v)
    np.put_along_axis(ranks, order, (first + last) / 2, 1)
    return ranks - ranks.mean(1, keepdims=True)


def _spearman(a: np.ndarray, rb: np.ndarray) -> np.ndarray:
    """Row-wise Spearman rank correlation of ``a`` (R×M) with the centred ranks ``rb`` of another R×M array.

    R values; 0 for a constant row.
    """
    ra = centred_ranks(a)
    denom = np.maximum(np.sqrt((ra * ra).sum(1)) * np.sqrt((rb * rb).sum(1)), 1e-30)
    return (ra * rb).sum(1) / denom


def box_sweep(s: ConvergenceSettings) -> BoxSweep:
    """Box pairs moving away from their targets (:data:`SWEEP_TARGETS`) along several trajectories."""
    targets = torch.tensor(SWEEP_TARGETS, dtype=DTYPE)
    d = torch.linspace(0, 1, s.reg_grid, dtype=DTYPE)  # distance along a trajectory
    one = torch.ones_like(d)
    # Per trajectory: centre shift (in box widths/heights) and width/height factors, each G.
    moves = []
    for k in range(8):  # translations up to 1.25 box sizes, past the point of no overlap
        a = k * math.pi / 4
        moves.append((1.25 * d * math.cos(a), 1.25 * d * math.sin(a), one, one))
    grow, shrink = 1 + 2 * d, 1 / (1 + 2 * d)
    moves += [
        (0 * d, 0 * d, grow, grow), (0 * d, 0 * d, shrink, shrink),
        (0 * d, 0 * d, grow, one), (0 * d, 0 * d, one, shrink),
        (0.5 * d, -0.5 * d, grow, grow), (-0.5 * d, 0.5 * d, shrink, grow),
    ]
    shift_x, shift_y, fw, fh = (torch.stack(v) for v in zip(*moves))  # each D×G
    cx, cy, tw, th = convert(targets, "xyxy", "cxcywh").unbind(-1)
    # Broadcast to T×D×G.
    pcx = cx[:, None, None] + shift_x * tw[:, None, None]
    pcy = cy[:, None, None] + shift_y * th[:, None, None]
    pw, ph = fw * tw[:, None, None], fh * th[:, None, None]
    pred = convert(torch.stack([pcx, pcy, pw, ph], -1), "cxcywh", "xyxy").reshape(-1, 4)
    tgt = targets[:, None, None, :].expand(-1, len(moves), len(d), 4).reshape(-1, 4)
    i, u, e = paired_areas(pred, tgt)
    shape = (len(targets), len(moves), len(d))
    iou = (i / u).reshape(shape[0], -1).numpy()
    return BoxSweep((i, u, e), centred_ranks(iou), shape)


def judge_box_sweeps(sweep: BoxSweep, losses: np.ndarray, s: ConvergenceSettings) -> list[Judgement]:
    """Distance–loss consistency along every trajectory, for each of M candidates.

    ``losses``: M×N per-pair losses (float64), N = T*D*G: G distances along
    each of T*D trajectories. Returns ``(passed, reason, numbers)`` per candidate.
    """
    return [_judge_one(sweep, row, s) for row in losses]


def _judge_one(sweep: BoxSweep, losses: np.ndarray, s: ConvergenceSettings) -> Judgement:
    t, d, g = sweep.shape
    L = losses.reshape(t * d, g)
    tol = float(s.reg_rel_tol * (losses.max() - losses.min()) + 1e-12 * (1 + np.abs(losses).max()))
    rise = L[:, 1:] - L[:, :-1]
    violation = float((rise < -tol).mean())
    # Perfect overlap (distance 0) must be the lowest point of every trajectory, and moving
    # all the way away must cost something (a loss blind to one trajectory is not consistent).
    lowest_at_overlap = bool((L[:, 0] <= L.min(1) + tol).all())
    total_rise = float((L[:, -1] - L[:, 0]).min())
    rho = float(_spearman(L.reshape(t, d * g), sweep.iou_ranks).max())
    numbers = dict(violation_frac=violation, spearman=rho, min_rise=total_rise)
    if not lowest_at_overlap:
        return False, "loss is not lowest at perfect overlap", numbers
    if total_rise <= tol:
        return False, "loss does not grow as the box moves away from its target", numbers
    if violation > s.reg_max_violation_frac:
        return False, f"loss falls as the box moves away on {violation:.0%} of steps", numbers
    if rho > s.max_spearman:
        return False, f"loss and IoU are not consistently ranked (Spearman {rho:.2f})", numbers
    return True, "loss grows consistently as IoU falls", numbers
