"""Convergence probes of the classification kinds: logit sweeps (``cls``, ``bcls``) and their judge.

Along a sweep of one logit, from far from the target to close to it (the true
class's logit rising; for ``cls`` also a wrong class's logit falling, for
``bcls`` a negative's), the loss must fall to its minimum (monotonicity), its
gradient must vanish there (convergence), and the minimum must be at a correct
prediction. A loss that keeps falling to the end of the sweep (cross-entropy)
and one with a finite optimum (label smoothing) are judged by the same rule: the
"minimum" is the lowest point of the sweep.

The per-row losses are judged in numpy, for many candidates at once: the
judgement is a few dozen operations on arrays of a few hundred values, where
numpy's per-call cost is a fraction of torch's dispatch, and this check runs on
most random trees.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from gp_loss.probes.convergence import DTYPE, ConvergenceSettings, Judgement


@dataclass(frozen=True)
class LogitSweep:
    """K conditions (target, w) × G logits, as one batch of N = K*G rows.

    ``inputs``: ``(x, y, w)``, each N×C (rows ordered condition-major).
    ``correct``: K×G bool, whether the prediction at each point is correct
    (see ``target_tol`` of :class:`~gp_loss.probes.convergence.ConvergenceSettings`).
    ``labels``: K condition descriptions for the reasons.
    ``step``: the logit step between neighbouring points.
    ``varying``: the inputs that change along a sweep (only the logits: ``y``
    and ``w`` are fixed within a condition).
    """

    inputs: tuple[torch.Tensor, ...]
    correct: np.ndarray
    labels: tuple[str, ...]
    step: float
    varying: frozenset[str] = frozenset({"x"})

    @cached_property
    def indices(self) -> tuple[np.ndarray, np.ndarray]:
        """Index arrays of the judgement, made once: the K rows, and the offsets from the
        minimum of the four steps whose slopes it reads (left and right of the minimum, and
        ``reach`` steps, one logit, further out on either side)."""
        k, g = self.correct.shape
        reach = max(1, round(1.0 / self.step))
        return np.arange(k), np.array([-1, 0, -1 - reach, reach])

    @cached_property
    def signs(self) -> np.ndarray:
        """G×(G-1): row ``b`` is +1 on the steps before point ``b`` and -1 from it on, so that
        ``rise * signs[best] > tol`` flags the steps that go the wrong way for a minimum at ``best``."""
        g = self.correct.shape[1]
        return np.where(np.arange(g - 1)[None, :] < np.arange(g)[:, None], 1.0, -1.0)


def _target_logits(s: ConvergenceSettings) -> torch.Tensor:
    """The G sweep values of the target logit, far from the target first."""
    return torch.linspace(s.logit_low, s.logit_high, s.grid, dtype=DTYPE)


def softmax_sweep(s: ConvergenceSettings, classes: int = 5) -> LogitSweep:
    """``cls``: softmax sweep; the last of ``classes`` is background (as in the ``cls`` sample batch).

    Conditions: the true-class logit rising (foreground with each soft
    target, another foreground class, background), and a wrong-class logit
    falling. The latter rejects target-blind losses that merely reward
    every logit for rising.
    """
    t = _target_logits(s)
    g = torch.Generator().manual_seed(s.seed)
    # The other logits stay fixed and small, not all equal, so no tie hides a class.
    others = torch.rand(classes, generator=g, dtype=DTYPE) - 0.5
    # (true class, swept class, w)
    conditions = [(0, 0, w) for w in s.soft_targets]
    conditions += [(classes // 2, classes // 2, 1.0), (classes - 1, classes - 1, 1.0), (0, 1, 1.0)]
    xs, ys, ws, correct, labels = [], [], [], [], []
    for target, swept, w in conditions:
        x = others.repeat(len(t), 1)
        y = torch.zeros_like(x)
        y[:, target] = 1
        background = target == classes - 1
        q = 1.0 if background else w  # background samples carry w = 1
        role = "background" if background else "positive"
        if swept == target:
            x[:, swept] = t
            p = torch.softmax(x, 1)[:, target]
            correct.append((x.argmax(1) == target) & (p >= q - s.target_tol))
            labels.append(f"{role} class {target}, w={q:g}, its logit rising")
        else:
            x[:, swept] = -t
            p = torch.softmax(x, 1)[:, swept]
            correct.append(p <= s.target_tol)
            labels.append(f"{role} class {target}, w={q:g}, class {swept} logit falling")
        xs.append(x), ys.append(y), ws.append(torch.full_like(x, q))
    inputs = (torch.cat(xs), torch.cat(ys), torch.cat(ws))
    return LogitSweep(inputs, torch.stack(correct).numpy(), tuple(labels), float(t[1] - t[0]))


def sigmoid_sweep(s: ConvergenceSettings) -> LogitSweep:
    """``bcls``: sigmoid sweep with one class column (``bcls`` operators are element-wise)."""
    t = _target_logits(s)
    xs, ys, ws, correct, labels = [], [], [], [], []
    for w in s.soft_targets:  # positives: y = 1, w = IoU, logit rising
        xs.append(t), ys.append(torch.ones_like(t)), ws.append(torch.full_like(t, w))
        correct.append(torch.sigmoid(t) >= w - s.target_tol)
        labels.append(f"positive, w={w:g}")
    # Negatives: y = 0, w = 0, logit falling towards the target 0.
    xs.append(-t), ys.append(torch.zeros_like(t)), ws.append(torch.zeros_like(t))
    correct.append(torch.sigmoid(t) >= 1 - s.target_tol)  # = 1 - sigmoid(-t)
    labels.append("negative, w=0")
    inputs = tuple(torch.cat(v)[:, None] for v in (xs, ys, ws))
    return LogitSweep(inputs, torch.stack(correct).numpy(), tuple(labels), float(t[1] - t[0]))


def judge_logit_sweeps(sweep: LogitSweep, losses: np.ndarray, s: ConvergenceSettings) -> list[Judgement]:
    """Monotonicity, convergence and a correct optimum along each sweep, for M candidates at once.

    ``losses``: M×N per-row losses (float64), N = K*G: K conditions of G
    points each. Returns ``(passed, reason, numbers)`` per candidate; the
    reason is the first failed check, conditions in order and, within one,
    the checks in the order below.
    """
    k, g = sweep.correct.shape
    rows, offsets = sweep.indices
    L = losses.reshape(-1, k, g)  # M×K×G
    count = len(L)
    # Values picked per (candidate, condition) are read by flat index from the arrays
    # raveled: ``take`` is several times cheaper than the equivalent fancy indexing.
    pair = np.arange(count * k).reshape(count, k)  # flat number of each (candidate, condition)
    rise = L[..., 1:] - L[..., :-1]  # M×K×(G-1); step j goes from point j to j+1
    abs_slope = np.abs(rise / sweep.step)  # |dL/dx| by finite differences
    # (Rows are finite here; an arg-reduction and a pick are cheaper than numpy's min and max.)
    lowest, highest = L.take(pair * g + L.argmin(2)), L.take(pair * g + L.argmax(2))  # M×K
    tol = s.mono_rel_tol * (highest - lowest) + 1e-12 * (1 + np.maximum(highest, -lowest))  # M×K
    # The minimum: the last lowest point (up to rounding), so a loss that is flat once the
    # prediction is good enough (a hinge) is judged where its plateau ends.
    near_min = L <= lowest[..., None] * (1 + 1e-12) + 1e-12
    best = g - 1 - near_min[..., ::-1].argmax(2)  # M×K
    # A step goes the wrong way if it rises (before the minimum) or falls (after it) by more than tol.
    wrong_way = rise * sweep.signs[best] > tol[..., None]  # signs: +1 before the minimum, -1 after
    violation = wrong_way.sum(2) / (g - 1)  # M×K
    decrease = L[..., 0] - L.take(pair * g + best)  # M×K
    # |dL/dx| on the steps left and right of the minimum, and ``reach`` steps (one logit)
    # further out on either side; steps past an end of the sweep are clamped to it.
    around_min = np.minimum(np.maximum(best[..., None] + offsets, 0), g - 2)  # M×K×4
    slopes = abs_slope.take(pair[..., None] * (g - 1) + around_min)  # M×K×4
    left, right, far_left, far_right = slopes[..., 0], slopes[..., 1], slopes[..., 2], slopes[..., 3]

    # Convergence at the end of the sweep (the minimum is "at infinity", as for cross-entropy):
    # |dL/dx| on the last step must be small against the largest |dL/dx| of the sweep.
    at_end = best == g - 1
    steepest = abs_slope.take(pair * (g - 1) + abs_slope.argmax(2))  # M×K
    grad_ratio = np.where(at_end, left, 0.0) / np.maximum(steepest, 1e-300)
    # A finite optimum (label smoothing): the gradient vanishes there if the loss is smooth.
    # A kink (|x - 3|, exp(|x - 3|)) keeps its slope right up to the minimum: the flatter of
    # the two steps beside the minimum must be small against the slopes one logit away on
    # either side; for a smooth minimum it is about 1/(2*reach) of them.
    at_min = np.minimum(left, right)
    around = np.maximum(far_left, far_right)
    kink_ratio = np.where(~at_end & (at_min > 0), at_min / np.maximum(around, 1e-300), 0.0)
    correct = sweep.correct.take(rows * g + best)  # M×K
    # The checks of each condition in order, conditions in order: the first True fails.
    # (np.array of a list stacks as np.stack does, with less overhead on these small arrays.)
    failed = np.array([decrease <= tol, ~correct, violation > s.max_violation_frac,
                       grad_ratio > s.grad_ratio_tol, kink_ratio > s.kink_ratio_tol])  # 5×M×K
    failed = failed.transpose(1, 2, 0).reshape(count, -1)  # M×(K*5)
    first = failed.argmax(1).tolist()
    rejected = failed.any(1).tolist()
    # Per candidate: the worst violation, gradient and kink ratios, and the smallest decrease.
    worst = np.array([violation, grad_ratio, kink_ratio, -decrease]).max(2).T.tolist()
    out = []
    for m in range(count):
        v, gr, kr, neg_decrease = worst[m]
        nums = {"violation_frac": v, "grad_ratio": gr, "kink_ratio": kr, "min_decrease": -neg_decrease}
        if not rejected[m]:
            out.append((True, "monotonic and convergent along every sweep", nums))
            continue
        c, check = divmod(first[m], 5)
        label = sweep.labels[c]
        if check == 0:
            reason = f"loss does not decrease towards the target ({label})"
        elif check == 1:
            reason = f"loss is lowest at a wrong prediction ({label})"
        elif check == 2:
            reason = (f"loss is not monotonic towards its minimum ({label}: "
                      f"{violation[m, c]:.0%} of steps go the wrong way)")
        elif check == 3:
            reason = (f"gradient does not vanish at convergence ({label}: |dL/dx| at the end of "
                      f"the sweep is {grad_ratio[m, c]:.2g} of its largest value)")
        else:
            reason = (f"gradient does not vanish at the minimum ({label}: the loss has a kink "
                      f"there, slope ratio {kink_ratio[m, c]:.2g})")
        out.append((False, reason, nums))
    return out
