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

from gp_loss.language.reduction import reduce_output

_INPUT, _CONST, _CALL = 0, 1, 2


class CompiledTree:
    """A tree as a postfix program; calling it returns the raw output tensor.

    ``f(*inputs)`` takes the kind's inputs in order (``x, y, w`` / ``i, u, e`` /
    ``yhat, y``) and returns the output o before reduction: N×C (``Sample``
    values N×1) for ``cls``/``bcls``, N for ``reg``, N×C×H×W for ``zero``.
    Works on any device; autograd flows through.
    """

    __slots__ = ("program", "n_inputs", "text")

    def __init__(self, kind: Kind, tree: gp.PrimitiveTree):
        index = {name: i for i, name in enumerate(kind.inputs)}
        program = []
        for node in reversed(tree):
            if isinstance(node, gp.Primitive):
                program.append((_CALL, kind.operators[node.name].fn, node.arity))
            elif isinstance(node.value, str):
                program.append((_INPUT, index[node.value], 0))
            else:
                program.append((_CONST, node.value, 0))
        self.program = program
        self.n_inputs = len(kind.inputs)
        self.text = str(tree)

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
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


def compile_loss(kind: Kind, tree: gp.PrimitiveTree) -> Callable[..., torch.Tensor]:
    """Compile ``tree`` to ``loss(*inputs) -> scalar`` with the kind's reduction."""
    raw = CompiledTree(kind, tree)
    name = kind.name

    def loss(*inputs: torch.Tensor) -> torch.Tensor:
        return reduce_output(name, raw(*inputs))

    loss.__doc__ = f"{name} loss: {raw.text}"
    return loss


def evaluate(kind: Kind, tree: gp.PrimitiveTree, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
    """Compile and evaluate the reduced loss once."""
    return compile_loss(kind, tree)(*inputs)
