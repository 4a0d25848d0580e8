"""The report's charts as PNG bytes (matplotlib's Agg backend: no display needed).

Every label drawn comes from gp-loss itself or is passed through :func:`plain`,
so that text from a run file (a baseline's name) cannot be read as mathtext.
"""
from __future__ import annotations

import io
import math
from collections import Counter
from typing import Sequence

import numpy as np

from gp_loss.report.curves import CurveData, Sweep
from gp_loss.runtime.terminal import safe_line

DPI = 90
FOUND_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e")
BASELINE_COLOURS = ("#333333", "#8c8c8c", "#8c564b", "#bcbd22", "#17becf")
STATUS_COLOURS = {"ok": "#1f77b4", "non-finite": "#d62728", "error": "#ff7f0e", "too slow": "#9467bd",
                  "collapsed": "#8c564b"}


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plain(text: object, limit: int = 40) -> str:
    """``text`` safe as a matplotlib label: ``$`` and backslashes escaped (no mathtext), cut to ``limit``.

    Control and bidi characters are shown as escapes first: matplotlib warns of a glyph it lacks on
    stderr, quoting the character raw, so an escape sequence in a run file would reach the terminal.
    """
    s = safe_line(text)
    s = s if len(s) <= limit else s[:limit - 1] + "…"
    return s.replace("\\", "\\\\").replace("$", "\\$")


def _margins(fig, left: float, right: float, top: float, bottom: float, **space) -> None:
    """Fixed margins in inches (``tight_layout`` measures every label by drawing it: seconds a report)."""
    w, h = fig.get_size_inches()
    fig.subplots_adjust(left=left / w, right=1 - right / w, top=1 - top / h, bottom=bottom / h, **space)


def _plain_log_ticks(axis) -> None:
    """Log-scale tick labels as plain numbers (matplotlib's default ``10^{k}`` is parsed as mathtext)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    axis.set_major_locator(LogLocator(base=10, numticks=6))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _png(fig) -> bytes:
    plt = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    plt.close(fig)
    return buf.getvalue()


def _finite(values: Sequence[float]) -> np.ndarray:
    a = np.asarray(values, dtype=float)
    return a[np.isfinite(a)]


def _limits(found: list[np.ndarray], baselines: list[np.ndarray]) -> tuple[float, float] | None:
    """A y range that shows the baselines whole and the found losses without one wild curve flattening the rest."""
    base = np.concatenate([_finite(b) for b in baselines]) if baselines else np.array([])
    every = np.concatenate([_finite(c) for c in found + baselines]) if found or baselines else np.array([])
    if every.size == 0:
        return None
    lo, hi = np.percentile(every, [2, 98])
    if base.size:
        lo, hi = min(lo, base.min()), max(hi, base.max())
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return None
    pad = 0.06 * (hi - lo) if hi > lo else max(1.0, abs(hi)) * 0.1
    return float(lo - pad), float(hi + pad)


def curves_png(sweeps: Sequence[Sweep], series: list[tuple[str, bool, dict[str, CurveData]]]) -> bytes:
    """Loss (top row) and gradient magnitude (bottom row) along each sweep (a column each).

    ``series``: ``(label, is_baseline, sweep key -> curve)``; found losses are solid and
    coloured, baselines dashed and grey. Gradients are on a log scale.
    """
    plt = _plt()
    cols = max(1, len(sweeps))
    fig, axes = plt.subplots(2, cols, figsize=(4.6 * cols, 6.2), squeeze=False)
    found_i = base_i = 0
    styles = []
    for label, baseline, _ in series:
        if baseline:
            styles.append(dict(color=BASELINE_COLOURS[base_i % len(BASELINE_COLOURS)], linestyle="--", linewidth=1.6))
            base_i += 1
        else:
            styles.append(dict(color=FOUND_COLOURS[found_i % len(FOUND_COLOURS)], linestyle="-", linewidth=2.0))
            found_i += 1
    for c, sweep in enumerate(sweeps):
        top, bottom = axes[0][c], axes[1][c]
        losses_found, losses_base = [], []
        grads = []
        for (label, baseline, curves), style in zip(series, styles):
            curve = curves.get(sweep.key)
            if curve is None:
                continue
            top.plot(curve.x, curve.loss, label=plain(label), **style)
            g = np.where(curve.grad > 0, curve.grad, np.nan)
            bottom.plot(curve.x, g, label=plain(label), **style)
            (losses_base if baseline else losses_found).append(curve.loss)
            grads.append(g)
        limits = _limits(losses_found, losses_base)
        if limits:
            top.set_ylim(*limits)
        if any(np.isfinite(g).any() for g in grads):
            bottom.set_yscale("log")
            _plain_log_ticks(bottom.yaxis)
        top.set_title(sweep.title, fontsize=10)
        top.set_ylabel("loss (one sample)")
        bottom.set_ylabel(sweep.grad_label)
        bottom.set_xlabel(sweep.xlabel)
        for ax in (top, bottom):
            ax.grid(True, alpha=0.3)
        if c == 0:
            top.legend(fontsize=8, loc="best")
    _margins(fig, left=0.85, right=0.15, top=0.3, bottom=0.55, hspace=0.22, wspace=0.3)
    return _png(fig)


def fitness_png(evaluations: list[dict], baselines: dict[str, float], metric: str) -> bytes:
    """Proxy fitness of every evaluation by its number, coloured by how training ended; best so far; baselines."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4))
    by_status: dict[str, tuple[list, list]] = {}
    order = sorted(evaluations, key=lambda r: r["evaluation"])
    for r in order:
        status = r.get("status") if isinstance(r.get("status"), str) else "?"
        xs, ys = by_status.setdefault(status, ([], []))
        xs.append(r["evaluation"])
        ys.append(r["fitness"] if math.isfinite(r["fitness"]) else 0.0)
    for status, (xs, ys) in sorted(by_status.items(), key=lambda kv: kv[0] != "ok"):
        ax.scatter(xs, ys, s=10 if status == "ok" else 18, marker="o" if status == "ok" else "x",
                   color=STATUS_COLOURS.get(status, "#7f7f7f"), alpha=0.6 if status == "ok" else 0.9,
                   label=f"{plain(status)} ({len(xs)})")
    best, running, xs = [], float("-inf"), []
    for r in order:
        if math.isfinite(r["fitness"]):
            running = max(running, r["fitness"])
        if math.isfinite(running):
            xs.append(r["evaluation"])
            best.append(running)
    if xs:
        ax.step(xs, best, where="post", color="black", linewidth=1.5, label="best so far")
    for i, (name, value) in enumerate(sorted(baselines.items())):
        if math.isfinite(value):
            ax.axhline(value, color=BASELINE_COLOURS[i % len(BASELINE_COLOURS)], linestyle="--",
                       label=f"{plain(name)} (baseline)")
    ax.set_xlabel("evaluation (proxy training)")
    ax.set_ylabel(plain(metric))
    values = [v for v in best + [b for b in baselines.values() if math.isfinite(b)]]
    if values:
        hi = max(values)
        lo = min(values)
        span = max(hi - lo, 0.05 * abs(hi), 0.01)
        ax.set_ylim(lo - 1.5 * span, hi + 0.25 * span)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    _margins(fig, left=0.8, right=0.15, top=0.15, bottom=0.55)
    return _png(fig)


def funnel_png(stages: list[tuple[str, int, int]], candidates: int, passed: int) -> bytes:
    """Candidates entering and passing each filter stage (log scale), with the share each stage rejects."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 0.75 * len(stages) + 1.2))
    names = [plain(n, 24) for n, _, _ in stages][::-1]
    entered = [max(e, 0) for _, e, _ in stages][::-1]
    kept = [max(e - r, 0) for _, e, r in stages][::-1]
    y = np.arange(len(stages))
    ax.barh(y - 0.12, [max(e, 0.8) for e in entered], height=0.5, color="#c7c7c7", label="entered")
    ax.barh(y - 0.12, [max(k, 0.8) if k else 0 for k in kept], height=0.3, color="#1f77b4", label="passed")
    for yi, e, k in zip(y, entered, kept):  # above its bars, from the left edge
        share = f"{100 * (1 - k / e):.2f}% rejected" if e else "none entered"
        ax.text(0.75, yi + 0.2, f"{e:,} in, {k:,} passed ({share})", va="bottom", fontsize=8)
    ax.set_yticks(y)
    ax.set_yticklabels(names)
    ax.set_xscale("log")
    _plain_log_ticks(ax.xaxis)
    top = max(entered + [candidates, 1])
    ax.set_xlim(0.7, top * 3)
    ax.set_ylim(-0.6, len(stages) - 0.25)
    ax.set_xlabel(f"candidates (log scale); {candidates:,} bred, {passed:,} passed every stage")
    ax.legend(fontsize=8, loc="lower right")
    _margins(fig, left=1.2, right=0.15, top=0.15, bottom=0.55)
    return _png(fig)


def outcomes_png(counts: Counter, reused: int | None) -> bytes:
    """How proxy trainings ended (ok, non-finite, error, too slow), and children reused without training."""
    plt = _plt()
    labels = ["ok", "non-finite", "error", "too slow"]
    labels += sorted(k for k in counts if k not in labels)
    values = [counts.get(k, 0) for k in labels]
    colours = [STATUS_COLOURS.get(k, "#7f7f7f") for k in labels]
    if reused:
        labels.append("reused (not trained)")
        values.append(reused)
        colours.append("#c7c7c7")
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(labels) + 1.2))
    y = np.arange(len(labels))[::-1]
    ax.barh(y, values, color=colours)
    total = sum(counts.values())
    for yi, v in zip(y, values):
        ax.text(v, yi, f" {v}" + (f" ({100 * v / total:.0f}%)" if total else ""), va="center", fontsize=8)
    ax.set_yticks(y)
    ax.set_yticklabels([plain(k, 24) for k in labels])
    ax.set_xlim(0, max(values + [1]) * 1.25)
    ax.set_xlabel("children")
    _margins(fig, left=1.6, right=0.15, top=0.15, bottom=0.5)
    return _png(fig)


VERDICT_COLOURS = {"better": "#2ca02c", "worse": "#d62728", "no clear difference": "#7f7f7f"}


def forest_png(rows: list[tuple[str, float, tuple[float, float] | None, str]], reference: str,
               metric: str) -> bytes:
    """Each loss's paired difference from ``reference``: a dot at the mean difference, a line across its
    confidence interval, a vertical line at 0 (no difference); coloured by verdict, first row on top.

    ``rows``: ``(label, delta, (lo, hi) or None, verdict)``, values on the scale shown (×100); a row
    without an interval (one seed) is a dot alone.
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 0.42 * len(rows) + 1.3))
    y = np.arange(len(rows))[::-1]
    for yi, (_, delta, ci, verdict) in zip(y, rows):
        colour = VERDICT_COLOURS.get(verdict, "#7f7f7f")
        if ci is not None:
            ax.hlines(yi, ci[0], ci[1], color=colour, linewidth=2.2)
            ax.vlines(ci, yi - 0.15, yi + 0.15, color=colour, linewidth=1.4)
        ax.plot([delta], [yi], "o", color=colour, markersize=6)
    ax.axvline(0.0, color="black", linewidth=1.0)
    ax.set_yticks(y)
    ax.set_yticklabels([plain(label, 24) for label, _, _, _ in rows])
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ends = [v for _, d, ci, _ in rows for v in ([d] + list(ci or ()))]
    span = max([abs(v) for v in ends] + [0.01])
    ax.set_xlim(-1.1 * span, 1.1 * span)  # 0 in the middle: which side an interval lies on reads at a glance
    ax.set_xlabel(plain(f"difference from {reference} in {metric}, paired on the seeds (95% CI)", 120))
    ax.grid(True, axis="x", alpha=0.3)
    handles = [plt.Line2D([], [], color=c, marker="o", linewidth=2.2, label=v) for v, c in VERDICT_COLOURS.items()]
    ax.legend(handles=handles, fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, frameon=False)
    _margins(fig, left=1.6, right=0.15, top=0.4, bottom=0.55)
    return _png(fig)
