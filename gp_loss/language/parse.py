"""Parse formula text into a typed DEAP ``PrimitiveTree`` without ``eval``.

The text is DEAP's prefix form, e.g. ``neg(dot(y, log(softmax(x))))``::

    formula := NUMBER | NAME | NAME "(" formula ("," formula)* ")"

NAME is an input of the kind or an operator of its set; NUMBER is a numeric
literal (``2``, ``0.25``, ``-1e-3``) and becomes a constant: a finite float,
or an int of magnitude at most 2**53 (``1e400`` and 300-digit integers are
refused with the literal and its position). Parsing and type
resolution use explicit stacks, not recursion, so trees of any height parse.
Every error names the offending token, its position and what was expected.
"""
from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass, field

from deap import gp

from primitives import Kind
from primitives.types import Const, Elem, Sample

from gp_loss.errors import FormulaError

_TOKEN = re.compile(
    r"\s*(?:(?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<punct>[(),]))"
)

# Integers up to 2**53 are exact as floats (and well inside torch's int64).
MAX_INTEGER_CONSTANT = 2 ** 53

_TYPE_WORDS = {Elem: "an element-wise tensor", Sample: "a per-sample value (from dot)", Const: "a constant"}


@dataclass
class _Token:
    kind: str  # "number" | "name" | "punct"
    text: str
    pos: int


@dataclass
class _Node:
    """A syntax-tree node before typing."""

    text: str
    pos: int
    is_call: bool = False
    is_number: bool = False
    children: list["_Node"] = field(default_factory=list)
    # Filled during type resolution:
    node: object = None  # gp.Primitive or gp.Terminal
    type_: type | None = None


def tokenize(text: str) -> list[_Token]:
    """Split formula text into numbers, names and ``( ) ,``."""
    tokens = []
    pos = 0
    end = len(text.rstrip())
    while pos < end:
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            bad = text[pos:].lstrip()
            at = len(text) - len(bad)
            raise FormulaError(
                f"unexpected character {bad[0]!r} at position {at}: formulas use operator names, "
                f"input names, numbers, parentheses and commas", text, at)
        kind = m.lastgroup
        tokens.append(_Token(kind, m.group(kind), m.start(kind)))
        pos = m.end()
    return tokens


def _syntax_tree(text: str, tokens: list[_Token]) -> _Node:
    """Build the untyped syntax tree with an explicit stack of open calls."""
    if not tokens:
        raise FormulaError("empty formula: write one, e.g. neg(dot(y, log(softmax(x))))", text, 0)
    root = _Node("<formula>", 0, is_call=True)
    stack = [root]
    expect_operand = True
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        top = stack[-1]
        if expect_operand:
            if tok.kind == "number":
                top.children.append(_Node(tok.text, tok.pos, is_number=True))
                expect_operand = False
            elif tok.kind == "name":
                if i + 1 < len(tokens) and tokens[i + 1].text == "(":
                    call = _Node(tok.text, tok.pos, is_call=True)
                    top.children.append(call)
                    stack.append(call)
                    i += 1  # the "(" is consumed with the name
                    if i + 1 < len(tokens) and tokens[i + 1].text == ")":
                        raise FormulaError(
                            f"{tok.text!r} at position {tok.pos} is called with no arguments",
                            text, tok.pos)
                else:
                    top.children.append(_Node(tok.text, tok.pos))
                    expect_operand = False
            else:
                raise FormulaError(
                    f"expected an operator, input or number at position {tok.pos}, found {tok.text!r}",
                    text, tok.pos)
        else:
            if tok.text == "," and top is not root:
                expect_operand = True
            elif tok.text == ")" and top is not root:
                stack.pop()
            elif tok.text == ")":
                raise FormulaError(
                    f"unbalanced parentheses: ')' at position {tok.pos} has no matching '('",
                    text, tok.pos)
            elif top is root:
                raise FormulaError(
                    f"unexpected {tok.text!r} at position {tok.pos} after a complete formula "
                    f"(one formula per branch; combine terms with add(...))", text, tok.pos)
            else:
                raise FormulaError(
                    f"expected ',' or ')' at position {tok.pos} inside {top.text}(...) "
                    f"opened at position {top.pos}, found {tok.text!r}", text, tok.pos)
        i += 1
    if len(stack) > 1:
        open_call = stack[-1]
        raise FormulaError(
            f"unbalanced parentheses: '(' of {open_call.text!r} at position {open_call.pos} is never "
            f"closed", text, open_call.pos)
    if expect_operand:
        raise FormulaError(
            f"formula ends early at position {len(text)}: expected an operator, input or number",
            text, len(text))
    return root.children[0]


def _describe(node: _Node) -> str:
    return f"{node.text}(...)" if node.is_call else node.text


def _number(text: str, n: _Node) -> int | float:
    """The value of the number literal ``n``: an integer literal gives an int, any other a float.

    A constant must be a finite float (an integer one exactly, so that it prints
    back as the same literal and fits torch's 64-bit integers); anything else
    is refused here rather than becoming ``inf`` or overflowing later.
    """
    integer = re.fullmatch(r"[-+]?\d+", n.text) is not None
    if integer:
        digits = n.text.lstrip("+-").lstrip("0") or "0"  # (int() refuses thousands of digits)
        if len(digits) <= len(str(MAX_INTEGER_CONSTANT)) and int(digits) <= MAX_INTEGER_CONSTANT:
            return -int(digits) if n.text.startswith("-") else int(digits)
        limit = (f"an integer constant must be at most 2**53 = {MAX_INTEGER_CONSTANT} in magnitude "
                 f"(write a larger one as a float, e.g. 1e20)")
    else:
        value = float(n.text)  # overflows to inf rather than raising
        if math.isfinite(value):
            return value
        limit = f"a constant must be a finite float, at most {sys.float_info.max:.6g} in magnitude"
    shown = n.text if len(n.text) <= 40 else n.text[:20] + "..." + n.text[-8:]
    raise FormulaError(f"number {shown!r} at position {n.pos} is out of range: {limit}", text, n.pos)


def _resolve_leaf(kind: Kind, text: str, n: _Node) -> None:
    if n.is_number:
        value = _number(text, n)
        term = kind.constant_terminals.get(value) if isinstance(value, int) else None
        n.node = term if term is not None else gp.Terminal(value, False, Const)
        n.type_ = Const
    elif n.text in kind.input_terminals:
        n.node = kind.input_terminals[n.text]
        n.type_ = Elem
    elif n.text in kind.operators:
        op = kind.operators[n.text]
        raise FormulaError(
            f"operator {n.text!r} at position {n.pos} needs {op.arity} argument"
            f"{'s' if op.arity > 1 else ''}: write {n.text}(...)", text, n.pos)
    else:
        raise FormulaError(
            f"unknown name {n.text!r} at position {n.pos}: the inputs of kind {kind.name!r} are "
            f"{', '.join(kind.inputs)}", text, n.pos)


def _resolve_call(kind: Kind, text: str, n: _Node) -> None:
    if n.text in kind.input_terminals:
        raise FormulaError(
            f"{n.text!r} at position {n.pos} is an input of kind {kind.name!r}, not an operator",
            text, n.pos)
    if n.text not in kind.operators:
        raise FormulaError(
            f"unknown operator {n.text!r} at position {n.pos}: kind {kind.name!r} has "
            f"{', '.join(kind.operators)}", text, n.pos)
    op = kind.operators[n.text]
    if len(n.children) != op.arity:
        raise FormulaError(
            f"{n.text!r} at position {n.pos} takes {op.arity} argument{'s' if op.arity > 1 else ''}, "
            f"got {len(n.children)}", text, n.pos)
    arg_types = tuple(c.type_ for c in n.children)
    for prim in kind.overloads[n.text]:
        if tuple(prim.args) == arg_types:
            n.node, n.type_ = prim, prim.ret
            return
    if all(t is Const for t in arg_types):
        raise FormulaError(
            f"{n.text!r} at position {n.pos} is applied to constants only; a constant may only be "
            f"an operand of a binary operator whose other operand is a tensor", text, n.pos)
    # Name the first argument whose type no overload accepts in its slot.
    for slot, child in enumerate(n.children):
        allowed = {p.args[slot] for p in kind.overloads[n.text]}
        if child.type_ not in allowed:
            wanted = " or ".join(sorted(_TYPE_WORDS[t] for t in allowed))
            raise FormulaError(
                f"type error: argument {slot + 1} of {n.text!r} at position {n.pos} must be "
                f"{wanted}, but {_describe(child)} at position {child.pos} is "
                f"{_TYPE_WORDS[child.type_]}", text, child.pos)
    raise FormulaError(  # pragma: no cover - every slot allowed but not the combination
        f"type error: {n.text!r} at position {n.pos} does not take "
        f"({', '.join(_TYPE_WORDS[t] for t in arg_types)})", text, n.pos)


def parse_formula(kind: Kind, text: str) -> gp.PrimitiveTree:
    """Parse ``text`` as a loss tree of ``kind``.

    Raises :class:`~gp_loss.errors.FormulaError` naming the offending token.
    """
    if not isinstance(text, str):
        raise FormulaError(f"a formula must be text, got {type(text).__name__}")
    root = _syntax_tree(text, tokenize(text))
    # Post-order type resolution with an explicit stack.
    order: list[_Node] = []
    stack = [root]
    while stack:
        n = stack.pop()
        order.append(n)
        stack.extend(n.children)
    for n in reversed(order):  # children always before their parent
        if n.is_call:
            _resolve_call(kind, text, n)
        else:
            _resolve_leaf(kind, text, n)
    if root.type_ is Const:
        raise FormulaError(
            f"the formula is only the constant {root.text}; a loss must depend on the inputs "
            f"{', '.join(kind.inputs)}", text, root.pos)
    # Emit prefix order.
    nodes = []
    stack = [root]
    while stack:
        n = stack.pop()
        nodes.append(n.node)
        stack.extend(reversed(n.children))
    return gp.PrimitiveTree(nodes)
