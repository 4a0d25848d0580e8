"""Compile a loss tree into a torch callable, without ``eval``/``exec``.

DEAP's ``gp.compile`` builds Python source and evaluates it, which fails past
about 90 levels and would run whatever text the tree holds. Here a tree is
turned once into a postfix program of Python function references, and the
callable runs that program with a value stack: no recursion, so a tree of any
height compiles, and every node is an operator of the kind's own set.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from deap import gp

from primitives import Kind

from gp_loss.kinds import kind_spec

_INPUT, _CONST, _CALL = 0, 1, 2


class CompiledTree:
    """A tree as a postfix program; calling it returns the raw output tensor.

    ``f(*inputs)`` takes the kind's inputs in order (``x, y, w`` / ``i, u, e`` /
    ``yhat, y``) and returns the output o before reduction: N×C (``Sample``
    values N×1) for ``cls``/``bcls``, N for ``reg``, N×C×H×W for ``zero``.
    Works on any device; autograd flows through. ``text`` is ``str(tree)`` and
    ``inputs_used`` the names of the inputs the tree reads.
    """

    __slots__ = ("program", "n_inputs", "text", "inputs_used")

    def __init__(self, kind: Kind, tree: gp.PrimitiveTree):
        index = {name: i for i, name in enumerate(kind.inputs)}
        program: list[tuple] = []
        # ``text`` is ``str(tree)``, built in the same pass: the filters compile every
        # random tree they judge, and a second walk (DEAP's ``__str__``) costs as much again.
        # A node's text is ``node.format(*argument texts)``, exactly as DEAP formats it.
        texts: list[str] = []
        used: set[str] = set()
        for node in reversed(tree):
            if isinstance(node, gp.Primitive):
                if node.arity == 1:
                    texts[-1] = node.format(texts[-1])
                else:  # the first argument is on top of the stack
                    first = texts.pop()
                    texts[-1] = node.format(first, texts[-1])
                program.append((_CALL, kind.operators[node.name].fn, node.arity))
                continue
            texts.append(node.format())
            if isinstance(node.value, str):
                program.append((_INPUT, index[node.value], 0))
                used.add(node.value)
            else:
                program.append((_CONST, node.value, 0))
        self.program = program
        self.n_inputs = len(kind.inputs)
        self.text = texts[0] if texts else ""
        self.inputs_used = frozenset(used)  # names of the inputs the tree reads

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.evaluate(inputs)

    def evaluate(self, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The output on ``inputs`` (a tuple of the kind's inputs in order)."""
        if len(inputs) != self.n_inputs:
            raise TypeError(f"{self.text}: expected {self.n_inputs} inputs, got {len(inputs)}")
        stack: list = []
        pop, push = stack.pop, stack.append
        for code, item, arity in self.program:
            if code == _CALL:
                if arity == 1:
                    push(item(pop()))
                else:
                    a = pop()
                    push(item(a, pop()))
            elif code == _INPUT:
                push(inputs[item])
            else:
                push(item)
        return stack[0]

    def __repr__(self) -> str:
        return f"CompiledTree({self.text})"


def compile_tree(kind: Kind, tree: gp.PrimitiveTree) -> CompiledTree:
    """Compile ``tree`` to a callable returning the unreduced output tensor."""
    return CompiledTree(kind, tree)


Normaliser = Callable[[torch.Tensor], torch.Tensor]  # raw output -> scalar loss


class ReducedLoss:
    """``loss(*inputs) -> scalar``: the output of ``raw`` reduced by ``normaliser``.

    ``normaliser`` is the kind's reduction unless a task gave its own
    (:mod:`gp_loss.reduction` states the rule). ``raw`` and
    ``normaliser`` stay readable, so the rejection protocol can take the gradient
    of the raw output directly when the normaliser is a
    :class:`~gp_loss.reduction.Reduction` (a known constant times the sum).
    """

    def __init__(self, kind_name: str, raw: CompiledTree, normaliser: Normaliser | None = None):
        self.kind_name, self.raw = kind_name, raw
        self.normaliser = kind_spec(kind_name).reduction if normaliser is None else normaliser
        self.__doc__ = f"{kind_name} loss: {raw.text}"

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.normaliser(self.raw(*inputs))


def reduced_loss(kind_name: str, raw: CompiledTree, normaliser: Normaliser | None = None) -> ReducedLoss:
    """``loss(*inputs) -> scalar``: the output of ``raw`` reduced by ``normaliser`` (default: the kind's reduction)."""
    return ReducedLoss(kind_name, raw, normaliser)


def compile_loss(kind: Kind, tree: gp.PrimitiveTree, normaliser: Normaliser | None = None) -> ReducedLoss:
    """Compile ``tree`` to ``loss(*inputs) -> scalar``.

    ``normaliser(raw output) -> scalar``: a task's own normalisation, e.g.
    ``lambda o: o.sum() / num_foreground``; ``None`` (default) is the kind's reduction.
    """
    return reduced_loss(kind.name, CompiledTree(kind, tree), normaliser)


def evaluate(kind: Kind, tree: gp.PrimitiveTree, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
    """Compile and evaluate the reduced loss once."""
    return compile_loss(kind, tree)(*inputs)


def evaluate_sharing(kind: Kind, tree: gp.PrimitiveTree, names: tuple[str, ...],
                     inputs: tuple[torch.Tensor, ...], known: dict) -> torch.Tensor:
    """The unreduced output of ``tree`` on ``inputs``, sharing subtree outputs with other trees.

    ``names``: the tree's node names in prefix order (a subtree is a slice of
    them, and the slice names its formula: every operator's arity is known).
    ``known`` maps such slices to outputs on these same ``inputs``: a subtree
    found there is not computed (nor is anything below it: the tree is walked
    from the root down), and every subtree computed is added. Entries used are
    moved to the end, so ``known`` stays in order of last use (a caller that
    trims it drops its first keys, the least recently used). The operators
    are deterministic and never work in place, so a stored output is what
    computing it again would give. Used where many trees run on one fixed
    batch (the convergence stage's sweeps), without compiling each tree. The
    walk uses an explicit stack, not recursion, so trees of any height work.
    """
    n = len(tree)
    ends = [0] * n  # ends[i]: one past the last node of the subtree rooted at i
    for i in range(n - 1, -1, -1):
        arity = tree[i].arity
        if arity == 0:
            ends[i] = i + 1
        elif arity == 1:
            ends[i] = ends[i + 1]
        else:
            ends[i] = ends[ends[i + 1]]
    index = _input_index(kind)
    operators = kind.operators
    values: list = []  # outputs of the finished subtrees, in order
    # (i, key): visit node i (key None) or, with its key, apply it to its arguments' outputs.
    # The order of visits and of updates to ``known`` is that of the recursive walk.
    todo: list[tuple[int, tuple | None]] = [(0, None)]
    while todo:
        i, key = todo.pop()
        node = tree[i]
        if key is None:
            if node.arity == 0:
                values.append(inputs[index[node.value]] if isinstance(node.value, str) else node.value)
                continue
            key = names[i:ends[i]]
            out = known.pop(key, None)
            if out is not None:
                known[key] = out  # (re)inserted last: ``known`` is in order of last use
                values.append(out)
                continue
            todo.append((i, key))
            if node.arity == 2:
                todo.append((ends[i + 1], None))
            todo.append((i + 1, None))
            continue
        fn = operators[node.name].fn
        if node.arity == 1:
            out = fn(values.pop())
        else:
            b = values.pop()
            out = fn(values.pop(), b)
        known[key] = out
        values.append(out)
    return values[0]


_INPUT_INDEX: dict[str, dict[str, int]] = {}


def _input_index(kind: Kind) -> dict[str, int]:
    """Input name -> its position in the kind's inputs (cached per kind)."""
    if kind.name not in _INPUT_INDEX:
        _INPUT_INDEX[kind.name] = {name: i for i, name in enumerate(kind.inputs)}
    return _INPUT_INDEX[kind.name]
