"""Random typed loss trees: AutoLoss-Zero's random initialisation (Li et al., CVPR 2022, Fig. 2).

Starting from the root, every computational node samples an operator
uniformly by name (then one of its typed overloads uniformly), until the
target depth D; nodes at depth D take inputs (or constants, as operands of a
binary operator) as children. Every path from the root to a leaf then holds D
computational nodes. All randomness comes from the ``random.Random`` passed in.
"""
from __future__ import annotations

import bisect
import math
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
        prim = _free_node(kind, table, need, levels, randbelow, nodes)
        if prim is not None:
            for arg in reversed(prim.args):
                stack.append((arg, 0 if arg is Const else levels - 1))
    return nodes


def _free_node(kind: Kind, table: dict, need: type, levels: int, randbelow, nodes: list) -> gp.Primitive | None:
    """Append a random computational node returning ``need`` to ``nodes``; return it if its
    children are still to be drawn, or ``None`` if it was on the last level (its children,
    leaves, are then drawn and appended at once, in the order popping them would give)."""
    found = table.get((need, levels == 1))
    names, choices = found if found is not None else _producers(kind, need, levels == 1)
    overloads = choices[names[randbelow(len(names))]]
    prim = overloads[randbelow(len(overloads))]
    nodes.append(prim)
    if levels != 1:
        return prim
    for arg in prim.args:
        if arg is Const:
            nodes.append(kind.constant_terminals[kind.search_constants[randbelow(len(kind.search_constants))]])
        else:
            nodes.append(kind.input_terminals[kind.inputs[randbelow(len(kind.inputs))]])
    return None


def random_tree(kind: Kind, depth: int, rng: random.Random) -> gp.PrimitiveTree:
    """A random loss tree of ``kind`` with ``depth`` computational nodes on every path."""
    if depth < 1:
        raise ValueError(f"depth must be at least 1, got {depth}")
    return gp.PrimitiveTree(random_subtree(kind, Tensor, depth, rng))


# -- random trees that read a given input -------------------------------------------------

def random_tree_reading(kind: Kind, depth: int, rng: random.Random, input_name: str) -> gp.PrimitiveTree:
    """A tree of :func:`random_tree`'s distribution conditioned on having the leaf ``input_name``.

    Exactly the distribution of drawing :func:`random_tree` until a tree reads
    ``input_name``, without the draws that do not: the filters reject every
    tree without the prediction leaf, and many random trees lack it (the
    README gives the share). (The draws differ, so for one seed the trees
    differ from those of that loop.)

    How: let ``q(T, L)`` be the probability that a random subtree of type
    ``T`` with ``L`` computational levels lacks the leaf. A node that must
    contain it picks its operator with probability proportional to
    ``P(op) * (1 - prod q(child))``, then decides child by child, left to right,
    whether that child contains it: child ``i`` does with probability
    ``(1 - q_i) / (1 - q_i * ... * q_k)`` while no earlier child does, and is
    free once one does. A node that must lack it picks ``P(op) * prod q(child)``
    and all its children lack it. Free nodes are drawn as :func:`random_tree` does.
    """
    if depth < 1:
        raise ValueError(f"depth must be at least 1, got {depth}")
    if input_name not in kind.inputs:
        raise ValueError(f"{kind.name} has no input {input_name!r}; its inputs: {', '.join(kind.inputs)}")
    return gp.PrimitiveTree(_ReadingSampler.of(kind, input_name).draw(depth, rng))


_FREE, _MUST, _MUST_NOT = 0, 1, 2


class _ReadingSampler:
    """The weights of :func:`random_tree_reading` for one kind and input, computed on first use."""

    _cache: dict[tuple, "_ReadingSampler"] = {}

    @classmethod
    def of(cls, kind: Kind, input_name: str) -> "_ReadingSampler":
        key = (kind.name, id(kind.pset), input_name)
        if key not in cls._cache:
            cls._cache[key] = cls(kind, input_name)
        return cls._cache[key]

    def __init__(self, kind: Kind, input_name: str):
        self.kind = kind
        self.target = kind.input_terminals[input_name]
        self.others = [kind.input_terminals[n] for n in kind.inputs if n != input_name]
        self.free = _producer_table(kind)
        self._q: dict[tuple, float] = {}
        # (type, levels, mode) -> (bounds, total weight, [(primitive, child levels, thresholds, fixed)])
        self._choices: dict[tuple, tuple[list[float], list[tuple[gp.Primitive, list[int]]]]] = {}

    def _options(self, ret: type, levels: int) -> list[tuple[float, gp.Primitive, list[int]]]:
        """``(P(primitive), primitive, levels of each argument)`` of a free node."""
        names, choices = _producers(self.kind, ret, levels == 1)
        return [(1.0 / len(names) / len(choices[name]), prim,
                 [0 if arg is Const else levels - 1 for arg in prim.args])
                for name in names for prim in choices[name]]

    def q(self, ret: type, levels: int) -> float:
        """Probability that a free subtree of type ``ret`` and ``levels`` levels lacks the leaf."""
        if levels == 0:
            return 1.0 if ret is Const else len(self.others) / len(self.kind.inputs)
        key = (ret, levels)
        if key not in self._q:
            self._q[key] = sum(p * math.prod(self._lacks(prim, child_levels))
                               for p, prim, child_levels in self._options(ret, levels))
        return self._q[key]

    def _lacks(self, prim: gp.Primitive, child_levels: list[int]) -> list[float]:
        """``q`` of each child of ``prim``."""
        return [self.q(arg, lv) for arg, lv in zip(prim.args, child_levels)]

    def _table(self, ret: type, levels: int, mode: int):
        """Cumulative weights and ``(primitive, child levels, thresholds)`` of a node in ``mode``.

        ``thresholds[i]``: for a node that must have the leaf, the probability that
        child ``i`` has it given that no earlier child has (1 for the last).
        """
        key = (ret, levels, mode)
        if key not in self._choices:
            cumulative, entries, total = [], [], 0.0
            for p, prim, child_levels in self._options(ret, levels):
                lacks = self._lacks(prim, child_levels)
                lack = math.prod(lacks)
                weight = p * (1.0 - lack if mode == _MUST else lack)
                if weight <= 0:
                    continue
                thresholds = []
                for i, value in enumerate(lacks):
                    rest = math.prod(lacks[i:])
                    last = i == len(lacks) - 1
                    thresholds.append(1.0 if last else (1.0 - value) / (1.0 - rest) if rest < 1.0 else 0.0)
                total += weight
                cumulative.append(total)
                # The children's stack entries when no draw decides them: all lack the leaf, or
                # the only child has it.
                fixed = None
                if mode == _MUST_NOT or len(child_levels) == 1:
                    child_mode = _MUST_NOT if mode == _MUST_NOT else _MUST
                    fixed = [(arg, lv, child_mode) for arg, lv in zip(prim.args, child_levels)][::-1]
                entries.append((prim, child_levels, thresholds, fixed))
            if not entries:  # pragma: no cover - the callers only ask for possible subtrees
                raise ValueError(f"no subtree of {ret.__name__} with {levels} levels can meet the condition")
            # Entry i is picked for a uniform draw in [0, total) when the draw is below its
            # cumulative weight and not below the one before; bisecting all but the last bound
            # cannot run past the last entry, even if rounding puts the draw at ``total``.
            self._choices[key] = (cumulative[:-1], total, entries)
        return self._choices[key]

    def draw(self, depth: int, rng: random.Random) -> list:
        """Prefix node list of one tree (type ``Tensor``) that has the leaf.

        One loop over a stack of ``(type, levels, mode)``; free nodes are drawn
        as in :func:`random_subtree` (this runs for every random tree bred).
        """
        kind = self.kind
        randbelow, uniform = rng._randbelow, rng.random
        free, choices = self.free, self._choices
        inputs, constants, others = kind.inputs, kind.search_constants, self.others
        nodes: list = []
        stack = [(Tensor, depth, _MUST)]
        while stack:
            need, levels, mode = stack.pop()
            if levels == 0:
                if need is Const:
                    nodes.append(kind.constant_terminals[constants[randbelow(len(constants))]])
                elif mode == _FREE:
                    nodes.append(kind.input_terminals[inputs[randbelow(len(inputs))]])
                elif mode == _MUST:
                    nodes.append(self.target)
                else:
                    nodes.append(others[randbelow(len(others))])
                continue
            if mode == _FREE:
                prim = _free_node(kind, free, need, levels, randbelow, nodes)
                if prim is not None:
                    for arg in reversed(prim.args):
                        stack.append((arg, 0 if arg is Const else levels - 1, _FREE))
                continue
            table = choices.get((need, levels, mode))
            bounds, total, entries = table if table is not None else self._table(need, levels, mode)
            prim, child_levels, thresholds, fixed = entries[bisect.bisect_right(bounds, uniform() * total)]
            nodes.append(prim)
            if fixed is not None:
                stack.extend(fixed)
                continue
            # Which children have the leaf: the first that does, then free ones.
            modes, placed = [], False
            for threshold in thresholds:
                if placed:
                    modes.append(_FREE)
                elif threshold >= 1.0 or uniform() < threshold:
                    modes.append(_MUST)
                    placed = True
                else:
                    modes.append(_MUST_NOT)
            for i in range(len(child_levels) - 1, -1, -1):
                stack.append((prim.args[i], child_levels[i], modes[i]))
        return nodes
