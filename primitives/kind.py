"""A :class:`Kind` of loss branch: its inputs, operators and typed DEAP primitive set.

Typing rules (every tree the search can build is valid by construction):
- inputs are :class:`Elem` tensors with the branch's input shape;
- unary operators map ``T -> T`` for each tensor type of the kind, except the
  class-wise ``softmax`` which needs an ``Elem`` (a class dimension);
- ``dot`` maps ``(Elem, Elem) -> Sample`` (one value per sample);
- binary element-wise operators take two tensors (a ``Sample`` broadcasts over
  the classes of an ``Elem``), or a tensor and a :class:`Const`; never two
  constants, so no subtree is constant;
- the tree's root has type :class:`Tensor`, which ``Elem`` and ``Sample`` are
  subclasses of, and which ``Const`` is not.

One operator name may have several typed overloads. DEAP allows that when all
overloads share one Python function, which they do here. DEAP's ``mapping``
keeps only one overload per name, so gp-loss resolves names itself
(:attr:`Kind.overloads`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import product

from deap import gp

from primitives.operator import BINARY, DOT, UNARY_ANY, UNARY_CLASSWISE, Operator
from primitives.types import Const, Elem, Sample, Tensor


@dataclass
class Kind:
    """A kind of loss branch (``cls``, ``bcls``, ``reg``, ``zero``)."""

    name: str
    description: str
    inputs: tuple[str, ...]  # argument order of the branch function
    input_docs: dict[str, str]  # input name -> meaning and shape
    prediction: str  # the input that carries the network's prediction
    operators: dict[str, Operator]
    search_constants: tuple[int, ...]
    pset: gp.PrimitiveSetTyped = field(repr=False)
    overloads: dict[str, list[gp.Primitive]] = field(repr=False)
    input_terminals: dict[str, gp.Terminal] = field(repr=False)
    constant_terminals: dict[int, gp.Terminal] = field(repr=False)
    tensor_types: tuple[type, ...] = (Elem,)  # (Elem, Sample) where dot exists

    def operator_of(self, primitive: gp.Primitive) -> Operator:
        """The :class:`Operator` behind a primitive node of this kind's trees."""
        return self.operators[primitive.name]


def _signatures(op: Operator, tensor_types: tuple[type, ...]) -> list[tuple[tuple[type, ...], type]]:
    """All typed overloads ``(argument types, return type)`` of an operator."""
    if op.signature == UNARY_ANY:
        return [((t,), t) for t in tensor_types]
    if op.signature == UNARY_CLASSWISE:
        return [((Elem,), Elem)]
    if op.signature == DOT:
        return [((Elem, Elem), Sample)]
    assert op.signature == BINARY, op.signature
    result = []
    for a, b in product(tensor_types + (Const,), repeat=2):
        if a is Const and b is Const:
            continue
        # Elem wins over Sample (Sample broadcasts); a constant takes the other's type.
        ret = Elem if Elem in (a, b) else Sample
        result.append(((a, b), ret))
    return result


def build_kind(
    name: str,
    description: str,
    inputs: dict[str, str],
    prediction: str,
    operators: dict[str, Operator],
    search_constants: tuple[int, ...],
) -> Kind:
    """Build a kind and its DEAP ``PrimitiveSetTyped``.

    ``inputs`` maps input names, in argument order, to their documentation.
    """
    has_dot = any(op.signature == DOT for op in operators.values())
    tensor_types = (Elem, Sample) if has_dot else (Elem,)
    pset = gp.PrimitiveSetTyped(name, [Elem] * len(inputs), Tensor)
    pset.renameArguments(**{f"ARG{i}": n for i, n in enumerate(inputs)})
    overloads: dict[str, list[gp.Primitive]] = {}
    for op in operators.values():
        for in_types, ret in _signatures(op, tensor_types):
            pset.addPrimitive(op.fn, list(in_types), ret, name=op.name)
            overloads.setdefault(op.name, []).append(pset.primitives[ret][-1])
    constant_terminals = {}
    for value in search_constants:
        pset.addTerminal(value, Const)
        constant_terminals[value] = pset.terminals[Const][-1]
    input_terminals = {t.value: t for t in pset.terminals[Elem]}
    # The root type Tensor is abstract: list what may stand at the root so that
    # DEAP's own generators and mutations can use the set too.
    pset.primitives[Tensor] = [p for t in tensor_types for p in pset.primitives[t]]
    pset.terminals[Tensor] = list(pset.terminals[Elem])
    return Kind(
        name=name, description=description, inputs=tuple(inputs), input_docs=dict(inputs),
        prediction=prediction, operators=dict(operators), search_constants=tuple(search_constants),
        pset=pset, overloads=overloads, input_terminals=input_terminals,
        constant_terminals=constant_terminals, tensor_types=tensor_types,
    )
