"""Render a loss tree as infix text from the operators' templates.

Shared by the Python and LaTeX exporters. Rendering walks the prefix list
with an explicit stack (no recursion), parenthesises an argument only when
its precedence is lower than its slot needs, and, for Python, hoists
subexpressions nested deeper than ``max_nesting`` into temporaries so the
generated code stays within the interpreter's parenthesis limit.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

from deap import gp

from primitives import Kind
from primitives.operator import ATOM, Template
from primitives.types import Elem, Sample

_SLOT = re.compile(r"@(\d)")


@dataclass
class Rendered:
    """Rendered text of a tree: ``lines`` of temporaries, then the expression."""

    expr: str
    lines: list[str] = field(default_factory=list)
    helpers: dict[str, str] = field(default_factory=dict)


def fill(template: str, args: list[str]) -> str:
    return _SLOT.sub(lambda m: args[int(m.group(1))], template)


def render(
    kind: Kind,
    tree: gp.PrimitiveTree,
    template_of: Callable[[object], Template],
    leaf: Callable[[gp.Terminal], str],
    paren: Callable[[str], str],
    broadcast: Callable[[str], str] | None = None,
    max_nesting: int | None = None,
) -> Rendered:
    """Render ``tree`` with the template chosen per operator by ``template_of``.

    ``broadcast`` wraps a per-sample argument of an element-wise result (Python:
    ``s[:, None]``); ``max_nesting`` enables hoisting into ``t1 = ...`` lines.
    """
    out = Rendered("")
    stack: list[tuple[object, list]] = []
    result = None
    for node in tree:
        stack.append((node, []))
        while len(stack[-1][1]) == stack[-1][0].arity:
            node, args = stack.pop()
            if isinstance(node, gp.Terminal):
                value = (leaf(node), ATOM, 0)
            else:
                op = kind.operators[node.name]
                out.helpers.update(op.helpers)
                tpl = template_of(op)
                texts, depth = [], 0
                for i, (text, prec, d) in enumerate(args):
                    if broadcast and node.ret is Elem and node.args[i] is Sample:
                        text, prec = broadcast(text if prec >= ATOM else paren(text)), ATOM
                    if prec < tpl.arg_prec[i]:
                        text, d = paren(text), d + 1
                    texts.append(text)
                    depth = max(depth, d)
                depth += 1
                text = fill(tpl.text, texts)
                if max_nesting is not None and depth > max_nesting:
                    name = f"t{len(out.lines) + 1}"
                    out.lines.append(f"{name} = {text}")
                    value = (name, ATOM, 0)
                else:
                    value = (text, tpl.prec, depth)
            if not stack:
                result = value
                break
            stack[-1][1].append(value)
        if result is not None:
            break
    out.expr = result[0]
    return out
