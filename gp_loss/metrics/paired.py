"""Paired comparisons of losses retrained on the same seeds: mean difference, its interval, a verdict.

A search's final retraining (and ``gp-loss evaluate``) trains every loss on the same
seeds, so seed ``s`` of one loss and seed ``s`` of another share their initial weights
and data order: the differences ``d_i = score_i - reference_i`` remove that shared
noise. The interval is the Student-t confidence interval of the mean paired difference
(Student, "The probable error of a mean", Biometrika 1908):

    delta ± t((1 + c) / 2, n - 1) · sd(d) / sqrt(n),   sd with ddof = 1

A loss is "better" or "worse" than the reference only where that interval excludes 0;
otherwise the difference is within seed noise: "no clear difference". Every metric
gp-loss trains for is a fraction where higher is better, and a failed training scores
the task's failure score 0 (a real number, compared like any other).
"""
from __future__ import annotations

import math
import statistics

from scipy import stats

BETTER, WORSE, UNCLEAR = "better", "worse", "no clear difference"
VERDICTS = (BETTER, WORSE, UNCLEAR)


def paired_comparison(scores: list[float], reference: list[float], confidence: float = 0.95) -> dict:
    """Compare ``scores`` with ``reference``, pair ``i`` with pair ``i`` (the same seed).

    Args:
        scores: shape (n,), one loss's metric per seed (fractions, higher is better).
        reference: shape (n,), the reference loss's metric on the same seeds, in the same order.
        confidence: the interval's coverage, in (0, 1).

    Returns:
        ``{"delta": mean of scores[i] - reference[i], "ci95": [lo, hi] or None, "verdict": ...}``,
        verdict ``"better"`` / ``"worse"`` when the interval lies above / below 0, else
        ``"no clear difference"``. ``ci95`` is the interval at ``confidence`` (the key keeps the
        default's name, as every caller stores it). With fewer than two pairs there is no spread to measure
        the seed noise by (``sd`` needs ``n - 1 >= 1``), so ``ci95`` is ``None`` and the verdict
        ``"no clear difference"``, however large ``delta``. A pair holding a non-finite
        value is not a measurement and is left out (the tasks score a failure 0, so only
        an edited file holds one); ``delta`` is ``None`` when no pair is left.

    Raises:
        ValueError: ``scores`` and ``reference`` differ in length, or ``confidence`` is not in (0, 1).
    """
    if len(scores) != len(reference):
        raise ValueError(f"paired comparison needs one reference score per score: got {len(scores)} score(s) "
                         f"and {len(reference)} reference score(s)")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1 (exclusive), got {confidence}")
    diffs = [float(s) - float(r) for s, r in zip(scores, reference) if math.isfinite(s) and math.isfinite(r)]
    if not diffs:
        return {"delta": None, "ci95": None, "verdict": UNCLEAR}
    delta = statistics.fmean(diffs)
    if len(diffs) < 2:
        return {"delta": delta, "ci95": None, "verdict": UNCLEAR}
    half = float(stats.t.ppf((1.0 + confidence) / 2.0, len(diffs) - 1)) * statistics.stdev(diffs) / math.sqrt(
        len(diffs))
    lo, hi = delta - half, delta + half
    verdict = BETTER if lo > 0 else WORSE if hi < 0 else UNCLEAR
    return {"delta": delta, "ci95": [lo, hi], "verdict": verdict}


def reference_name(reference_baseline: str | None, baseline_names: list[str]) -> str | None:
    """The baseline every loss is compared with: the task's reference baseline (``TaskInfo.reference_baseline``)
    when the run trained it, else the run's first baseline, else ``None`` (no baseline to compare with)."""
    if reference_baseline is not None and reference_baseline in baseline_names:
        return reference_baseline
    return baseline_names[0] if baseline_names else None


def compare_rows(row: dict, reference: dict) -> dict:
    """:func:`paired_comparison` of two rows of ``{"seeds": [...], "scores": [...]}`` (a final table's),
    paired by seed: the seeds of ``row`` that ``reference`` also trained, in ``row``'s order."""
    by_seed = dict(zip(reference["seeds"], reference["scores"]))
    pairs = [(score, by_seed[seed]) for seed, score in zip(row["seeds"], row["scores"]) if seed in by_seed]
    return paired_comparison([s for s, _ in pairs], [r for _, r in pairs])


def add_verdicts(rows: list[dict], reference: str) -> None:
    """Give every row but ``reference``'s a ``vs_reference``: ``{"baseline": reference, "delta", "ci95",
    "verdict"}`` (:func:`compare_rows`). Rows carry ``name``, ``seeds`` and ``scores``.

    Raises:
        ValueError: no row is named ``reference``.
    """
    ref = next((r for r in rows if r["name"] == reference), None)
    if ref is None:
        raise ValueError(f"no row named {reference!r} to compare with (rows: {', '.join(r['name'] for r in rows)})")
    for row in rows:
        if row is not ref:
            row["vs_reference"] = {"baseline": reference, **compare_rows(row, ref)}


def _points(value: float) -> str:
    """A difference of fractions in points, signed: 0.0123 -> ``+1.23``."""
    return f"{100 * value:+.2f}"


def interval_text(comparison: dict) -> str:
    """``+1.23 [+0.40, +2.06]``: the difference and its interval, ×100 (``–`` where not measured)."""
    delta = "–" if comparison["delta"] is None else _points(comparison["delta"])
    ci = comparison["ci95"]
    return f"{delta} [{_points(ci[0])}, {_points(ci[1])}]" if ci else f"{delta} [one seed: no interval]"


def comparison_text(comparison: dict) -> str:
    """One row's comparison with its reference: ``+1.23 [+0.40, +2.06] better than ce``."""
    verdict = comparison["verdict"]
    relation = f"{verdict} than" if verdict in (BETTER, WORSE) else f"{verdict} from"
    return f"{interval_text(comparison)} {relation} {comparison['baseline']}"


def read_comparison(value: object) -> dict | None:
    """A stored ``vs_reference`` (from a run file, which may be old or edited) if it has the shape
    :func:`add_verdicts` writes, else ``None`` (then no verdict is shown)."""
    def number(v: object) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    if not isinstance(value, dict) or not isinstance(value.get("baseline"), str):
        return None
    delta, ci = value.get("delta"), value.get("ci95")
    if value.get("verdict") not in VERDICTS or not (delta is None or number(delta)):
        return None
    if ci is not None and not (isinstance(ci, list) and len(ci) == 2 and all(number(v) for v in ci)):
        return None
    return {"baseline": value["baseline"], "delta": delta, "ci95": ci, "verdict": value["verdict"]}


def verdict_summary(rows: list[dict], metric: str) -> str:
    """One sentence on the found losses (rows with ``baseline: False``) against the best baseline by mean,
    each compared on its paired interval (:func:`compare_rows`); values ×100.

    Either every found loss that beat it: ``top2 beat dice (test BF1 24.10 vs 23.00: +1.10, 95% CI [+0.20,
    +2.00])``, or ``no found loss beat dice (test BF1 25.20): the best, top1, scored 24.10 (-1.10, 95% CI
    [-2.00, -0.20]: worse)``. "Beat" is the verdict "better". A found row that is a baseline the search
    kept (``same_as``) is no found loss. Empty when the rows hold no found loss or no baseline.
    """
    def by_mean(r: dict) -> float:
        return r["mean"] if math.isfinite(r["mean"]) else -math.inf

    found = [r for r in rows if r.get("baseline") is False]
    baselines = [r for r in rows if r.get("baseline") is True]
    if not found or not baselines:
        return ""
    best = max(baselines, key=by_mean)  # the first of equals: rows keep the run's order
    name = best["name"]
    kept = [r for r in found if isinstance(r.get("same_as"), str)]  # baselines the search kept as its best
    found = [r for r in found if r not in kept]
    if not found:
        return (f"no found loss beat {name} ({metric} {100 * best['mean']:.2f}): the search's best were baselines ("
                + ", ".join(f"{r['name']} is {r['same_as']}" for r in kept) + ")")

    def interval(c: dict) -> str:
        delta = "–" if c["delta"] is None else _points(c["delta"])
        ci = c["ci95"]
        return f"{delta}, 95% CI [{_points(ci[0])}, {_points(ci[1])}]" if ci else f"{delta}, one seed: no interval"

    compared = [(r, compare_rows(r, best)) for r in found]
    winners = [(r, c) for r, c in compared if c["verdict"] == BETTER]
    if winners:
        return "; ".join(f"{r['name']} beat {name} ({metric} {100 * r['mean']:.2f} vs {100 * best['mean']:.2f}: "
                         f"{interval(c)})" for r, c in winners)
    top, c = max(compared, key=lambda rc: by_mean(rc[0]))
    return (f"no found loss beat {name} ({metric} {100 * best['mean']:.2f}): the best, {top['name']}, scored "
            f"{100 * top['mean']:.2f} ({interval(c)}: {c['verdict']})")
