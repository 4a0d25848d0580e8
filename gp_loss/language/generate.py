"""Random typed loss trees: AutoLoss-Zero's random initialisation (seed 002, Fig. 2).

Starting from the root, every computational node samples an operator
uniformly by name (then one of its typed overloads uniformly), until the
target depth D; nodes at depth D take inputs (or constants, as operands of a
binary operator) as children. Every path from the root to a leaf then holds D
computational nodes. All randomness comes from the ``random.Random`` passed in.
"""
from __future__ import annotations

import random

from deap import gp

from primitives import Kind
from primitives.types import Const, Elem, Tensor


_PRODUCERS: dict[tuple, dict[tuple, tuple[list[str], dict[str, list[gp.Primitive]]]]] = {}


def _producer_table(kind: Kind) -> dict[tuple, tuple[list[str], dict[str, list[gp.Primitive]]]]:
    """The kind's ``(ret, leaf_children) -> producers`` cache (see :func:`_producers`)."""
    key = (kind.name, id(kind.pset))
    if key not in _PRODUCERS:
        _PRODUCERS[key] = {}
    return _PRODUCERS[key]


def _producers(kind: Kind, ret: type, leaf_children: bool) -> tuple[list[str], dict[str, list[gp.Primitive]]]:
    """Sorted operator names and the overloads returning ``ret``, cached per kind."""
    table = _producer_table(kind)
    if (ret, leaf_children) not in table:
        found = _find_producers(kind, ret, leaf_children)
        table[ret, leaf_children] = (sorted(found), found)
    return table[ret, leaf_children]


def _find_producers(kind: Kind, ret: type, leaf_children: bool) -> dict[str, list[gp.Primitive]]:
    """Overloads returning ``ret`` (any tensor type for ``Tensor``), by operator name.

    With ``leaf_children`` every argument must be a leaf type (an input or a
    constant); otherwise every argument must be a tensor computed by a node.
    """
    out: dict[str, list[gp.Primitive]] = {}
    for name, prims in kind.overloads.items():
        for p in prims:
            if not (p.ret is ret or (ret is Tensor and issubclass(p.ret, Tensor))):
                continue
            if leaf_children and not all(a in (Elem, Const) for a in p.args):
                continue
            if not leaf_children and Const in p.args:
                continue
            out.setdefault(name, []).append(p)
    return out


def leaf(kind: Kind, type_: type, rng: random.Random) -> gp.Terminal:
    """A random input (for a tensor slot) or search constant (for a constant slot)."""
    if type_ is Const:
        return kind.constant_terminals[rng.choice(kind.search_constants)]
    return kind.input_terminals[rng.choice(kind.inputs)]


def random_subtree(kind: Kind, ret: type, depth: int, rng: random.Random) -> list:
    """Prefix node list of a random tree of ``depth`` computational levels returning ``ret``.

    ``depth = 0`` gives a single leaf (only possible for ``Elem``/``Const``/``Tensor``).
    """
    if depth == 0:
        return [leaf(kind, Elem if ret is Tensor else ret, rng)]
    # Breeding draws about a thousand random trees per child that passes the filters, so
    # this loop is written for speed. ``rng._randbelow(n)`` is what ``rng.choice`` calls
    # (``seq[self._randbelow(len(seq))]``): the same draws, without a call per node.
    randbelow = rng._randbelow
    inputs, constants = kind.inputs, kind.search_constants
    table = _producer_table(kind)
    nodes: list = []
    # Explicit stack of (required type, computational levels still to place).
    stack = [(ret, depth)]
    while stack:
        need, levels = stack.pop()
        if levels == 0:
            if need is Const:
                nodes.append(kind.constant_terminals[constants[randbelow(len(constants))]])
            else:
                nodes.append(kind.input_terminals[inputs[randbelow(len(inputs))]])
            continue
        found = table.get((need, levels == 1))
        names, choices = found if found is not None else _producers(kind, need, levels == 1)
        overloads = choices[names[randbelow(len(names))]]
        prim = overloads[randbelow(len(overloads))]
        nodes.append(prim)
        for arg in reversed(prim.args):
            stack.append((arg, 0 if arg is Const else levels - 1))
    return nodes


def random_tree(kind: Kind, depth: int, rng: random.Random) -> gp.PrimitiveTree:
    """A random loss tree of ``kind`` with ``depth`` computational nodes on every path."""
    if depth < 1:
        raise ValueError(f"depth must be at least 1, got {depth}")
    return gp.PrimitiveTree(random_subtree(kind, Tensor, depth, rng))
