"""Compiled trees: values, autograd, devices, height, and DEAP-generated trees."""
import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gp_loss.kinds import kind_spec
from gp_loss.language import compile_loss, compile_tree, parse_formula
from gp_loss.language.compile import evaluate_sharing
from gp_loss.language.generate import random_tree
from primitives import KINDS, get_kind


def test_500_level_tree_compiles_and_runs():
    kind = get_kind("cls")
    text = "neg(dot(y, log(softmax(x))))"
    for i in range(249):
        text = f"neg(neg({text}))" if i % 2 else f"mul(1, add({text}, 0))"
    tree = parse_formula(kind, text)
    assert tree.height >= 500
    batch = kind_spec("cls").sample_batch()
    value = compile_loss(kind, tree)(*batch.inputs())
    ref = torch.nn.functional.cross_entropy(batch.prediction, batch.target)
    torch.testing.assert_close(value, ref)
    value.backward()
    assert torch.isfinite(batch.prediction.grad).all()


def test_sample_values_broadcast_over_classes():
    kind = get_kind("cls")
    x = torch.randn(4, 3)
    y = torch.eye(3)[[0, 1, 2, 0]]
    out = compile_tree(kind, parse_formula(kind, "add(x, dot(x, y))"))(x, y, y)
    torch.testing.assert_close(out, x + (x * y).sum(1, keepdim=True))


def test_wrong_number_of_inputs_is_a_clear_error():
    kind = get_kind("reg")
    f = compile_tree(kind, parse_formula(kind, "sub(1, div(i, u))"))
    with pytest.raises(TypeError, match="expected 3 inputs"):
        f(torch.ones(2))


@settings(max_examples=150, deadline=None)
@given(kind=st.sampled_from(sorted(KINDS)), seed=st.integers(0, 2**32 - 1), depth=st.integers(1, 5))
def test_random_trees_run_to_a_scalar(kind, seed, depth):
    k = get_kind(kind)
    tree = random_tree(k, depth, random.Random(seed))
    batch = kind_spec(kind).sample_batch(seed=seed % 7)
    value = compile_loss(k, tree)(*batch.inputs())
    assert value.dim() == 0  # NaN/Inf are allowed here: the filters reject them


@settings(max_examples=150, deadline=None)
@given(kind=st.sampled_from(sorted(KINDS)), seed=st.integers(0, 2**32 - 1), depth=st.integers(1, 5))
def test_compiled_text_and_inputs_match_the_tree(kind, seed, depth):
    # The compiled tree builds its text in its own pass; it must be DEAP's text exactly
    # (the filter memo and the formulas the search stores are keyed by it).
    k = get_kind(kind)
    tree = random_tree(k, depth, random.Random(seed))
    f = compile_tree(k, tree)
    assert f.text == str(tree)
    assert f.inputs_used == {n.value for n in tree if n.arity == 0 and n.value in k.inputs}


def test_compiled_text_of_parsed_formulas_with_constants():
    kind = get_kind("reg")
    for text, inputs in [("sub(1, div(i, u))", {"i", "u"}), ("mul(0.5, neg(e))", {"e"}),
                         ("add(sub(1, div(i, u)), div(sub(e, u), e))", {"i", "u", "e"})]:
        tree = parse_formula(kind, text)
        f = compile_tree(kind, tree)
        assert f.text == str(tree) == text
        assert f.inputs_used == inputs


def _names(tree):
    return tuple(node.name for node in tree)


def test_evaluate_sharing_shares_known_subtree_outputs():
    kind = get_kind("cls")
    batch = kind_spec("cls").sample_batch()
    inputs = tuple(t.detach() for t in batch.inputs())
    known = {}
    tree = parse_formula(kind, "neg(dot(y, log(softmax(x))))")
    out = evaluate_sharing(kind, tree, _names(tree), inputs, known)
    torch.testing.assert_close(out, compile_tree(kind, tree)(*inputs), rtol=0, atol=0)
    # Every computed subtree is kept, keyed by its node names (leaves are not).
    subtrees = ["softmax(x)", "log(softmax(x))", "dot(y, log(softmax(x)))", "neg(dot(y, log(softmax(x))))"]
    assert set(known) == {_names(parse_formula(kind, f)) for f in subtrees}
    # A known subtree is taken as given, not computed again.
    log_softmax = _names(parse_formula(kind, "log(softmax(x))"))
    known[log_softmax] = torch.zeros_like(known[log_softmax])
    other = parse_formula(kind, "dot(w, log(softmax(x)))")
    assert (evaluate_sharing(kind, other, _names(other), inputs, known) == 0).all()
    # Binary operators take their arguments in order.
    diff = parse_formula(kind, "sub(x, mul(y, 2))")
    torch.testing.assert_close(evaluate_sharing(kind, diff, _names(diff), inputs, {}),
                               inputs[0] - inputs[1] * 2, rtol=0, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_tensors():
    kind = get_kind("cls")
    batch = kind_spec("cls").sample_batch(device="cuda")
    value = compile_loss(kind, parse_formula(kind, "neg(dot(y, log(softmax(x))))"))(*batch.inputs())
    assert value.device.type == "cuda"
    value.backward()


def test_default_normaliser_is_the_kinds_reduction():
    kind = get_kind("reg")
    loss = compile_loss(kind, parse_formula(kind, "sub(1, div(i, u))"))
    assert loss.normaliser is kind_spec("reg").reduction
    i, u, e = kind_spec("reg").sample_batch().inputs()
    torch.testing.assert_close(loss(i, u, e), (1 - i / (u + 1e-20)).mean(), rtol=0, atol=0)


def test_a_tasks_normaliser_reduces_the_raw_output():
    # A detector normalises by its foreground count, not by the kind's N.
    kind = get_kind("bcls")
    batch = kind_spec("bcls").sample_batch()
    num_foreground = 3
    loss = compile_loss(kind, parse_formula(kind, "neg(mul(y, log(sigmoid(x))))"),
                        normaliser=lambda o: o.sum() / num_foreground)
    raw = loss.raw(*batch.inputs())
    assert raw.shape == batch.prediction.shape  # the raw output stays readable
    torch.testing.assert_close(loss(*batch.inputs()), raw.sum() / num_foreground, rtol=0, atol=0)
    default = compile_loss(kind, parse_formula(kind, "neg(mul(y, log(sigmoid(x))))"))
    torch.testing.assert_close(loss(*batch.inputs()) * num_foreground,
                               default(*batch.inputs()) * batch.prediction.shape[0])
