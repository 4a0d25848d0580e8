import random

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from gp_loss.filters.base import Candidate
from gp_loss.filters.rejection import DEFAULT_ETA, RejectionStage
from gp_loss.filters.rejection_tasks import (
    B, RejectionSamples, average_precision, default_task, mean_iou,
)
from gp_loss.language import parse_formula
from gp_loss.language.generate import random_tree_reading
from gp_loss.paper_losses import PAPER_LOSSES
from primitives import get_kind


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/filters/conftest.py


@pytest.fixture(scope="module")
def stage():
    # One stage for the module: task samples are built once per kind.
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
    assert len(c.info["signature"]) == B


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


def test_merged_batch_equals_per_sample_losses():
    # The merged evaluation of cls/bcls/reg must give each sample its own gradient.
    kind = get_kind("reg")
    loss = Candidate(kind, parse_formula(kind, PAPER_LOSSES["giou"].formula)).loss
    s = default_task("reg").make_samples(0)
    _, merged = s.loss_and_grad(loss, s.prediction)
    looped = RejectionSamples(s.kind_name, s.prediction, s.make_inputs, s.metric_fn, s.lr,
                              mixes_batch=True)
    _, separate = looped.loss_and_grad(loss, s.prediction)
    assert torch.allclose(merged, separate, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("kind", ["cls", "bcls", "reg"])
def test_raw_output_gradient_equals_the_reduced_loss_gradient(kind):
    # loss_and_grad differentiates a compiled loss's raw output with the reduction's factor as
    # upstream gradient; a plain callable goes through autograd of the scalar total.
    k = get_kind(kind)
    s = default_task(kind).make_samples(0)
    rng = random.Random(1)
    compared = 0
    for _ in range(60):
        loss = Candidate(k, random_tree_reading(k, 3, rng, k.prediction)).loss
        try:
            plain = s.loss_and_grad(lambda *inputs: loss(*inputs), s.prediction)
        except ValueError:
            with pytest.raises(ValueError):
                s.loss_and_grad(loss, s.prediction)
            continue
        total, grad = s.loss_and_grad(loss, s.prediction)
        assert torch.allclose(total, plain[0], rtol=1e-5, equal_nan=True)
        assert torch.allclose(grad, plain[1], rtol=1e-5, atol=1e-7, equal_nan=True)
        compared += 1
    assert compared > 40


@pytest.mark.parametrize("kind", ["cls", "bcls", "reg", "zero"])
def test_task_shapes(kind):
    s = default_task(kind).make_samples(0)
    assert s.kind_name == kind and s.size == B
    inputs = s.make_inputs(s.prediction)
    assert len(inputs) == len(get_kind(kind).inputs)
    assert all(t.shape[0] == B for t in inputs)
    m = s.metric(s.prediction)
    assert m.shape == (B,) and bool(((m >= 0) & (m <= 1)).all())


def test_fast_average_precision_matches_sklearn():
    rng = np.random.default_rng(0)
    for trial in range(20):
        m = int(rng.integers(5, 200))
        targets = (rng.random((4, m)) < rng.uniform(0.05, 0.5)).astype(np.float32)
        targets[:, 0] = 1  # at least one positive per row
        scores = rng.normal(size=(4, m)).astype(np.float32)
        if trial % 2:
            scores = np.round(scores, 1)  # many ties
        ours = average_precision(torch.from_numpy(scores), torch.from_numpy(targets))
        expected = [average_precision_score(targets[r], scores[r]) for r in range(4)]
        np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_mean_iou():
    labels = torch.tensor([[[[0, 1], [2, 2]]]])  # B=1, N=1, 2×2
    perfect = torch.nn.functional.one_hot(labels, 3).permute(0, 1, 4, 2, 3).float()
    assert mean_iou(perfect, labels, 3).item() == pytest.approx(1.0)
    all_two = torch.zeros(1, 1, 3, 2, 2)
    all_two[:, :, 2] = 1
    # Class 2: IoU 2/4; classes 0 and 1 present in the target only: IoU 0.
    assert mean_iou(all_two, labels, 3).item() == pytest.approx((0 + 0 + 0.5) / 3)
