"""Convergence stage: CSE-Autoloss's convergence-property verification (Liu et al., ICLR 2021).

Each kind's check is its :class:`~gp_loss.kinds.KindSpec`'s ``convergence``
probe: a fixed sweep batch and a judge (:mod:`gp_loss.probes.logit_sweeps` for
``cls``/``bcls``, :mod:`gp_loss.probes.box_sweeps` for ``reg``). A kind without
one (``zero``) passes through. This stage evaluates each candidate's unreduced
output on its kind's sweep once (sharing subtree outputs between candidates),
sums each row into that sweep point's loss, and hands the judge the losses of
many candidates at once.
"""
from __future__ import annotations

import itertools
import time

import numpy as np
import torch

from gp_loss.filters.base import Candidate, StageResult, rejection_reason
from gp_loss.kinds import kind_spec
from gp_loss.language.compile import evaluate_sharing
from gp_loss.probes.convergence import ConvergenceSettings, Sweep
from gp_loss.runtime.threads import torch_threads


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


class ConvergenceStage:
    """Verify monotonicity and convergence (classification) or distance–loss consistency (regression).

    Args:
        memo_size: how many subtree outputs on the sweeps to keep for later
            candidates (each N×C or N float64 values: 11 kB for ``cls``, so about
            47 MB at the default); when full, the least recently used half is
            dropped. 0 keeps none. Only the cost changes, never a verdict.
        settings: the sweeps and tolerances, the fields of
            :class:`~gp_loss.probes.convergence.ConvergenceSettings` (their
            defaults where not given).
    """

    name = "convergence"

    def __init__(self, memo_size: int = 4096, **settings):
        self.settings = ConvergenceSettings(**settings)
        self.memo_size = memo_size
        self._sweeps: dict[str, Sweep] = {}
        # Per kind: subtree node names -> output on the sweep inputs, in order of last use.
        self._memos: dict[str, dict] = {}

    def sweep(self, kind_name: str) -> Sweep:
        """The cached sweep batch of ``kind_name`` (a kind with a convergence probe)."""
        if kind_name not in self._sweeps:
            self._sweeps[kind_name] = kind_spec(kind_name).convergence.build(self.settings)
        return self._sweeps[kind_name]

    def prepare(self, kind_name: str) -> None:
        """Build ``kind_name``'s sweep (a kind without a convergence probe needs none)."""
        if kind_spec(kind_name).convergence is not None:
            self.sweep(kind_name)

    def memo(self, kind_name: str) -> dict:
        """The subtree outputs kept on ``kind_name``'s sweep."""
        return self._memos.setdefault(kind_name, {})

    # ------------------------------------------------------------------ checks

    def __call__(self, candidate: Candidate) -> StageResult:
        return self.judge_many([candidate])[0]

    def judge_many(self, candidates: list[Candidate]) -> list[StageResult]:
        """The verdict of every candidate, exactly as one call each would give it.

        Each candidate is evaluated on the sweep on its own; the per-row losses
        of each kind's candidates are then judged together, in one call of the
        kind's judge (for ``cls``/``bcls`` one pass of numpy calls over an
        M×K×G array). That judgement is a few dozen calls whatever M is, and it
        was most of this stage's cost on a random tree, which is why the
        breeding of random trees asks for verdicts in batches
        (:meth:`~gp_loss.filters.pipeline.FilterPipeline.check_many`).
        Each result's ``seconds`` is its share of the batch's time.
        """
        start = time.perf_counter()
        results: list[StageResult | None] = [None] * len(candidates)
        pending: dict[str, tuple[list[int], list[torch.Tensor]]] = {}  # kind -> (positions, outputs)
        # One thread: the sweep tensors are tiny (about a thousand elements), yet torch splits
        # reductions over rows (``max(1)``, ``softmax``) across its pool; on a busy machine,
        # waiting for a descheduled pool thread made one check many times slower.
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
                probe = kind_spec(kind).convergence
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
                try:
                    judged = probe.judge(self.sweep(kind), losses[kind][finite], self.settings)
                except Exception as err:  # a candidate's failure is its rejection, never ours
                    judged = [(False, rejection_reason(err), {})] * len(positions)
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
        if kind_spec(kind).convergence is None:
            return result(True, f"no convergence check for kind {kind}")
        try:
            sweep = self.sweep(kind)
            if not candidate.inputs_used & sweep.varying:
                # Same verdict as the full check, without tensor work: every row of a condition
                # then computes the same value, and a constant loss never decreases.
                return result(False, "loss is constant along every sweep (it reads none of "
                                     f"{', '.join(sorted(sweep.varying))})")
            # Random trees share most of their small subtrees, so subtree outputs on the sweep
            # are kept for later candidates (bounded, least recently used dropped first). No
            # autograd graph is built: the sweep inputs do not require gradients.
            if self.memo_size:
                known = self.memo(kind)
                if len(known) >= self.memo_size:  # drop the least recently used half
                    for key in list(itertools.islice(known, self.memo_size // 2)):
                        del known[key]
                out = evaluate_sharing(candidate.kind, candidate.tree, candidate.names, sweep.inputs, known)
            else:
                out = candidate.program.evaluate(sweep.inputs)
        except Exception as err:  # a candidate's failure is its rejection, never ours
            return result(False, rejection_reason(err))
        n = sweep.inputs[0].shape[0]
        if not isinstance(out, torch.Tensor) or out.dim() == 0 or out.shape[0] != n:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            return result(False, f"output shape {shape} does not give one loss per sample")
        return out
