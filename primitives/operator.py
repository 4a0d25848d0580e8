"""The :class:`Operator` record: one primitive with its maths, torch code, LaTeX and SymPy form.

An operator carries everything the rest of gp-loss needs to know about it:
- ``fn``: the torch implementation used when a tree is compiled;
- ``signature``: how it is typed (see :mod:`primitives.kind`);
- ``py``/``latex``: templates used by the exporters, with operator precedence so
  that the exported code is readable infix text with no redundant parentheses;
- ``sympy``: its maths for the SymPy exporter (:mod:`gp_loss.export.sympy_expr`), for display.

Precedence levels (higher binds tighter) follow Python's own grammar.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

# Precedence of an expression's outermost operator.
ADD = 1  # a + b, a - b
MUL = 2  # a * b, a / b
UNARY = 3  # -a
POW = 4  # a ** b
ATOM = 5  # names, numbers, calls, parenthesised text

# How an operator is typed (see primitives.kind.build_kind).
UNARY_ANY = "unary"  # T -> T for every tensor type of the kind
UNARY_CLASSWISE = "unary_classwise"  # Elem -> Elem only (softmax: needs a class dim)
BINARY = "binary"  # element-wise with broadcasting and constant operands
DOT = "dot"  # (Elem, Elem) -> Sample


@dataclass(frozen=True)
class Template:
    """A code template: ``text`` with ``@0``, ``@1`` slots.

    ``prec`` is the precedence of the result; ``arg_prec`` the lowest
    precedence an argument may have before it must be parenthesised.
    """

    text: str
    prec: int
    arg_prec: tuple[int, ...]


@dataclass(frozen=True)
class SympyFunction:
    """An operator's SymPy form: SymPy's own function ``name`` applied to the operator's arguments and
    then ``extra`` (``SympyFunction("Max", (0,))``: ``Max(a, 0)``).

    SymPy is imported when the form is first applied: the operator sets load without it (only the
    exporters need it). A record, not a closure: a genome carries its kind's operators into worker
    processes, so every field of an :class:`Operator` must pickle.
    """

    name: str
    extra: tuple = ()

    def __call__(self, *args: Any) -> Any:
        import sympy

        return getattr(sympy, self.name)(*args, *self.extra)


@dataclass(frozen=True)
class SympyName:
    """An operator's SymPy form where SymPy has no function for it: an opaque function ``name`` that
    SymPy never rewrites.

    ``latex``: how it is drawn, ``{0}``, ``{1}`` standing for the arguments (default
    ``\\operatorname{name}(...)``); ``shown``: how a reader sees it applied, in plain text (default
    ``name(x)``, ``name(a, b)``), for the reports' legend of the operators drawn by name.
    """

    name: str
    latex: str | None = None
    shown: str | None = None


@dataclass(frozen=True)
class Operator:
    """One primitive operator of a loss language."""

    name: str
    arity: int
    fn: Callable
    definition: str  # plain maths, shown by `gp-loss primitives`
    signature: str
    py: Template
    latex: Template
    # Its maths as SymPy writes it, for display only (the guards of fn left out): a picklable callable
    # of SymPy expressions (a SympyFunction, or one of Python's ``operator`` functions), or a SympyName.
    sympy: Callable[..., Any] | SympyName
    # Source of helper functions the exported Python needs (name -> code).
    helpers: dict[str, str] = field(default_factory=dict)


def call(name: str, arity: int = 1) -> Template:
    """Template for a plain function call ``name(a, b)``."""
    slots = ", ".join("@%d" % i for i in range(arity))
    return Template(f"{name}({slots})", ATOM, (0,) * arity)


def latex_call(name: str, arity: int = 1) -> Template:
    """LaTeX template ``\\operatorname{name}\\left(a\\right)``."""
    slots = ", ".join("@%d" % i for i in range(arity))
    return Template("\\operatorname{%s}\\left(%s\\right)" % (name, slots), ATOM, (0,) * arity)
