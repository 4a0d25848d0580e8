"""Export a loss tree as a SymPy expression (as PySR's ``export_sympy`` does), simplified for display.

:func:`to_sympy` turns a branch into the SymPy expression of its maths, exactly
as written (SymPy's automatic canonical form only: ``sub(w, neg(y))`` is already
``w + y``); :func:`simplify_expr` simplifies it under a time limit; :func:`sympy_latex`
writes it as LaTeX that matplotlib's mathtext can draw. This is **for display
only**: the loss that trains is always the compiled tree (:mod:`gp_loss.language.compile`),
whose ``log``, ``div``, ``exp`` and the ``zero`` set's ``inv``/``log``/``sqrt`` carry
guards (``+ 1e-20``, a clamp, a sign) that the displayed maths leaves out.

Each operator carries its SymPy form (:attr:`primitives.operator.Operator.sympy`): operators
SymPy knows become its own functions (``exp``, ``log``, ``Abs``, ``sqrt``, ``tanh``, ``sin``,
``cos``, ``Max`` for ``relu``); the others name a :class:`~primitives.operator.SympyName`, which
becomes an opaque function that SymPy never rewrites: ``softmax``, ``sigmoid`` (drawn σ),
``softplus``, ``gd``, ``alf``, ``erf`` and ``erfc`` (this language's S-curves rescaled
to (0, 1), not SymPy's ``erf``), ``dot`` (drawn ⟨a, b⟩), and ``zero``'s ``slog``,
``ssqrt``, ``mean_nhw``, ``mean_c``, ``maxpool3x3``, ``minpool3x3``.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable

import sympy
from deap import gp
from sympy.printing.latex import LatexPrinter

from primitives import KINDS, Kind
from primitives.operator import Operator, SympyName

from gp_loss.errors import GpLossError
from gp_loss.timeout import TimeLimitExceeded, time_limit

# Simplifying a large expression can take SymPy seconds; past this it shows the expression as written.
SIMPLIFY_SECONDS = 2.0
# Expressions with more operations than this are not simplified at all (SymPy's time grows fast with size).
SIMPLIFY_MAX_OPS = 80

# What each input may be, so that SymPy simplifies no further than the maths allows
# (e.g. |u| = u for an area); names are the kinds' input names.
_SYMBOLS = {
    "x": dict(real=True), "yhat": dict(real=True),
    "y": dict(nonnegative=True), "w": dict(nonnegative=True),
    "i": dict(nonnegative=True), "u": dict(positive=True), "e": dict(positive=True),
}
SYMBOLS: dict[str, sympy.Symbol] = {n: sympy.Symbol(n, **a) for n, a in _SYMBOLS.items()}
_LATEX_NAMES = {SYMBOLS["yhat"]: "\\hat{y}"}


@functools.cache
def _named(form: SympyName, nargs: int) -> type:
    """The opaque SymPy function of ``form`` taking ``nargs`` arguments: one class per form, so that
    two expressions using it compare equal.

    Its LaTeX is ``form.latex`` (``{0}``, ``{1}``: the arguments); its ``shown`` is ``form.shown``,
    for the reports' legend of the operators drawn by name (:func:`drawn_by_name`).
    """
    name, latex = form.name, form.latex
    template = latex or ("\\operatorname{{%s}}\\left(%s\\right)"
                         % (name, ", ".join("{%d}" % k for k in range(nargs))))

    def _latex(self, printer, exp=None):
        text = template.format(*(printer._print(a) for a in self.args))
        return f"\\left({text}\\right)^{{{exp}}}" if exp else text

    shown = form.shown or f"{name}({'x' if nargs == 1 else ', '.join('ab'[:nargs])})"
    return type(name, (sympy.Function,), {"nargs": nargs, "_latex": _latex, "__module__": __name__,
                                           "shown": shown})


def sympy_function(op: Operator) -> Callable:
    """The SymPy maths of operator ``op``, a function of SymPy expressions: its own form, or the opaque
    function its :class:`~primitives.operator.SympyName` names."""
    return _named(op.sympy, op.arity) if isinstance(op.sympy, SympyName) else op.sympy


def drawn_by_name(kind_name: str) -> dict[str, str]:
    """The operators of a kind that are drawn as a named function, not as standard maths, and how
    each is shown: operator name -> e.g. ``{"log": "slog(x)", "sqrt": "ssqrt(x)", ...}`` for ``zero``.

    These are the operators a reader cannot know from the drawing alone (``slog``, ``gd``,
    ``σ``, ``⟨a, b⟩``, this language's rescaled ``erf``); a report explains each with the
    operator's definition (:attr:`primitives.operator.Operator.definition`).
    """
    kind = KINDS.get(kind_name)
    if kind is None:
        return {}
    return {name: _named(op.sympy, op.arity).shown for name, op in kind.operators.items()
            if isinstance(op.sympy, SympyName)}


def _constant(value) -> sympy.Expr:
    if type(value) is int:
        return sympy.Integer(value)
    if type(value) is float and math.isfinite(value):
        return sympy.Rational(repr(value))  # 0.25 -> 1/4: exact, so that it simplifies
    raise GpLossError(f"cannot write constant {value!r} for SymPy: constants must be finite numbers")


def to_sympy(kind: Kind, tree: gp.PrimitiveTree) -> sympy.Expr:
    """The branch's maths as a SymPy expression, not simplified beyond SymPy's canonical form.

    Walks the prefix list with an explicit stack (no recursion), like the other exporters.
    """
    stack: list[tuple[object, list]] = []
    for node in tree:
        stack.append((node, []))
        while len(stack[-1][1]) == stack[-1][0].arity:
            node, args = stack.pop()
            if isinstance(node, gp.Terminal):
                if isinstance(node.value, str):
                    if node.value not in kind.inputs:
                        raise GpLossError(f"cannot write leaf {node.value!r} for SymPy: kind {kind.name!r} "
                                          f"has inputs {', '.join(kind.inputs)}")
                    value = SYMBOLS.get(node.value) or sympy.Symbol(node.value)
                else:
                    value = _constant(node.value)
            else:
                op = kind.operators.get(node.name)
                if op is None:
                    raise GpLossError(f"no SymPy form for operator {node.name!r} of kind {kind.name!r}")
                value = sympy_function(op)(*args)
            if not stack:
                return value
            stack[-1][1].append(value)
    raise GpLossError("cannot write an empty tree for SymPy")


def simplify_expr(expr: sympy.Expr, seconds: float | None = SIMPLIFY_SECONDS) -> sympy.Expr:
    """``sympy.simplify`` never making the expression longer, within ``seconds``; ``expr`` itself past that.

    For display only (see the module's docstring).
    """
    if sympy.count_ops(expr) > SIMPLIFY_MAX_OPS:
        return expr
    try:
        with time_limit(seconds):
            simple = sympy.simplify(expr, ratio=1.0)
    except (TimeLimitExceeded, RecursionError, TypeError, ValueError, ZeroDivisionError, AttributeError):
        return expr
    # simplify may only reorder: keep the expression as written unless simplify made it shorter.
    return simple if sympy.count_ops(simple) < sympy.count_ops(expr) else expr


class _LatexPrinter(LatexPrinter):
    """SymPy's LaTeX, but ``e^{x}`` only for a short exponent: ``\\exp\\left(...\\right)`` otherwise, which
    stays readable where a fraction in a superscript would be drawn too small."""

    def _print_ExpBase(self, expr, exp=None):
        arg = expr.args[0]
        if arg.is_Atom or (arg.is_Mul and len(arg.args) == 2 and arg.args[0] == -1 and arg.args[1].is_Atom):
            return super()._print_ExpBase(expr, exp)
        return self._do_exponent("\\exp\\left(%s\\right)" % self._print(arg), exp)


def sympy_latex(expr: sympy.Expr) -> str:
    """LaTeX of ``expr`` in the subset matplotlib's mathtext draws (``\\hat{y}`` for ``yhat``; a thin
    space between factors, so that ``2\\,y\\,\\operatorname{softmax}`` reads as a product)."""
    return _LatexPrinter({"symbol_names": _LATEX_NAMES, "mul_symbol": "\\,", "order": "old"}).doprint(expr)


def sympy_text(expr: sympy.Expr) -> str:
    """``expr`` as SymPy's text, terms in the order a person writes them (``1 - i/u``, not ``-i/u + 1``)."""
    return sympy.sstr(expr, order="old")


@dataclass(frozen=True)
class SympyBranch:
    """One branch as SymPy: ``exact`` (as written), ``simple`` (simplified, for display) and its LaTeX."""

    name: str
    kind: str
    formula: str
    exact: sympy.Expr
    simple: sympy.Expr

    @property
    def latex(self) -> str:
        return sympy_latex(self.simple)


def branch_sympy(name: str, kind: Kind, tree: gp.PrimitiveTree, seconds: float | None = SIMPLIFY_SECONDS
                 ) -> SympyBranch:
    """One branch exported and simplified (``seconds``: the simplification's time limit)."""
    exact = to_sympy(kind, tree)
    return SympyBranch(name, kind.name, str(tree), exact, simplify_expr(exact, seconds))


def export_sympy(genome, seconds: float | None = SIMPLIFY_SECONDS) -> dict[str, SympyBranch]:
    """Every branch of ``genome`` (a :class:`~gp_loss.language.genome.Genome`) by name, simplified for display."""
    return {b.name: branch_sympy(b.name, b.kind, b.tree, seconds) for b in genome}
