import random
from collections import Counter

import pytest
from scipy.stats import chi2_contingency

from gp_loss.language import parse_formula
from gp_loss.language.generate import _ReadingSampler, random_tree, random_tree_reading
from primitives import KINDS, get_kind
from primitives.types import Tensor


def _computational_depths(tree):
    """The number of computational nodes on each root-to-leaf path (constants excluded)."""
    depths, stack = [], [0]
    for node in tree:
        here = stack.pop()
        if node.arity == 0:
            if isinstance(node.value, str):
                depths.append(here)
            continue
        stack.extend([here + 1] * node.arity)
    return depths


def _reads(kind, tree, input_name):
    return kind.input_terminals[input_name].name in [node.name for node in tree]


@pytest.mark.parametrize("kind_name", sorted(KINDS))
@pytest.mark.parametrize("depth", [1, 3])
def test_random_trees_have_the_depth_on_every_path(kind_name, depth):
    kind, rng = get_kind(kind_name), random.Random(2)
    for draw in (lambda: random_tree(kind, depth, rng),
                 lambda: random_tree_reading(kind, depth, rng, kind.prediction)):
        for _ in range(100):
            tree = draw()
            assert set(_computational_depths(tree)) == {depth}
            assert str(parse_formula(kind, str(tree))) == str(tree)


@pytest.mark.parametrize("kind_name", sorted(KINDS))
def test_trees_reading_an_input_always_read_it(kind_name):
    kind, rng = get_kind(kind_name), random.Random(4)
    for input_name in kind.inputs:
        assert all(_reads(kind, random_tree_reading(kind, 3, rng, input_name), input_name) for _ in range(300))


def test_same_seed_same_tree():
    kind = get_kind("cls")
    a = [str(random_tree_reading(kind, 3, random.Random(s), "x")) for s in range(20)]
    assert a == [str(random_tree_reading(kind, 3, random.Random(s), "x")) for s in range(20)]
    assert len(set(a)) > 15


def _drawn_until_reading(kind, depth, rng, input_name):
    while True:
        tree = random_tree(kind, depth, rng)
        if _reads(kind, tree, input_name):
            return tree


@pytest.mark.parametrize("kind_name, depth", [("cls", 1), ("cls", 3), ("zero", 2), ("reg", 2)])
def test_same_distribution_as_drawing_until_a_tree_reads_the_input(kind_name, depth):
    """Chi-square two-sample tests against the loop the sampler replaces: on whole formulas
    (categories seen at least 20 times), on the root operator and on the tree size. With
    these seeds the smallest p-value is above 0.05; a biased sampler gives p far below 1e-3."""
    kind = get_kind(kind_name)
    n = 6000
    loop_rng, sampler_rng = random.Random(10), random.Random(20)
    looped = [_drawn_until_reading(kind, depth, loop_rng, kind.prediction) for _ in range(n)]
    sampled = [random_tree_reading(kind, depth, sampler_rng, kind.prediction) for _ in range(n)]
    for feature in (str, lambda t: t[0].name, len):
        a, b = Counter(map(feature, looped)), Counter(map(feature, sampled))
        categories = [c for c in set(a) | set(b) if a[c] + b[c] >= 20]
        if len(categories) < 2:
            continue
        _, p, _, _ = chi2_contingency([[a[c] for c in categories], [b[c] for c in categories]])
        assert p > 1e-3, (feature, p)


def test_probability_of_lacking_the_input_matches_random_trees():
    kind = get_kind("cls")
    q = _ReadingSampler.of(kind, "x").q(Tensor, 3)
    rng = random.Random(5)
    n = 20000
    lacking = sum(not _reads(kind, random_tree(kind, 3, rng), "x") for _ in range(n)) / n
    assert abs(lacking - q) < 4 * (q * (1 - q) / n) ** 0.5  # four standard errors
    assert 0.4 < q < 0.5


def test_unknown_input_and_bad_depth_are_refused():
    kind = get_kind("cls")
    with pytest.raises(ValueError, match="no input 'yhat'"):
        random_tree_reading(kind, 3, random.Random(0), "yhat")
    with pytest.raises(ValueError, match="depth"):
        random_tree_reading(kind, 0, random.Random(0), "x")
