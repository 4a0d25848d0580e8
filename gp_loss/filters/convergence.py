"""Convergence stage: CSE-Autoloss's convergence-property verification (seed 000).

Classification (``cls``, ``bcls``): along a sweep of one logit, from far from
the target to close to it (the true class's logit rising; for ``cls`` also a
wrong class's logit falling, for ``bcls`` a negative's), the loss must fall to its
minimum (monotonicity), its gradient must vanish there (convergence), and the
minimum must be at a correct prediction. A loss that keeps falling to the end
of the sweep (cross-entropy) and one with a finite optimum (label smoothing)
are judged by the same rule: the "minimum" is the lowest point of the sweep.

Regression (``reg``): distance–loss consistency. Predicted boxes move away
from their target (translations in 8 directions, rescaling, stretching) and
the loss must grow as the IoU falls, be lowest at perfect overlap, and rank
the boxes in the opposite order to their IoU.

``zero``: passed through (see :class:`ConvergenceStage`).

Each check builds one fixed batch per kind (cached, float64 so that saturated
losses stay distinguishable from their neighbours) whose rows are all the
sweep points, and evaluates the candidate's unreduced output on it once; rows
of ``cls``/``bcls``/``reg`` outputs are independent (their operators work per
sample), so row ``k`` of the output is the loss of sweep point ``k``.

The per-row losses are then judged in numpy: the judgement is a few dozen
operations on arrays of a few hundred values, where numpy's per-call cost
(about a microsecond) is a fraction of torch's dispatch (about eight), and
this stage runs on most random trees.
"""
from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch

from gp_loss.boxes import paired_areas
from gp_loss.filters.base import Candidate, StageResult
from gp_loss.language.compile import evaluate_sharing
from gp_loss.threads import torch_threads

_DTYPE = torch.float64


@dataclass(frozen=True)
class _ClsSweep:
    """Classification sweep: K conditions (target, w) × G logits, as one batch of N = K*G rows.

    ``inputs``: ``(x, y, w)``, each N×C (rows ordered condition-major).
    ``correct``: K×G bool, whether the prediction at each point is correct
    (see ``target_tol`` of :class:`ConvergenceStage`).
    ``labels``: K condition descriptions for the reasons.
    ``varying``: the inputs that change along a sweep (only the logits: ``y``
    and ``w`` are fixed within a condition).
    """

    inputs: tuple[torch.Tensor, ...]
    correct: np.ndarray
    labels: tuple[str, ...]
    step: float
    varying: frozenset[str] = frozenset({"x"})
    outputs: dict = field(default_factory=dict)  # subtree node names -> output on ``inputs``

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


@dataclass(frozen=True)
class _RegSweep:
    """Regression sweep: T targets × D displacements × G distances, as N = T*D*G box pairs.

    ``inputs``: ``(i, u, e)``, each N (row ``(t*D + d)*G + g``).
    ``iou_ranks``: T×(D*G) centred ranks (:func:`_centred_ranks`) of the IoU of
    every pair, grouped by target.
    ``varying``: the inputs that change along a sweep (all three areas).
    """

    inputs: tuple[torch.Tensor, ...]
    iou_ranks: np.ndarray
    shape: tuple[int, int, int]
    varying: frozenset[str] = frozenset({"i", "u", "e"})
    outputs: dict = field(default_factory=dict)  # subtree node names -> output on ``inputs``


def _centred_ranks(v: np.ndarray) -> np.ndarray:
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


def _row_losses(outputs: list[torch.Tensor]) -> np.ndarray:
    """M×N per-row losses of M outputs of N rows each: each row summed over its other dimensions.

    A row is added left to right, in numpy, column by column: several times
    faster than torch's reduction over a dimension of five classes, and the
    same sums whatever else is in the batch. (They may differ from the loss's
    own reduction in the last bit, far below every tolerance of the judgement.)
    """
    n = outputs[0].shape[0]
    losses = np.empty((len(outputs), n))
    for row, out in zip(losses, outputs):
        a = out.numpy()
        if a.ndim != 2:
            a = a.reshape(n, -1)
        if a.shape[1] == 1:
            np.copyto(row, a[:, 0])
            continue
        np.add(a[:, 0], a[:, 1], out=row)
        for column in range(2, a.shape[1]):
            row += a[:, column]
    return losses


def _spearman(a: np.ndarray, rb: np.ndarray) -> np.ndarray:
    """Row-wise Spearman rank correlation of ``a`` (R×M) with the centred ranks ``rb`` of another R×M array.

    R values; 0 for a constant row.
    """
    ra = _centred_ranks(a)
    denom = np.maximum(np.sqrt((ra * ra).sum(1)) * np.sqrt((rb * rb).sum(1)), 1e-30)
    return (ra * rb).sum(1) / denom


class ConvergenceStage:
    """Verify monotonicity and convergence (classification) or distance–loss consistency (regression).

    Classification tolerances:
        mono_rel_tol: a rise (or, past the minimum, a fall) of the loss between
            neighbouring sweep points smaller than this fraction of the loss's
            range along that sweep is numerical noise, not a violation.
        max_violation_frac: largest allowed fraction of sweep steps that go the
            wrong way (before the minimum: up; after it: down).
        grad_ratio_tol: for a loss still falling at the end of the sweep (its
            optimum at an infinite logit), |dL/dx| (finite differences) on the
            last step must be at most this fraction of its largest value.
        kink_ratio_tol: for a minimum inside the sweep (a finite optimum),
            |dL/dx| beside it must be at most this fraction of its value one
            logit away: the gradient vanishes there, no kink.
        target_tol: the minimum must be at a correct prediction: the
            probability of the target (softmax for ``cls``, sigmoid for
            ``bcls``, 1 - sigmoid for negatives) at least the soft target (``w``
            for positives, 1 otherwise) minus this, and for ``cls`` the true
            class on top; where a wrong class's logit falls, that class's
            probability at most this.
        logit_low, logit_high, grid: the sweep of the target logit (for ``bcls``
            negatives it runs from ``-logit_low`` down to ``-logit_high``).
        soft_targets: the values of ``w`` tried for positive samples.

    Regression tolerances:
        reg_rel_tol: like ``mono_rel_tol``, relative to the loss's whole range.
        reg_max_violation_frac: largest allowed fraction of steps away from the
            target that lower the loss.
        max_spearman: the rank correlation between loss and IoU (per target box)
            must be at most this.
        reg_grid: distances per displacement trajectory.

    memo_size: how many subtree outputs on the sweeps to keep for later
        candidates (each N×C or N float64 values: 11 kB for ``cls``, so about
        47 MB at the default); when full, the least recently used half is
        dropped. 0 keeps none. Only the cost changes, never a verdict.

    ``zero`` (AutoLoss-Zero) candidates pass without a check: its aggregation
    operators (``mean_nhw``, 3×3 pooling) couple pixels and samples, so sweep
    points cannot share one batch, and AutoLoss-Zero itself relies on its
    proxy-task rejection protocol instead.
    """

    name = "convergence"

    def __init__(
        self,
        mono_rel_tol: float = 1e-3,
        max_violation_frac: float = 0.0,
        grad_ratio_tol: float = 0.05,
        kink_ratio_tol: float = 0.5,
        target_tol: float = 0.25,
        logit_low: float = -6.0,
        logit_high: float = 8.0,
        grid: int = 57,
        soft_targets: tuple[float, ...] = (0.5, 1.0),
        reg_rel_tol: float = 1e-3,
        reg_max_violation_frac: float = 0.02,
        max_spearman: float = -0.9,
        reg_grid: int = 21,
        seed: int = 0,
        memo_size: int = 4096,
    ):
        self.mono_rel_tol, self.max_violation_frac = mono_rel_tol, max_violation_frac
        self.grad_ratio_tol, self.kink_ratio_tol = grad_ratio_tol, kink_ratio_tol
        self.target_tol = target_tol
        self.logit_low, self.logit_high, self.grid = logit_low, logit_high, grid
        self.soft_targets = tuple(soft_targets)
        self.reg_rel_tol, self.reg_max_violation_frac = reg_rel_tol, reg_max_violation_frac
        self.max_spearman, self.reg_grid, self.seed = max_spearman, reg_grid, seed
        self.memo_size = memo_size
        self._sweeps: dict[str, _ClsSweep | _RegSweep] = {}

    # ------------------------------------------------------------------ sweeps

    def _logits(self) -> torch.Tensor:
        """The G sweep values of the target logit, far from the target first."""
        return torch.linspace(self.logit_low, self.logit_high, self.grid, dtype=_DTYPE)

    def _cls_sweep(self, classes: int = 5) -> _ClsSweep:
        """Softmax sweep; the last of ``classes`` is background (as in :mod:`gp_loss.sample_inputs`).

        Conditions: the true-class logit rising (foreground with each soft
        target, another foreground class, background), and a wrong-class logit
        falling. The latter rejects target-blind losses that merely reward
        every logit for rising.
        """
        t = self._logits()
        g = torch.Generator().manual_seed(self.seed)
        # The other logits stay fixed and small, not all equal, so no tie hides a class.
        others = torch.rand(classes, generator=g, dtype=_DTYPE) - 0.5
        # (true class, swept class, w)
        conditions = [(0, 0, w) for w in self.soft_targets]
        conditions += [(classes // 2, classes // 2, 1.0), (classes - 1, classes - 1, 1.0), (0, 1, 1.0)]
        xs, ys, ws, correct, labels = [], [], [], [], []
        for target, swept, w in conditions:
            x = others.repeat(len(t), 1)
            y = torch.zeros_like(x)
            y[:, target] = 1
            background = target == classes - 1
            q = 1.0 if background else w  # background samples carry w = 1
            kind = "background" if background else "positive"
            if swept == target:
                x[:, swept] = t
                p = torch.softmax(x, 1)[:, target]
                correct.append((x.argmax(1) == target) & (p >= q - self.target_tol))
                labels.append(f"{kind} class {target}, w={q:g}, its logit rising")
            else:
                x[:, swept] = -t
                p = torch.softmax(x, 1)[:, swept]
                correct.append(p <= self.target_tol)
                labels.append(f"{kind} class {target}, w={q:g}, class {swept} logit falling")
            xs.append(x), ys.append(y), ws.append(torch.full_like(x, q))
        inputs = (torch.cat(xs), torch.cat(ys), torch.cat(ws))
        return _ClsSweep(inputs, torch.stack(correct).numpy(), tuple(labels), float(t[1] - t[0]))

    def _bcls_sweep(self) -> _ClsSweep:
        """Sigmoid sweep with one class column (``bcls`` operators are element-wise)."""
        t = self._logits()
        xs, ys, ws, correct, labels = [], [], [], [], []
        for w in self.soft_targets:  # positives: y = 1, w = IoU, logit rising
            xs.append(t), ys.append(torch.ones_like(t)), ws.append(torch.full_like(t, w))
            correct.append(torch.sigmoid(t) >= w - self.target_tol)
            labels.append(f"positive, w={w:g}")
        # Negatives: y = 0, w = 0, logit falling towards the target 0.
        xs.append(-t), ys.append(torch.zeros_like(t)), ws.append(torch.zeros_like(t))
        correct.append(torch.sigmoid(t) >= 1 - self.target_tol)  # = 1 - sigmoid(-t)
        labels.append("negative, w=0")
        inputs = tuple(torch.cat(v)[:, None] for v in (xs, ys, ws))
        return _ClsSweep(inputs, torch.stack(correct).numpy(), tuple(labels), float(t[1] - t[0]))

    def _reg_sweep(self) -> _RegSweep:
        """Box pairs moving away from their targets along several trajectories."""
        targets = torch.tensor([[10, 10, 30, 30], [0, 0, 36, 12], [5, 5, 13, 29]], dtype=_DTYPE)
        d = torch.linspace(0, 1, self.reg_grid, dtype=_DTYPE)  # distance along a trajectory
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
        cx = (targets[:, 0] + targets[:, 2]) / 2
        cy = (targets[:, 1] + targets[:, 3]) / 2
        tw = targets[:, 2] - targets[:, 0]
        th = targets[:, 3] - targets[:, 1]
        # Broadcast to T×D×G.
        pcx = cx[:, None, None] + shift_x * tw[:, None, None]
        pcy = cy[:, None, None] + shift_y * th[:, None, None]
        pw, ph = fw * tw[:, None, None], fh * th[:, None, None]
        pred = torch.stack([pcx - pw / 2, pcy - ph / 2, pcx + pw / 2, pcy + ph / 2], -1).reshape(-1, 4)
        tgt = targets[:, None, None, :].expand(-1, len(moves), len(d), 4).reshape(-1, 4)
        i, u, e = paired_areas(pred, tgt)
        shape = (len(targets), len(moves), len(d))
        iou = (i / u).reshape(shape[0], -1).numpy()
        return _RegSweep((i, u, e), _centred_ranks(iou), shape)

    def sweep(self, kind_name: str) -> _ClsSweep | _RegSweep:
        """The cached sweep batch of ``kind_name``."""
        if kind_name not in self._sweeps:
            builders = {"cls": self._cls_sweep, "bcls": self._bcls_sweep, "reg": self._reg_sweep}
            self._sweeps[kind_name] = builders[kind_name]()
        return self._sweeps[kind_name]

    # ------------------------------------------------------------------ checks

    def __call__(self, candidate: Candidate) -> StageResult:
        return self.judge_many([candidate])[0]

    def judge_many(self, candidates: list[Candidate]) -> list[StageResult]:
        """The verdict of every candidate, exactly as one call each would give it.

        Each candidate is evaluated on the sweep on its own; the per-row losses
        of the classification candidates are then judged together, in one pass
        of numpy calls over an M×K×G array (regression candidates one by one).
        That judgement is a few dozen calls whatever M is, and it was most of
        this stage's cost on a random tree, which is why the breeding of random
        trees asks for verdicts in batches
        (:meth:`~gp_loss.filters.pipeline.FilterPipeline.check_many`).
        Each result's ``seconds`` is its share of the batch's time.
        """
        start = time.perf_counter()
        results: list[StageResult | None] = [None] * len(candidates)
        pending: dict[str, tuple[list[int], list[torch.Tensor]]] = {}  # kind -> (positions, outputs)
        # One thread: the sweep tensors are tiny (about a thousand elements), yet torch splits
        # reductions over rows (``max(1)``, ``softmax``) across its pool; on a busy machine,
        # waiting for a descheduled pool thread made one check take ~50 ms instead of ~1 ms.
        with torch_threads(1):
            for pos, candidate in enumerate(candidates):
                out = self._output(candidate)
                if isinstance(out, StageResult):
                    results[pos] = out
                else:
                    positions, outputs = pending.setdefault(candidate.kind.name, ([], []))
                    positions.append(pos), outputs.append(out)
            losses = {kind: _row_losses(outputs) for kind, (_, outputs) in pending.items()}
        # Finite losses can still overflow in the differences and ratios of the judgement (to
        # inf, as torch would give silently); the comparisons handle inf, so numpy need not warn.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for kind, (positions, _) in pending.items():
                sweep = self.sweep(kind)
                n = losses[kind].shape[1]
                bad = (~np.isfinite(losses[kind])).sum(1)
                for pos, count in zip(positions, bad.tolist()):
                    if count:
                        results[pos] = StageResult(self.name, False, f"loss is not finite at {count} of {n} "
                                                   "sweep points", {"nonfinite": float(count)})
                finite = bad == 0
                positions = [pos for pos, ok in zip(positions, finite.tolist()) if ok]
                if not positions:
                    continue
                judge = self._judge_reg if isinstance(sweep, _RegSweep) else self._judge_cls
                try:
                    judged = judge(sweep, losses[kind][finite])
                except Exception as err:  # a candidate's failure is its rejection, never ours
                    judged = [(False, f"{type(err).__name__}: {err}", {})] * len(positions)
                for pos, (passed, reason, numbers) in zip(positions, judged):
                    results[pos] = StageResult(self.name, passed, reason, numbers)
        share = (time.perf_counter() - start) / max(1, len(candidates))
        for r in results:
            r.seconds = share
        return results

    def _output(self, candidate: Candidate) -> torch.Tensor | StageResult:
        """The candidate's unreduced output on its kind's sweep (N rows), or its verdict if that needs no judging."""

        def result(passed: bool, reason: str) -> StageResult:
            return StageResult(self.name, passed, reason)

        kind = candidate.kind.name
        if kind not in ("cls", "bcls", "reg"):
            return result(True, f"no convergence check for kind {kind}")
        try:
            sweep = self.sweep(kind)
            if not candidate.inputs_used & sweep.varying:
                # Same verdict as the full check, without tensor work: every row of a condition
                # then computes the same value, and a constant loss never decreases.
                return result(False, "loss is constant along every sweep (it reads none of "
                                     f"{', '.join(sorted(sweep.varying))})")
            # Random trees share most of their small subtrees, so subtree outputs on the sweep
            # are kept for later candidates (bounded, least recently used dropped first: on
            # random depth-3 trees 2048 kept and emptied when full computed 2.26 operators a
            # new tree, 4096 least recently used 1.74). No autograd graph is built: the sweep
            # inputs do not require gradients.
            known = None
            if self.memo_size:
                if len(sweep.outputs) >= self.memo_size:  # drop the least recently used half
                    for key in list(itertools.islice(sweep.outputs, self.memo_size // 2)):
                        del sweep.outputs[key]
                known = sweep.outputs
            out = (evaluate_sharing(candidate.kind, candidate.tree, candidate.names, sweep.inputs, known)
                   if known is not None else candidate.program.evaluate(sweep.inputs))
        except Exception as err:  # a candidate's failure is its rejection, never ours
            return result(False, f"{type(err).__name__}: {err}")
        n = sweep.inputs[0].shape[0]
        if not isinstance(out, torch.Tensor) or out.dim() == 0 or out.shape[0] != n:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            return result(False, f"output shape {shape} does not give one loss per sample")
        return out

    def _judge_cls(self, sweep: _ClsSweep, losses: np.ndarray) -> list[tuple[bool, str, dict]]:
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
        tol = self.mono_rel_tol * (highest - lowest) + 1e-12 * (1 + np.maximum(highest, -lowest))  # M×K
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
        # (np.array of a list stacks as np.stack does, at a quarter of its cost on these sizes.)
        failed = np.array([decrease <= tol, ~correct, violation > self.max_violation_frac,
                           grad_ratio > self.grad_ratio_tol, kink_ratio > self.kink_ratio_tol])  # 5×M×K
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

    def _judge_reg(self, sweep: _RegSweep, losses: np.ndarray) -> list[tuple[bool, str, dict]]:
        """Distance–loss consistency along every trajectory, for each of M candidates.

        ``losses``: M×N per-pair losses (float64), N = T*D*G: G distances along
        each of T*D trajectories. Returns ``(passed, reason, numbers)`` per candidate.
        """
        return [self._judge_reg_one(sweep, row) for row in losses]

    def _judge_reg_one(self, sweep: _RegSweep, losses: np.ndarray) -> tuple[bool, str, dict]:
        t, d, g = sweep.shape
        L = losses.reshape(t * d, g)
        tol = float(self.reg_rel_tol * (losses.max() - losses.min()) + 1e-12 * (1 + np.abs(losses).max()))
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
        if violation > self.reg_max_violation_frac:
            return False, f"loss falls as the box moves away on {violation:.0%} of steps", numbers
        if rho > self.max_spearman:
            return False, f"loss and IoU are not consistently ranked (Spearman {rho:.2f})", numbers
        return True, "loss grows consistently as IoU falls", numbers
