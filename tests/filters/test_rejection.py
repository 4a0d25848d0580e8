import random

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from gp_loss.filters.base import Candidate
from gp_loss.filters.equivalence import DIRECTIONS
from gp_loss.filters.probe_gradient import loss_and_grad
from gp_loss.filters.rejection import DEFAULT_ETA, RejectionStage
from gp_loss.kinds import kind_spec
from gp_loss.language import compile_loss, parse_formula
from gp_loss.language.generate import random_tree_reading
from gp_loss.paper_losses import PAPER_LOSSES
from gp_loss.probes.rejection import B
from primitives import get_kind


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/filters/conftest.py


@pytest.fixture(scope="module")
def stage():
    # One stage for the module: probe samples are built once per kind.
    return RejectionStage(seed=0)


def candidate(kind: str, text: str) -> Candidate:
    k = get_kind(kind)
    return Candidate(k, parse_formula(k, text))


@pytest.mark.parametrize("name", sorted(PAPER_LOSSES))
def test_paper_losses_pass(stage, name):
    p = PAPER_LOSSES[name]
    c = candidate(p.kind, p.formula)
    result = stage(c)
    assert result.passed, result.reason
    assert result.stage == "rejection"
    # Far above the threshold: the default eta is not tuned to the edge.
    assert result.numbers["gain"] > DEFAULT_ETA + 0.3
    assert result.numbers["metric_after"] > result.numbers["metric_before"]
    assert len(c.info["signature"]) == B * (1 + DIRECTIONS)  # B norms, then D direction signs per sample


@pytest.mark.parametrize("kind, formula", [
    ("cls", "dot(y, log(softmax(x)))"),  # negated cross-entropy
    ("reg", "div(i, u)"),  # rewards lower IoU
    ("bcls", "log(sigmoid(x))"),  # ignores the target: ranking unchanged
    ("cls", "mul(2, dot(y, x))"),  # pushes the target logit down
])
def test_bad_losses_rejected(stage, kind, formula):
    result = stage(candidate(kind, formula))
    assert not result.passed
    assert result.numbers["gain"] < DEFAULT_ETA
    assert "metric gain" in result.reason


def test_nan_during_optimisation_rejected(stage):
    # Finite at first; the square root's argument turns negative as the
    # target logit is pushed up.
    result = stage(candidate("cls", "sqrt(sub(2, dot(y, x)))"))
    assert not result.passed
    assert "nan" in result.reason and "step" in result.reason


def test_nan_at_start_rejected(stage):
    result = stage(candidate("reg", "sqrt(neg(i))"))
    assert not result.passed
    assert "nan" in result.reason


def test_raising_candidate_rejected_with_reason(stage):
    c = candidate("cls", "neg(dot(y, log(softmax(x))))")

    def broken(*inputs):
        raise RuntimeError("boom")

    c.loss = broken
    result = stage(c)
    assert not result.passed
    assert "RuntimeError" in result.reason and "boom" in result.reason


def test_non_scalar_loss_rejected(stage):
    c = candidate("reg", "sub(1, div(i, u))")
    c.loss = lambda i, u, e: 1 - i / u  # unreduced: one value per box
    result = stage(c)
    assert not result.passed
    assert "scalar" in result.reason


def test_deterministic_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = RejectionStage(seed=3)(candidate("bcls", PAPER_LOSSES["bce"].formula))
    b = RejectionStage(seed=3)(candidate("bcls", PAPER_LOSSES["bce"].formula))
    assert torch.equal(torch.rand(3), expected)
    assert a.numbers == b.numbers


def test_rescaled_loss_judged_alike(stage):
    # Adam's step ignores the scale of the loss.
    a = stage(candidate("cls", "neg(dot(y, log(softmax(x))))"))
    b = stage(candidate("cls", "mul(3, neg(dot(y, log(softmax(x)))))"))
    assert a.numbers["gain"] == pytest.approx(b.numbers["gain"])


def samples(kind: str):
    return kind_spec(kind).rejection_probe().make_samples(0)


@pytest.mark.parametrize("kind", ["cls", "bcls", "reg"])
def test_merged_rows_give_each_sample_its_own_gradient(kind):
    # A compiled loss is evaluated once on the B samples' merged rows; row b of the
    # gradient must be that of sample b's own loss.
    k = get_kind(kind)
    formula = next(p.formula for p in PAPER_LOSSES.values() if p.kind == kind)
    loss = Candidate(k, parse_formula(k, formula)).loss
    s = samples(kind)
    total, merged = loss_and_grad(s, loss, s.prediction)
    p = s.prediction.detach().requires_grad_()
    inputs = s.make_inputs(p)
    own = [loss(*(t[b] for t in inputs)) for b in range(B)]
    (separate,) = torch.autograd.grad(sum(own), p)
    assert torch.allclose(merged, separate, rtol=1e-5, atol=1e-9)
    assert total.item() == pytest.approx(sum(own).item(), rel=1e-5)


@pytest.mark.parametrize("kind", ["cls", "bcls", "reg"])
def test_raw_output_gradient_equals_the_reduced_loss_gradient(kind):
    # loss_and_grad differentiates a compiled loss's raw output with the reduction's factor as
    # upstream gradient; a plain callable goes through autograd, one sample at a time.
    k = get_kind(kind)
    s = samples(kind)
    rng = random.Random(1)
    compared = 0
    for _ in range(60):
        loss = Candidate(k, random_tree_reading(k, 3, rng, k.prediction)).loss
        try:
            plain = loss_and_grad(s, lambda *inputs: loss(*inputs), s.prediction)
        except ValueError:
            with pytest.raises(ValueError):
                loss_and_grad(s, loss, s.prediction)
            continue
        total, grad = loss_and_grad(s, loss, s.prediction)
        assert torch.allclose(total, plain[0], rtol=1e-5, equal_nan=True)
        assert torch.allclose(grad, plain[1], rtol=1e-5, atol=1e-7, equal_nan=True)
        compared += 1
    assert compared > 40


def test_a_tasks_normaliser_is_differentiated_sample_by_sample():
    # A normaliser that is not a per-row mean (here: a fixed foreground count) must not be
    # evaluated on the merged rows: the total is the sum of each sample's own loss.
    k = get_kind("bcls")
    tree = parse_formula(k, PAPER_LOSSES["bce"].formula)
    s = samples("bcls")
    per_foreground = compile_loss(k, tree, normaliser=lambda o: o.sum() / 4)
    total, grad = loss_and_grad(s, per_foreground, s.prediction)
    _, default_grad = loss_and_grad(s, compile_loss(k, tree), s.prediction)
    n = s.prediction.shape[1]  # the kind's reduction divides each sample by its N rows
    assert torch.allclose(grad * 4, default_grad * n, rtol=1e-5, atol=1e-9)
    inputs = s.make_inputs(s.prediction)
    expected = sum(per_foreground(*(t[b] for t in inputs)) for b in range(B))
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("kind", ["cls", "bcls", "reg", "zero"])
def test_probe_shapes(kind):
    s = samples(kind)
    assert s.kind_name == kind and s.size == B
    inputs = s.make_inputs(s.prediction)
    assert len(inputs) == len(get_kind(kind).inputs)
    assert all(t.shape[0] == B for t in inputs)
    m = s.metric(s.prediction)
    assert m.shape == (B,) and bool(((m >= 0) & (m <= 1)).all())
