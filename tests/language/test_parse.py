"""Formula text -> typed tree: round trips, errors that name the token, fuzzing."""
import random

import pytest
from deap import gp
from hypothesis import given, settings
from hypothesis import strategies as st

from gp_loss.errors import FormulaError
from gp_loss.language import parse_formula
from gp_loss.language.generate import random_tree
from gp_loss.paper_losses import PAPER_LOSSES
from primitives import KINDS, get_kind
from primitives.types import Const, Elem, Sample


@pytest.mark.parametrize("name", sorted(PAPER_LOSSES))
def test_paper_formulas_round_trip(name):
    p = PAPER_LOSSES[name]
    tree = parse_formula(get_kind(p.kind), p.formula)
    assert str(tree) == p.formula


def test_types_are_resolved():
    tree = parse_formula(get_kind("cls"), "neg(dot(y, log(softmax(x))))")
    assert [n.ret for n in tree] == [Sample, Sample, Elem, Elem, Elem, Elem]
    tree = parse_formula(get_kind("cls"), "add(x, dot(x, y))")  # Sample broadcasts over classes
    assert tree[0].ret is Elem and tree[0].args == [Elem, Sample]


def test_whitespace_and_literals():
    kind = get_kind("reg")
    tree = parse_formula(kind, "  sub( 1 ,div(i,u) )  ")
    assert str(tree) == "sub(1, div(i, u))"
    tree = parse_formula(kind, "mul(-2.5e-1, i)")
    assert tree[1].ret is Const and tree[1].value == -0.25
    assert str(parse_formula(kind, "add(i, 0.1)")) == "add(i, 0.1)"


@pytest.mark.parametrize("kind, text, fragments", [
    ("cls", "", ["empty"]),
    ("cls", "   ", ["empty"]),
    ("cls", "add(x", ["unbalanced", "'add'", "position 0"]),
    ("cls", "add(x, y))", ["unbalanced", "position 9"]),
    ("cls", "foo(x)", ["unknown operator 'foo'", "position 0"]),
    ("cls", "inv(x)", ["unknown operator 'inv'"]),
    ("bcls", "dot(x, y)", ["unknown operator 'dot'", "'bcls'"]),
    ("bcls", "softmax(x)", ["unknown operator 'softmax'"]),
    ("reg", "sigmoid(i)", ["unknown operator 'sigmoid'"]),
    ("cls", "add(x)", ["takes 2 arguments, got 1", "position 0"]),
    ("cls", "neg(x, y)", ["takes 1 argument, got 2"]),
    ("cls", "log()", ["no arguments"]),
    ("cls", "softmax(dot(x, y))", ["type error", "softmax", "position 8", "per-sample"]),
    ("cls", "dot(dot(x, y), y)", ["type error", "dot"]),
    ("cls", "exp(2)", ["constants only"]),
    ("cls", "add(1, 2)", ["constants only"]),
    ("cls", "3", ["only the constant 3", "x, y, w"]),
    ("cls", "i", ["unknown name 'i'", "x, y, w"]),
    ("reg", "sub(1, x)", ["unknown name 'x'", "i, u, e"]),
    ("cls", "x(y)", ["input", "not an operator"]),
    ("cls", "log", ["needs 1 argument", "log(...)"]),
    ("cls", "x y", ["unexpected 'y'", "position 2"]),
    ("cls", "add(x,,y)", ["position 6", "','"]),
    ("cls", "add(x @ y)", ["'@'", "position 6"]),
    ("cls", "add(x y)", ["expected ',' or ')'", "position 6"]),
    ("zero", "mean_nhw(yhat, y)", ["takes 1 argument"]),
])
def test_errors_name_the_problem(kind, text, fragments):
    with pytest.raises(FormulaError) as info:
        parse_formula(get_kind(kind), text)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert "\n" not in message


def test_deep_tree_parses_without_recursion_limit():
    text = "x"
    for _ in range(3000):
        text = f"neg({text})"
    tree = parse_formula(get_kind("cls"), text)
    assert tree.height == 3000


@settings(max_examples=300, deadline=None)
@given(kind=st.sampled_from(sorted(KINDS)),
       text=st.text(alphabet="xyiuewhat()_,.-+0123456789 negdotlogsfmaxbcpqr", max_size=60))
def test_random_text_parses_or_raises_formula_error(kind, text):
    try:
        tree = parse_formula(get_kind(kind), text)
    except FormulaError as err:
        assert str(err)
    else:
        assert isinstance(tree, gp.PrimitiveTree)
        assert str(parse_formula(get_kind(kind), str(tree))) == str(tree)


@settings(max_examples=200, deadline=None)
@given(kind=st.sampled_from(sorted(KINDS)), seed=st.integers(0, 2**32 - 1), depth=st.integers(1, 6))
def test_random_trees_round_trip(kind, seed, depth):
    k = get_kind(kind)
    tree = random_tree(k, depth, random.Random(seed))
    again = parse_formula(k, str(tree))
    assert str(again) == str(tree)
    assert [n.ret for n in again] == [n.ret for n in tree]
