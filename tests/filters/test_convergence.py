import random

import pytest
import torch

from gp_loss.filters.base import Candidate
from gp_loss.filters.convergence import ConvergenceStage
from gp_loss.language import parse_formula
from gp_loss.language.generate import random_tree
from gp_loss.paper_losses import PAPER_LOSSES
from primitives import get_kind

STAGE = ConvergenceStage()  # sweeps are cached per instance; share one across tests


def candidate(kind: str, formula: str) -> Candidate:
    k = get_kind(kind)
    return Candidate(k, parse_formula(k, formula))


@pytest.mark.parametrize("name", sorted(PAPER_LOSSES))
def test_paper_losses_pass(name):
    p = PAPER_LOSSES[name]
    result = STAGE(candidate(p.kind, p.formula))
    assert result.stage == "convergence"
    assert result.passed, f"{name}: {result.reason} {result.numbers}"


def test_label_smoothing_converges_to_a_finite_optimum():
    # Its minimum lies inside the sweep (softmax = 0.92), where the gradient vanishes smoothly.
    result = STAGE(candidate("cls", PAPER_LOSSES["label_smoothing_ce"].formula))
    assert result.passed
    assert 0 < result.numbers["kink_ratio"] < 0.5


@pytest.mark.parametrize("kind, formula, reason", [
    # negated cross-entropy: rises as the true class wins
    ("cls", "dot(y, log(softmax(x)))", "does not decrease towards the target"),
    # oscillates along the sweep
    ("cls", "neg(dot(y, sin(x)))", ""),
    # -cos(p) rises with p: lowest at the wrong end
    ("cls", "neg(dot(y, cos(softmax(x))))", "does not decrease towards the target"),
    # linear in the logit: never converges
    ("cls", "neg(dot(y, x))", "gradient does not vanish at convergence"),
    # V-shaped around a correct logit: the gradient does not vanish at the minimum
    ("cls", "dot(y, abs(sub(x, 3)))", "kink"),
    # blind to the target: rewards every logit for rising, so a wrong class rising too
    ("cls", "erfc(neg(sub(w, x)))", "class 1 logit falling"),
    # negated binary cross-entropy and its positive half
    ("bcls", "add(mul(y, log(sigmoid(x))), mul(sub(1, y), log(sub(1, sigmoid(x)))))",
     "does not decrease towards the target"),
    ("bcls", "mul(y, log(sigmoid(x)))", "does not decrease towards the target"),
    # ignores negatives entirely
    ("bcls", "mul(y, softplus(neg(x)))", "negative"),
    # IoU itself: rewards lower IoU
    ("reg", "div(i, u)", "not lowest at perfect overlap"),
    # blind to shrinking predictions (the enclosing box stays the target)
    ("reg", "e", "does not grow"),
])
def test_bad_losses_are_rejected_with_reason(kind, formula, reason):
    result = STAGE(candidate(kind, formula))
    assert not result.passed
    assert result.reason
    assert reason in result.reason


@pytest.mark.parametrize("kind, formula", [
    ("reg", "log(neg(i))"),
    ("bcls", "log(neg(sigmoid(x)))"),
    ("cls", "sqrt(neg(softplus(x)))"),
])
def test_nan_candidates_are_rejected_without_raising(kind, formula):
    result = STAGE(candidate(kind, formula))
    assert not result.passed
    assert "not finite" in result.reason
    assert result.numbers["nonfinite"] > 0


class _RaisingProgram:
    """A compiled tree that fails while evaluating."""

    def evaluate(self, inputs, known=None):
        raise KeyError("mean_c")


class _RaisingCandidate(Candidate):
    """A candidate that reads the prediction and whose program fails."""

    @property
    def program(self):
        return _RaisingProgram()


def test_exception_inside_candidate_is_a_rejection(monkeypatch):
    k = get_kind("cls")
    c = _RaisingCandidate(k, parse_formula(k, "neg(dot(y, log(softmax(x))))"))
    result = ConvergenceStage(memo_size=0)(c)  # evaluates the compiled program
    assert not result.passed
    assert result.reason.startswith("KeyError")

    def raising(*args):
        raise KeyError("mean_c")

    # With shared subtree outputs the tree is evaluated without compiling it.
    monkeypatch.setattr("gp_loss.filters.convergence.evaluate_sharing", raising)
    result = ConvergenceStage()(c)
    assert not result.passed and result.reason.startswith("KeyError")


def test_zero_kind_passes_through():
    result = STAGE(candidate("zero", PAPER_LOSSES["zero_ce"].formula))
    assert result.passed
    assert result.reason == "no convergence check for kind zero"


def test_numbers_are_reported_and_deterministic():
    ce = candidate("cls", PAPER_LOSSES["ce"].formula)
    a, b = STAGE(ce), ConvergenceStage()(ce)
    assert a.numbers == b.numbers
    assert set(a.numbers) == {"violation_frac", "grad_ratio", "kink_ratio", "min_decrease"}
    assert a.numbers["violation_frac"] == 0 and a.numbers["grad_ratio"] < 0.05
    giou = STAGE(candidate("reg", PAPER_LOSSES["giou"].formula))
    assert giou.numbers["spearman"] <= -0.9
    assert giou.numbers["violation_frac"] == 0


def test_tolerances_are_configurable():
    # The slope of CE at the end of the sweep is ~0.2% of its largest value.
    strict = ConvergenceStage(grad_ratio_tol=1e-4)
    result = strict(candidate("cls", PAPER_LOSSES["ce"].formula))
    assert not result.passed and "gradient does not vanish" in result.reason


def test_leaves_torch_threads_alone():
    threads = torch.get_num_threads()
    for p in PAPER_LOSSES.values():
        STAGE(candidate(p.kind, p.formula))
    assert torch.get_num_threads() == threads


class _ClaimsPrediction(Candidate):
    """A candidate that claims to read the prediction, so the stage runs its full check."""

    @property
    def inputs_used(self):
        return super().inputs_used | {"x"}


@pytest.mark.parametrize("kind", ["cls", "bcls"])
def test_trees_without_the_prediction_are_rejected_as_the_full_check_would(kind):
    k, rng = get_kind(kind), random.Random(3)
    trees = [random_tree(k, 3, rng) for _ in range(300)]
    blind = [Candidate(k, t) for t in trees if "x" not in {n.value for n in t if n.arity == 0}]
    assert len(blind) > 50
    for c in blind:
        short = STAGE(c)
        assert not short.passed and short.reason.startswith("loss is constant along every sweep")
        full = STAGE(_ClaimsPrediction(k, c.tree))
        assert not full.passed and not full.reason.startswith(("loss is constant", "AttributeError"))


@pytest.mark.parametrize("kind", ["cls", "bcls", "reg"])
def test_shared_subtree_outputs_change_no_result(kind):
    k, rng = get_kind(kind), random.Random(5)
    trees = [random_tree(k, 3, rng) for _ in range(200)]
    shared, alone = ConvergenceStage(memo_size=64), ConvergenceStage(memo_size=0)
    for t in trees:
        a, b = shared(Candidate(k, t)), alone(Candidate(k, t))
        assert (a.passed, a.reason, a.numbers) == (b.passed, b.reason, b.numbers)
    assert 0 < len(shared.memo(kind)) <= 64 + 20 and not alone.memo(kind)


@pytest.mark.parametrize("kind", ["cls", "bcls", "reg"])
def test_judging_many_at_once_gives_each_ones_own_verdict(kind):
    k, rng = get_kind(kind), random.Random(9)
    # random trees (most rejected for varied reasons, some blind to the prediction) and the
    # paper losses of this kind (which pass), shuffled together
    trees = [random_tree(k, 3, rng) for _ in range(300)]
    trees += [parse_formula(k, p.formula) for p in PAPER_LOSSES.values() if p.kind == kind]
    rng.shuffle(trees)
    one_by_one = [ConvergenceStage()(Candidate(k, t)) for t in trees]
    together = ConvergenceStage().judge_many([Candidate(k, t) for t in trees])
    assert [(r.passed, r.reason, r.numbers) for r in together] == \
           [(r.passed, r.reason, r.numbers) for r in one_by_one]
    assert any(r.passed for r in together) and len({r.reason for r in together}) >= 4
    assert all(r.seconds >= 0 and r.stage == "convergence" for r in together)
