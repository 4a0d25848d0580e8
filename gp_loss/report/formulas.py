"""A report's formulas: parsed once, simplified with SymPy within a time budget, drawn with mathtext.

A formula text from a run file is only ever parsed by the loss language's own
parser (:func:`~gp_loss.language.parse.parse_formula`): text that is not a formula
of its kind (a baseline trained by "torchvision's own loss code", an edited file)
is kept as text and never drawn, simplified or compiled.
"""
from __future__ import annotations

import io
import time
from dataclasses import dataclass

from deap import gp

from primitives import Kind, UnknownKindError, get_kind

from gp_loss.errors import GpLossError
from gp_loss.language.parse import parse_formula

# SymPy's simplify over all the formulas of one report (each at most PER_FORMULA_S); past the
# budget a formula is shown in SymPy's canonical form, which already folds ``w - -y`` into ``w + y``.
SIMPLIFY_BUDGET_S = 2.5
PER_FORMULA_S = 1.0


@dataclass
class Formula:
    """One branch formula: its text, and where it parses, its tree and simplified LaTeX."""

    text: str
    kind: Kind | None
    tree: gp.PrimitiveTree | None
    problem: str = ""  # why it is shown as text only
    latex: str | None = None  # simplified, for display
    exact_latex: str | None = None  # the exporter's LaTeX of the tree as written
    simplified: bool = False  # False: SymPy's canonical form (budget spent, or simplify gave nothing shorter)

    @property
    def parsed(self) -> bool:
        return self.tree is not None


class Formulas:
    """Parse and simplify formulas on demand, each (kind, text) once, within :data:`SIMPLIFY_BUDGET_S`."""

    def __init__(self, budget_s: float = SIMPLIFY_BUDGET_S, per_formula_s: float = PER_FORMULA_S):
        self._cache: dict[tuple[str, str], Formula] = {}
        self._budget = budget_s
        self._per = per_formula_s
        self._images: dict[str, bytes | None] = {}

    def get(self, kind_name: object, text: object) -> Formula:
        """The formula ``text`` of kind ``kind_name`` (either may be anything a run file held)."""
        text = text if isinstance(text, str) else repr(text)
        key = (kind_name if isinstance(kind_name, str) else repr(kind_name), text)
        if key not in self._cache:
            self._cache[key] = self._make(kind_name, text)
        return self._cache[key]

    def _make(self, kind_name: object, text: str) -> Formula:
        try:
            kind = get_kind(kind_name) if isinstance(kind_name, str) else None
        except UnknownKindError:
            kind = None
        if kind is None:
            return Formula(text, None, None, problem=f"unknown kind {kind_name!r}")
        try:
            tree = parse_formula(kind, text)
        except (GpLossError, RecursionError, ValueError, TypeError) as err:
            return Formula(text, kind, None, problem=str(err).splitlines()[0] if str(err) else type(err).__name__)
        f = Formula(text, kind, tree)
        try:
            from gp_loss.export.latex import to_latex
            f.exact_latex = to_latex(kind, tree)
        except (GpLossError, KeyError, IndexError, RecursionError):
            f.exact_latex = None
        self._simplify(f)
        return f

    def _simplify(self, f: Formula) -> None:
        from gp_loss.export.sympy_expr import simplify_expr, sympy_latex, to_sympy
        try:
            exact = to_sympy(f.kind, f.tree)
        except (GpLossError, RecursionError, TypeError, ValueError):
            f.latex = f.exact_latex
            return
        seconds = min(self._per, self._budget)
        expr = exact
        if seconds > 0.05:
            start = time.perf_counter()
            expr = simplify_expr(exact, seconds)
            self._budget -= time.perf_counter() - start
            f.simplified = expr is not exact
        try:
            f.latex = sympy_latex(expr)
        except (RecursionError, TypeError, ValueError):
            f.latex = f.exact_latex

    def image(self, f: Formula, dpi: int = 100) -> bytes | None:
        """A PNG of ``f``'s simplified maths (matplotlib mathtext); ``None`` where mathtext cannot draw it."""
        if f.latex is None:
            return None
        if f.latex not in self._images:
            self._images[f.latex] = math_png(f.latex, dpi)
        return self._images[f.latex]


def math_png(latex: str, dpi: int = 100, size: float = 16) -> bytes | None:
    """``latex`` drawn by matplotlib's mathtext as PNG bytes, or ``None`` if mathtext cannot parse it."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import mathtext, rc_context
    from matplotlib.font_manager import FontProperties

    buf = io.BytesIO()
    try:
        with rc_context({"mathtext.fontset": "stix"}):
            mathtext.math_to_image(f"${latex}$", buf, dpi=dpi, format="png", prop=FontProperties(size=size))
    except (ValueError, RuntimeError, KeyError, IndexError, OverflowError, MemoryError):
        return None
    return buf.getvalue()


def kind_of(name: object) -> Kind | None:
    try:
        return get_kind(name) if isinstance(name, str) else None
    except UnknownKindError:
        return None
