"""AutoLoss-Zero's typed mutations (Li et al., CVPR 2022, section 3.2 and Fig. 3) and offspring rule.

- insertion: a random operator is put between a node and its parent; its other
  operands are random inputs (or constants);
- deletion: an operator node is removed and one of its children takes its place;
- replacement: an operator node gets another operator; children are kept where
  their types fit its arguments, and missing arguments become random inputs.

All of them keep the tree well typed, so the result always compiles. Offspring:
copy the parent with probability 10%, otherwise re-initialise with 50%,
otherwise apply two mutations drawn uniformly from the three. All randomness
comes from the ``random.Random`` passed in.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from deap import gp

from primitives import Kind
from primitives.types import Const, Elem, Sample, Tensor

from gp_loss.language.generate import leaf, random_subtree, random_tree


def fits(ret: type, slot: type) -> bool:
    """Can a node returning ``ret`` stand where ``slot`` is required?"""
    return ret is slot or (slot is Tensor and issubclass(ret, Tensor))


def slot_types(tree: gp.PrimitiveTree) -> list[type]:
    """The type each node's position requires (the root's is ``Tensor``)."""
    slots: list[type] = [Tensor] * len(tree)
    stack: list[list] = []  # [node, next argument index]
    for i, node in enumerate(tree):
        if stack:
            parent, k = stack[-1]
            slots[i] = parent.args[k]
            stack[-1][1] += 1
        if isinstance(node, gp.Primitive):
            stack.append([node, 0])
        while stack and stack[-1][1] == stack[-1][0].arity:
            stack.pop()
    return slots


def _leaf_subtree(kind: Kind, type_: type, rng: random.Random) -> list:
    # A Sample has no leaf: the smallest subtree making one is dot(input, input).
    if type_ is Sample:
        return random_subtree(kind, Sample, 1, rng)
    return [leaf(kind, Elem if type_ is Tensor else type_, rng)]


def insertion(kind: Kind, tree: gp.PrimitiveTree, rng: random.Random) -> gp.PrimitiveTree | None:
    # Constants are operands only: nothing can be inserted above one.
    i = rng.choice([k for k, n in enumerate(tree) if n.ret is not Const])
    node_type, slot = tree[i].ret, slot_types(tree)[i]
    options = [p for ps in kind.overloads.values() for p in ps
               if fits(p.ret, slot) and node_type in p.args]
    if not options:
        return None
    prim = rng.choice(options)
    keep = rng.choice([k for k, a in enumerate(prim.args) if a is node_type])
    sub = tree[tree.searchSubtree(i)]
    new = [prim]
    for k, arg in enumerate(prim.args):
        new += sub if k == keep else _leaf_subtree(kind, arg, rng)
    return gp.PrimitiveTree(tree[:i] + new + tree[tree.searchSubtree(i).stop:])


def _children(tree: gp.PrimitiveTree, i: int) -> list[slice]:
    out, j = [], i + 1
    for _ in range(tree[i].arity):
        s = tree.searchSubtree(j)
        out.append(s)
        j = s.stop
    return out


def deletion(kind: Kind, tree: gp.PrimitiveTree, rng: random.Random) -> gp.PrimitiveTree | None:
    slots = slot_types(tree)
    ops = [i for i, n in enumerate(tree) if isinstance(n, gp.Primitive)]
    rng.shuffle(ops)
    for i in ops:
        children = [s for s in _children(tree, i) if fits(tree[s.start].ret, slots[i])]
        if children:
            s = rng.choice(children)
            return gp.PrimitiveTree(tree[:i] + tree[s] + tree[tree.searchSubtree(i).stop:])
    return None


def replacement(kind: Kind, tree: gp.PrimitiveTree, rng: random.Random) -> gp.PrimitiveTree | None:
    ops = [i for i, n in enumerate(tree) if isinstance(n, gp.Primitive)]
    if not ops:
        return None
    i = rng.choice(ops)
    slot = slot_types(tree)[i]
    name = rng.choice(sorted(kind.overloads))
    options = [p for p in kind.overloads[name] if fits(p.ret, slot)]
    if not options:
        return None
    prim = rng.choice(options)
    children = _children(tree, i)
    rng.shuffle(children)
    new = [prim]
    for arg in prim.args:
        match = next((s for s in children if tree[s.start].ret is arg), None)
        if match is not None:
            children.remove(match)
            new += tree[match]
        else:
            new += _leaf_subtree(kind, arg, rng)
    return gp.PrimitiveTree(tree[:i] + new + tree[tree.searchSubtree(i).stop:])


MUTATIONS = {"insertion": insertion, "deletion": deletion, "replacement": replacement}


@dataclass(frozen=True)
class OffspringConfig:
    """AutoLoss-Zero's offspring probabilities and the tree size limits."""

    p_copy: float = 0.1
    p_reinit: float = 0.5
    n_mutations: int = 2
    init_depth: int = 3
    max_height: int = 12
    max_size: int = 60


def mutate(kind: Kind, tree: gp.PrimitiveTree, rng: random.Random, name: str | None = None) -> gp.PrimitiveTree:
    """One mutation (``name`` or a uniform draw); the tree itself if none applies."""
    fn = MUTATIONS[name] if name else MUTATIONS[rng.choice(sorted(MUTATIONS))]
    return fn(kind, tree, rng) or tree


def make_offspring(kind: Kind, parent: gp.PrimitiveTree, rng: random.Random,
                   config: OffspringConfig = OffspringConfig()) -> gp.PrimitiveTree:
    """A child of ``parent`` by copy, re-initialisation or two mutations (within size limits)."""
    r = rng.random()
    if r < config.p_copy:
        return gp.PrimitiveTree(list(parent))
    if rng.random() < config.p_reinit:
        return random_tree(kind, config.init_depth, rng)
    for _ in range(10):  # retry mutations that would grow the tree past its limits
        child = parent
        for _ in range(config.n_mutations):
            child = mutate(kind, child, rng)
        if child.height <= config.max_height and len(child) <= config.max_size:
            return child
    return random_tree(kind, config.init_depth, rng)
