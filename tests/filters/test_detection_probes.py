"""The default filters on detection-shaped probes: the paper's detection losses (``bcls``, ``reg``) pass
every stage, and detection losses that are broken where a detector's inputs differ from a classifier's
(background anchors, IoU weights at their floor, boxes that miss or are hundreds of pixels) are rejected,
by the stage and for the reason that says why."""
import pytest
import torch

from gp_loss.cli import main
from gp_loss.filters.base import Candidate
from gp_loss.filters.numeric_range import RangeStage
from gp_loss.filters.pipeline import FilterPipeline, default_stages
from gp_loss.filters.validity import ValidityStage
from gp_loss.kinds import kind_spec
from gp_loss.language import parse_formula
from gp_loss.paper_losses import PAPER_LOSSES
from primitives import get_kind

DETECTION_LOSSES = sorted(n for n, p in PAPER_LOSSES.items() if p.kind in ("bcls", "reg"))
BCE_POSITIVE = "mul(y, softplus(neg(x)))"  # -log sigmoid(x) at the target class


def _cand(kind, formula):
    k = get_kind(kind)
    return Candidate(k, parse_formula(k, formula))


@pytest.fixture(scope="module")
def pipeline(one_thread):
    return FilterPipeline(default_stages())


def test_the_detection_losses_are_all_there():
    assert DETECTION_LOSSES == sorted(["bce", "sigmoid_focal", "cse_autoloss_b_cls", "iou", "giou",
                                       "neg_log_iou", "cse_autoloss_a_reg", "cse_autoloss_b_reg"])


@pytest.mark.parametrize("name", DETECTION_LOSSES)
def test_paper_detection_losses_pass_the_default_pipeline(pipeline, name):
    p = PAPER_LOSSES[name]
    verdict = pipeline.run(_cand(p.kind, p.formula))
    assert verdict.passed, verdict.rejection
    assert [r.stage for r in verdict.results] == [s.name for s in pipeline.stages]


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("name", DETECTION_LOSSES)
def test_paper_detection_losses_are_valid_and_in_range_for_other_seeds(name, seed):
    p = PAPER_LOSSES[name]
    for stage in (ValidityStage(seed=seed), RangeStage(seed=seed)):
        result = stage(_cand(p.kind, p.formula))
        assert result.passed, (stage.name, result.reason)


def test_gp_loss_check_passes_the_detection_losses(capsys):
    argv = ["check"] + [f"{n}:{PAPER_LOSSES[n].kind}={PAPER_LOSSES[n].formula}" for n in DETECTION_LOSSES]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.strip().endswith("passed") and "REJECT" not in out


@pytest.mark.parametrize("kind, formula, stage, reason", [
    # IoU itself: rewards less overlap
    ("reg", "div(i, u)", "convergence", "not lowest at perfect overlap"),
    # pushes background logits up, and ignores positives
    ("bcls", "neg(mul(sub(1, y), x))", "convergence", "does not decrease towards the target (positive"),
    # right on positives, pushes background logits up
    ("bcls", f"sub({BCE_POSITIVE}, mul(sub(1, y), x))", "convergence",
     "does not decrease towards the target (negative, w=0)"),
    # e^x on background: fine at the prior, about e^50 for a confident false positive
    ("bcls", f"add({BCE_POSITIVE}, mul(sub(1, y), exp(x)))", "range",
     "loss reaches"),
    # divides by the IoU weight: 1e7 times the loss of an anchor whose box misses its object (w = 1e-7)
    ("bcls", f"add(div({BCE_POSITIVE}, w), mul(sub(1, y), softplus(x)))", "range",
     "at the sample prediction in fp32"),
    # 1/IoU: 1e20 times the union where the box misses its target
    ("reg", "div(u, i)", "convergence", "does not grow"),
    # 1 - sqrt(IoU) and log(u/i) (-log IoU rewritten): NaN gradients where the box misses its target
    ("reg", "sub(1, sqrt(div(i, u)))", "validity", "gradient with respect to the prediction is not finite"),
    ("reg", "log(div(u, i))", "validity", "gradient with respect to the prediction is not finite"),
    # raw areas: blind to small boxes next to large ones
    ("reg", "sub(u, mul(2, i))", "convergence", "does not grow"),
])
def test_broken_detection_losses_are_rejected_with_reason(pipeline, kind, formula, stage, reason):
    verdict = pipeline.run(_cand(kind, formula))
    assert not verdict.passed
    assert verdict.rejection.stage == stage and reason in verdict.rejection.reason, verdict.rejection


def test_the_range_stage_rejects_confident_false_positives_blowing_up():
    result = RangeStage()(_cand("bcls", f"add({BCE_POSITIVE}, mul(sub(1, y), exp(x)))"))
    assert not result.passed and result.reason.endswith("at the confident prediction in fp32")
    assert result.numbers["loss"] > 1e15


def test_the_range_stage_rejects_a_loss_that_is_1e20_where_boxes_miss():
    # The convergence stage rejects it first in the default order; on its own, the range stage says
    # why it could never be trained: 1e20 times the union on the pairs that do not overlap.
    result = RangeStage()(_cand("reg", "div(u, i)"))
    assert not result.passed and result.reason.startswith("loss reaches")
    assert result.reason.endswith("at the sample prediction in fp32") and result.numbers["loss"] > 1e20
    validity = ValidityStage()(_cand("reg", "div(u, i)"))
    assert not validity.passed and "gradient with respect to the prediction is not finite" in validity.reason


def test_the_range_stage_rejects_raw_areas_of_large_boxes():
    result = RangeStage()(_cand("reg", "sub(u, mul(2, i))"))
    assert not result.passed and result.reason.startswith("loss reaches")
    assert result.numbers["loss"] > 1e4


def test_nan_gradients_come_from_the_boxes_that_miss():
    batch = kind_spec("reg").sample_batch()
    candidate = _cand("reg", "sub(1, sqrt(div(i, u)))")
    i, u, e = batch.inputs()
    (grad,) = torch.autograd.grad(candidate.program(i, u, e).sum(), batch.prediction)
    bad = ~torch.isfinite(grad).all(1)
    assert bad.any() and torch.equal(bad, i.detach() == 0)
