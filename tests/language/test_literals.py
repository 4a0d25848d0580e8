"""Number literals: only finite constants parse, and what parses prints back as the same tree."""
import pytest
import torch

from gp_loss.errors import FormulaError
from gp_loss.language import compile_tree, parse_formula
from gp_loss.language.compile import evaluate_sharing
from gp_loss.language.parse import MAX_INTEGER_CONSTANT
from gp_loss.kinds import kind_spec
from primitives import get_kind

CLS = get_kind("cls")


@pytest.mark.parametrize("literal, position", [
    ("1e400", 7), ("-1e400", 7), ("1.8e308", 7), ("9" * 300, 7), ("-" + "9" * 300, 7), ("9" * 5000, 7),
    (str(MAX_INTEGER_CONSTANT + 1), 7), (str(-MAX_INTEGER_CONSTANT - 1), 7),
])
def test_out_of_range_literals_are_refused_with_their_position(literal, position):
    text = f"mul(x, {literal})"
    with pytest.raises(FormulaError) as info:
        parse_formula(CLS, text)
    message = str(info.value)
    assert "\n" not in message and f"position {position}" in message and "out of range" in message
    assert literal[:20] in message
    assert info.value.position == position


@pytest.mark.parametrize("literal, value", [
    ("1e308", 1e308), ("5e-324", 5e-324), ("1e-400", 0.0), ("0.25", 0.25), ("2", 2), ("+2", 2), ("-0", 0),
    (str(MAX_INTEGER_CONSTANT), MAX_INTEGER_CONSTANT), ("0" * 5000 + "7", 7), ("1" + "0" * 20 + ".0", 1e20),
])
def test_accepted_literals_round_trip(literal, value):
    tree = parse_formula(CLS, f"mul(x, {literal})")
    const = tree[2].value
    assert const == value and type(const) is type(value)
    again = parse_formula(CLS, str(tree))
    assert str(again) == str(tree) and type(again[2].value) is type(const) and again[2].value == const


def test_evaluate_sharing_walks_a_5000_level_tree():
    text = "neg(" * 5001 + "dot(y, log(softmax(x)))" + ")" * 5001
    tree = parse_formula(CLS, text)
    assert tree.height > 5000
    batch = kind_spec("cls").sample_batch()
    inputs = tuple(batch.inputs())
    known = {}
    out = evaluate_sharing(CLS, tree, tuple(n.name for n in tree), inputs, known)
    torch.testing.assert_close(out, compile_tree(CLS, tree).evaluate(inputs))
    assert len(known) == 5004  # every non-leaf subtree, once
