"""The fitness-over-time plot of a run (PNG, matplotlib's Agg backend: no display needed)."""
from __future__ import annotations

import io
from pathlib import Path

from gp_loss.runtime.atomic import write_bytes_atomic


def plot_fitness(evaluations: list[dict], baselines: dict[str, float], path: Path, metric: str) -> None:
    """Scatter of every proxy fitness by evaluation number, the best so far, and baseline lines."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [r["evaluation"] for r in evaluations]
    ys = [r["fitness"] for r in evaluations]
    best, running = [], float("-inf")
    for y in ys:
        running = max(running, y)
        best.append(running)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.scatter(xs, ys, s=8, color="0.6", label="evaluated loss")
    if xs:
        ax.step(xs, best, where="post", color="C0", label="best so far")
    for i, (name, value) in enumerate(sorted(baselines.items())):
        ax.axhline(value, color=f"C{i + 1}", linestyle="--", label=f"{name} (baseline)")
    ax.set_xlabel("evaluation (proxy training)")
    ax.set_ylabel(f"validation {metric}")
    top = max(ys + list(baselines.values()) + [0.0])
    ax.set_ylim(bottom=max(0.0, min(best + list(baselines.values()) + [top]) - 0.2), top=top + 0.02)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png")
    plt.close(fig)
    write_bytes_atomic(path, png.getvalue())
