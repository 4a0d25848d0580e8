"""The ``zero`` kind's probe samples are evaluated stacked (B×N×C×H×W) in one call.

:func:`~gp_loss.filters.probe_gradient.loss_and_grad` evaluates the B samples of
a kind with :attr:`~gp_loss.kinds.KindSpec.stacks_samples` in one call on the
stacked inputs. These tests hold it to the reference, one call per sample
(:func:`~gp_loss.filters.probe_gradient.per_sample_loss_and_grad`): same loss,
gradient, gradient-equivalence signature, verdicts and reasons, up to float
rounding, on many random trees (with ``mean_nhw``, ``mean_c`` and the pools)
and on the paper losses; and stacking never lets one sample see another.
"""
import math
import random
import re

import pytest
import torch

import gp_loss.filters.equivalence as equivalence_module
import gp_loss.filters.rejection as rejection_module
from gp_loss.filters.base import Candidate
from gp_loss.filters.equivalence import DIRECTIONS, EquivalenceStage, fixed_directions, signature_of_gradient
from gp_loss.filters.probe_gradient import (
    _merged_raw_loss_and_grad, loss_and_grad, per_sample_loss_and_grad,
)
from gp_loss.filters.rejection import RejectionStage
from gp_loss.kinds import KIND_SPECS, kind_spec
from gp_loss.language import compile_loss, parse_formula
from gp_loss.language.generate import random_tree, random_tree_reading
from gp_loss.paper_losses import PAPER_LOSSES
from gp_loss.probes.rejection import B
from primitives import get_kind

ZERO = get_kind("zero")
AGGREGATIONS = ("mean_nhw", "mean_c", "maxpool3x3", "minpool3x3")
ZERO_PAPER = [name for name, p in PAPER_LOSSES.items() if p.kind == "zero"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    yield


@pytest.fixture(scope="module")
def samples():
    return kind_spec("zero").rejection_probe().make_samples(0)


def _paper_trees():
    return [parse_formula(ZERO, PAPER_LOSSES[name].formula) for name in ZERO_PAPER]


def _random_trees(count: int, seed: int) -> list:
    """Random zero trees that read the prediction, depths 2 to 5, and some with every aggregation."""
    rng = random.Random(seed)
    trees = [random_tree_reading(ZERO, rng.choice([2, 3, 3, 4, 5]), rng, "yhat") for _ in range(count)]
    # Each aggregation around a random subtree and around a paper loss, so all are surely covered.
    for op in AGGREGATIONS:
        for _ in range(5):
            inner = str(random_tree_reading(ZERO, rng.choice([2, 3]), rng, "yhat"))
            trees.append(parse_formula(ZERO, f"mul(y, {op}({inner}))"))
        trees.append(parse_formula(ZERO, f"{op}({PAPER_LOSSES['seg_ce'].formula})"))
    return trees


def _near_rounding(a: float, b: float) -> bool:
    """Whether two norms, equal up to float rounding, may round to different 2-significant-digit values."""
    return math.isclose(a, b, rel_tol=1e-4) or not (math.isfinite(a) and math.isfinite(b))


def _assert_same_signature(grad_a: torch.Tensor, grad_b: torch.Tensor) -> None:
    """Equal signatures, or differences that float rounding explains: a norm on a rounding
    boundary, or a projection within rounding of zero."""
    sig_a, sig_b = signature_of_gradient(grad_a), signature_of_gradient(grad_b)
    if sig_a == sig_b:
        return
    flat_a = grad_a.reshape(B, -1).double()
    flat_b = grad_b.reshape(B, -1).double()
    for i in range(B):
        if sig_a[i] != sig_b[i]:
            assert _near_rounding(flat_a[i].norm().item(), flat_b[i].norm().item()), (sig_a, sig_b)
    proj_a = flat_a.nan_to_num(0.0) @ fixed_directions(flat_a.shape[1])
    proj_b = flat_b.nan_to_num(0.0) @ fixed_directions(flat_b.shape[1])
    differ = torch.tensor(sig_a[B:]) != torch.tensor(sig_b[B:])
    scale = flat_a.nan_to_num(0.0).norm(dim=1, keepdim=True).expand(B, DIRECTIONS).flatten()
    assert bool(((proj_a - proj_b).flatten().abs()[differ] <= 1e-4 * scale[differ] + 1e-30).all()), (sig_a, sig_b)


def _outcome(fn, samples, loss):
    try:
        return fn(samples, loss, samples.prediction), None
    except Exception as err:  # compared with the other path's
        return None, f"{type(err).__name__}: {err}"


def test_zero_is_the_kind_that_stacks_samples():
    assert kind_spec("zero").stacks_samples
    assert not any(KIND_SPECS[k].stacks_samples for k in ("cls", "bcls", "reg"))


def test_stacked_loss_and_gradient_equal_the_per_sample_path(samples):
    trees = _paper_trees() + _random_trees(300, seed=11)
    compared, raised, exact = 0, 0, 0
    seen_ops: set[str] = set()
    for tree in trees:
        loss = Candidate(ZERO, tree).loss
        stacked, stacked_err = _outcome(loss_and_grad, samples, loss)
        reference, reference_err = _outcome(per_sample_loss_and_grad, samples, loss)
        assert stacked_err == reference_err, str(tree)
        if reference is None:
            raised += 1
            continue
        (total, grad), (ref_total, ref_grad) = stacked, reference
        assert grad.shape == ref_grad.shape == samples.prediction.shape
        assert torch.allclose(total, ref_total, rtol=1e-5, atol=1e-7, equal_nan=True), str(tree)
        assert torch.allclose(grad, ref_grad, rtol=1e-4, atol=1e-7, equal_nan=True), str(tree)
        _assert_same_signature(grad, ref_grad)
        exact += torch.equal(total, ref_total) and torch.equal(grad, ref_grad)
        compared += 1
        seen_ops.update(node.name for node in tree if node.name in AGGREGATIONS)
    assert compared > 250 and seen_ops == set(AGGREGATIONS)
    assert exact > 0  # (many trees agree to the bit)


@pytest.mark.parametrize("name", ZERO_PAPER)
def test_paper_losses_stacked_equal_per_sample(samples, name):
    loss = Candidate(ZERO, parse_formula(ZERO, PAPER_LOSSES[name].formula)).loss
    total, grad = loss_and_grad(samples, loss, samples.prediction)
    ref_total, ref_grad = per_sample_loss_and_grad(samples, loss, samples.prediction)
    assert total.item() == pytest.approx(ref_total.item(), rel=1e-6)
    assert torch.allclose(grad, ref_grad, rtol=1e-5, atol=1e-9)
    assert signature_of_gradient(grad) == signature_of_gradient(ref_grad)


def _masked(reason: str) -> str:
    """A reason with its numbers replaced by ``#`` (they are compared up to rounding)."""
    return re.sub(r"[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?|nan|inf", "#", reason)


def test_verdicts_reasons_and_signatures_equal_the_per_sample_path(monkeypatch):
    """RejectionStage and EquivalenceStage with the stacked path and with one call per sample."""
    rng = random.Random(5)
    trees = _paper_trees() + [random_tree(ZERO, 3, rng) for _ in range(40)] + _random_trees(25, seed=12)

    def judge_all():
        rejection, equivalence = RejectionStage(seed=0), EquivalenceStage(seed=0)
        out = []
        for tree in trees:
            c = Candidate(ZERO, tree)
            r = rejection(c)
            fresh = Candidate(ZERO, tree)
            eq = equivalence(fresh)  # a signature of its own, computed by the stage
            out.append((r, c.info.get("signature"), eq, fresh.info.get("signature")))
        return out

    stacked = judge_all()
    monkeypatch.setattr(rejection_module, "loss_and_grad", per_sample_loss_and_grad)
    monkeypatch.setattr(equivalence_module, "loss_and_grad", per_sample_loss_and_grad)
    reference = judge_all()
    passed = 0
    for tree, (r, sig, eq, eq_sig), (ref_r, ref_sig, ref_eq, ref_eq_sig) in zip(trees, stacked, reference):
        assert r.passed == ref_r.passed, (str(tree), r.reason, ref_r.reason)
        assert _masked(r.reason) == _masked(ref_r.reason), str(tree)
        assert r.numbers.keys() == ref_r.numbers.keys()
        for key, value in r.numbers.items():
            assert value == pytest.approx(ref_r.numbers[key], rel=1e-3, abs=1e-4, nan_ok=True), (str(tree), key)
        assert sig == ref_sig and eq_sig == ref_eq_sig, str(tree)
        assert eq.passed and eq.reason == ref_eq.reason
        passed += r.passed
    assert passed >= len(ZERO_PAPER)  # (the paper losses pass, so both outcomes are exercised)
    assert passed < len(trees)


def test_each_sample_is_seen_alone(samples):
    """With mean_nhw (Dice's sums over the batch), a sample's loss and gradient do not change
    when another sample's prediction does: stacking never mixes samples."""
    loss = Candidate(ZERO, parse_formula(ZERO, PAPER_LOSSES["seg_dice"].formula)).loss
    prediction = samples.prediction
    changed = prediction.clone()
    changed[3] = torch.randn(changed[3].shape, generator=torch.Generator().manual_seed(1)) * 5
    _, grad = loss_and_grad(samples, loss, prediction)
    _, grad_changed = loss_and_grad(samples, loss, changed)
    # The raw output of sample b on the stack, and sample b's loss alone.
    raw = loss.raw(*samples.make_inputs(prediction))
    raw_changed = loss.raw(*samples.make_inputs(changed))
    alone = [loss(*(t[b] for t in samples.make_inputs(prediction))) for b in range(B)]
    scale = loss.normaliser.scale(tuple(raw.shape[1:]))
    for b in range(B):
        if b == 3:
            assert not torch.equal(raw[b], raw_changed[b]) and not torch.equal(grad[b], grad_changed[b])
            continue
        assert torch.equal(raw[b], raw_changed[b])
        assert torch.equal(grad[b], grad_changed[b])
        assert (raw[b].sum() * scale).item() == pytest.approx(alone[b].item(), rel=1e-6)
    # The test has teeth: merging the samples into rows would mix them.
    _, merged = _merged_raw_loss_and_grad(samples, loss, prediction)
    _, merged_changed = _merged_raw_loss_and_grad(samples, loss, changed)
    assert not torch.equal(merged[0], merged_changed[0])


def test_a_tasks_normaliser_stays_per_sample(samples):
    # A normaliser that is not a Reduction: one call per sample, exactly as before.
    tree = parse_formula(ZERO, PAPER_LOSSES["seg_dice"].formula)
    loss = compile_loss(ZERO, tree, normaliser=lambda o: o.sum() / 7)
    total, grad = loss_and_grad(samples, loss, samples.prediction)
    ref_total, ref_grad = per_sample_loss_and_grad(samples, loss, samples.prediction)
    assert torch.equal(total, ref_total) and torch.equal(grad, ref_grad)
    inputs = samples.make_inputs(samples.prediction)
    expected = sum(loss(*(t[b] for t in inputs)) for b in range(B))
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)


def test_a_loss_ignoring_the_prediction_is_rejected_alike(samples):
    loss = Candidate(ZERO, parse_formula(ZERO, "mean_nhw(y)")).loss
    for fn in (loss_and_grad, per_sample_loss_and_grad):
        with pytest.raises(ValueError, match="does not depend on the prediction"):
            fn(samples, loss, samples.prediction)
