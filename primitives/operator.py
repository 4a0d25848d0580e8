"""The :class:`Operator` record: one primitive with its maths, torch code and LaTeX.

An operator carries everything the rest of gp-loss needs to know about it:
- ``fn``: the torch implementation used when a tree is compiled;
- ``signature``: how it is typed (see :mod:`primitives.kind`);
- ``py``/``latex``: templates used by the exporters, with operator precedence so
  that the exported code is readable infix text with no redundant parentheses.

Precedence levels (higher binds tighter) follow Python's own grammar.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

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
class Operator:
    """One primitive operator of a loss language."""

    name: str
    arity: int
    fn: Callable
    definition: str  # plain maths, shown by `gp-loss primitives`
    signature: str
    py: Template
    latex: Template
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
