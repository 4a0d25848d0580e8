"""A figure of the five substitutions of Parameterized AP Loss (the appendix's Figure 1).

:func:`plot_substitutions` draws H1, H2, I1, I2, I3 on [0, 1] as lines through their control
points, the points as dots (a handcrafted substitution, e.g. ``sigmoid``, is drawn through
sampled points without dots), with the diagonal y = x for reference, and writes a PNG.
"""
from __future__ import annotations

import io
from pathlib import Path

from gp_loss.errors import GpLossError
from gp_loss.pap.substitutions import FUNCTION_NAMES, PAPParameters, PiecewiseLinear
from gp_loss.runtime.atomic import write_bytes_atomic

_COLOURS = {"H1": "tab:blue", "H2": "tab:orange", "I1": "tab:green", "I2": "tab:red", "I3": "tab:purple"}


def plot_substitutions(params: PAPParameters, path: str | Path, title: str | None = None) -> Path:
    """Write a PNG of ``params``' five substitutions to ``path`` (atomically); returns the path."""
    if not isinstance(params, PAPParameters):
        raise GpLossError(f"plot_substitutions: expected PAPParameters, got {type(params).__name__}")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, ax = plt.subplots(figsize=(5.2, 4.6), dpi=110)
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":", label="y = x")
    functions = params.functions()
    for fname in FUNCTION_NAMES:
        f = functions[fname]
        pts = f.control_points()
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        dots = isinstance(f, PiecewiseLinear)
        ax.plot(xs, ys, "o-" if dots else "-", ms=4, lw=1.4, color=_COLOURS[fname], label=fname)
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("x")
    ax.set_ylabel("f(x)")
    ax.set_title(title or f"PAP-Loss substitutions ({params.name}, gradient scale {params.grad_scale:.3g})",
                 fontsize=9)
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, buffer.getvalue())
    return path
