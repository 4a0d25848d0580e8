"""Typed mutations always give well-typed trees, and do what their names say."""
import random

import pytest
from deap import gp

from gp_loss.evolution.mutation import (
    OffspringConfig, deletion, insertion, make_offspring, replacement, slot_types,
)
from gp_loss.language import parse_formula
from gp_loss.language.generate import random_tree
from primitives import KINDS, get_kind
from primitives.types import Elem, Sample, Tensor


def _reparses(kind, tree):
    return str(parse_formula(kind, str(tree))) == str(tree)


@pytest.mark.parametrize("kind_name", sorted(KINDS))
@pytest.mark.parametrize("mutation", [insertion, deletion, replacement])
def test_mutations_keep_trees_well_typed(kind_name, mutation):
    kind = get_kind(kind_name)
    rng = random.Random(7)
    for _ in range(150):
        tree = random_tree(kind, rng.randint(1, 4), rng)
        child = mutation(kind, tree, rng)
        if child is not None:
            assert _reparses(kind, child)


def test_insertion_grows_and_deletion_shrinks():
    kind = get_kind("reg")
    tree = parse_formula(kind, "sub(1, div(i, u))")
    rng = random.Random(0)
    for _ in range(20):
        assert len(insertion(kind, tree, rng)) > len(tree)
        smaller = deletion(kind, tree, rng)
        assert len(smaller) < len(tree) and _reparses(kind, smaller)


def test_replacement_keeps_size_when_arity_matches():
    kind = get_kind("zero")
    tree = parse_formula(kind, "neg(yhat)")
    rng = random.Random(3)
    seen = {str(replacement(kind, tree, rng)) for _ in range(60)}
    assert "abs(yhat)" in seen and "tanh(yhat)" in seen


def test_slot_types():
    kind = get_kind("cls")
    tree = parse_formula(kind, "add(x, dot(y, softmax(x)))")
    # add(Elem, Sample) at the root: x fills an Elem slot, dot a Sample slot.
    assert slot_types(tree) == [Tensor, Elem, Sample, Elem, Elem, Elem]


def test_offspring_probabilities_and_limits():
    kind = get_kind("cls")
    parent = parse_formula(kind, "neg(dot(y, log(softmax(x))))")
    rng = random.Random(11)
    cfg = OffspringConfig(max_height=6, max_size=20)
    children = [make_offspring(kind, parent, rng, cfg) for _ in range(400)]
    copies = sum(str(c) == str(parent) for c in children)
    assert 20 <= copies <= 80  # about 10% plus mutations that happen to restore the parent
    assert all(c.height <= 6 and len(c) <= 20 for c in children)
    assert all(isinstance(c, gp.PrimitiveTree) for c in children)


def test_same_seed_same_offspring():
    kind = get_kind("bcls")
    parent = random_tree(kind, 3, random.Random(1))
    a = [str(make_offspring(kind, parent, random.Random(5))) for _ in range(3)]
    b = [str(make_offspring(kind, parent, random.Random(5))) for _ in range(3)]
    assert a == b
