"""The numerical-range stage: paper losses pass; losses that explode off the target, when the model
is confident, or in bf16 are rejected with their reason; the bound is the search's setting."""
import pytest
import torch

from gp_loss.evolution.config import SearchConfig
from gp_loss.evolution.worker import breeding_stage_names
from gp_loss.filters.base import Candidate
from gp_loss.filters.numeric_range import RangeStage
from gp_loss.language import parse_formula
from gp_loss.paper_losses import PAPER_LOSSES
from primitives import get_kind


def _judge(kind, formula, **options):
    k = get_kind(kind)
    return RangeStage(**options)(Candidate(k, parse_formula(k, formula)))


@pytest.mark.parametrize("name", sorted(PAPER_LOSSES))
def test_every_paper_loss_passes_with_room_to_spare(name):
    loss = PAPER_LOSSES[name]
    result = _judge(loss.kind, loss.formula)
    assert result.passed, result.reason
    # Far inside the default bound (1e4): the bound rejects blow-ups, not ordinary scales.
    assert 0 < result.numbers["loss"] < 1e3 and 0 < result.numbers["grad"] < 1e2


def test_dividing_by_the_one_hot_target_is_rejected():
    # A loss that can top a search without this stage: it divides by the one-hot target, so it is
    # huge off the target class.
    result = _judge("cls", "div(div(sub(w, neg(y)), mul(2, softmax(add(3, neg(x))))), y)")
    assert not result.passed
    assert "loss reaches" in result.reason and "at the sample prediction in fp32" in result.reason
    assert result.numbers["loss"] > 1e20


def test_a_loss_that_explodes_once_the_model_is_confident_is_rejected():
    # exp(-x) at the target: moderate for sample logits, about e**40 for confident ones.
    formula = "dot(y, exp(neg(x)))"
    assert _judge("cls", formula, bound=1e30).passed
    result = _judge("cls", formula)
    assert not result.passed and "at the confident prediction" in result.reason


def test_a_steep_gradient_is_rejected_even_with_a_small_loss():
    # sin(1e5 x) at the target: within [-1, 1], with a gradient of up to 1e5
    result = _judge("cls", "dot(y, sin(mul(100000, x)))")
    assert not result.passed and result.reason.startswith("gradient reaches")
    assert result.numbers["loss"] <= 1


def test_the_bound_is_configurable():
    formula = "neg(dot(y, mul(1000, log(softmax(x)))))"  # 1000 x CE: up to about 4.6e4
    assert not _judge("cls", formula).passed
    assert _judge("cls", formula, bound=1e6).passed
    with pytest.raises(ValueError, match="positive"):
        RangeStage(bound=0)


def test_non_finite_only_in_bf16_is_rejected():
    kind = get_kind("cls")
    ce = PAPER_LOSSES["ce"].formula
    candidate = Candidate(kind, parse_formula(kind, ce))
    real = candidate.program
    seen = []

    def program(x, y, w):
        seen.append(x.dtype)
        out = real(x, y, w)
        return out * float("inf") if x.dtype == torch.bfloat16 else out

    candidate.program = program
    result = RangeStage()(candidate)
    assert not result.passed and result.reason == "loss is not finite at the sample prediction in bf16"
    assert seen == [torch.float32, torch.bfloat16]


def test_an_exception_in_the_loss_is_its_rejection():
    kind = get_kind("cls")
    candidate = Candidate(kind, parse_formula(kind, PAPER_LOSSES["ce"].formula))

    def program(*inputs):
        raise RuntimeError("shape mismatch")

    candidate.program = program
    result = RangeStage()(candidate)
    assert not result.passed and result.reason == "RuntimeError: shape mismatch"


def test_the_search_breeds_through_the_stage_unless_switched_off():
    assert "range" in breeding_stage_names(SearchConfig())
    assert "range" not in breeding_stage_names(SearchConfig(range_bound=None))
    with pytest.raises(Exception, match="range_bound must be positive"):
        SearchConfig(range_bound=-1.0).check()
