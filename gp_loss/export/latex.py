"""Export a loss tree as LaTeX text (for papers and reports)."""
from __future__ import annotations

from deap import gp

from primitives import Kind

from gp_loss.export.render import render

_SYMBOLS = {"yhat": "\\hat{y}"}


def _leaf(node: gp.Terminal) -> str:
    if isinstance(node.value, str):
        return _SYMBOLS.get(node.value, node.value)
    return repr(node.value)


def to_latex(kind: Kind, tree: gp.PrimitiveTree) -> str:
    """LaTeX of the branch output, e.g. ``-\\left\\langle y, \\log\\left(...\\right) \\right\\rangle``."""
    return render(kind, tree, lambda op: op.latex, _leaf, lambda t: f"\\left({t}\\right)").expr
