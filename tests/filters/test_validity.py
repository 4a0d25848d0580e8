import pytest

from gp_loss.filters import check_validity
from gp_loss.language import parse_formula
from gp_loss.paper_losses import PAPER_LOSSES
from primitives import get_kind


@pytest.mark.parametrize("name", sorted(PAPER_LOSSES))
def test_paper_losses_are_valid(name):
    p = PAPER_LOSSES[name]
    kind = get_kind(p.kind)
    result = check_validity(kind, parse_formula(kind, p.formula))
    assert result.passed, result.reason
    assert result.numbers["grad_norm"] > 0


@pytest.mark.parametrize("kind, formula, reason", [
    ("cls", "neg(dot(x, log(softmax(x))))", "does not depend on the target"),
    ("cls", "neg(dot(y, log(softmax(y))))", "does not depend on the prediction"),
    ("bcls", "log(x)", "nan"),
    ("reg", "sqrt(neg(i))", "nan"),
    ("reg", "div(1, sub(i, i))", "not finite"),
])
def test_bad_losses_are_rejected_with_reason(kind, formula, reason):
    k = get_kind(kind)
    result = check_validity(k, parse_formula(k, formula))
    assert not result.passed
    assert reason in result.reason


def test_tree_without_prediction_leaf_rejected_before_tensor_work_even_when_copied():
    import copy

    from primitives import get_kind

    from gp_loss.filters.base import Candidate
    from gp_loss.filters.validity import ValidityStage
    from gp_loss.language.parse import parse_formula

    kind = get_kind("cls")
    stage = ValidityStage()
    no_x = stage(Candidate(kind, parse_formula(kind, "dot(y, log(softmax(w)))")))
    assert not no_x.passed and no_x.reason == "loss does not depend on the prediction" and no_x.numbers == {}
    ce = copy.deepcopy(parse_formula(kind, "neg(dot(y, log(softmax(x))))"))  # as DEAP's HallOfFame copies
    assert stage(Candidate(kind, ce)).passed
