import pytest
import torch

from gp_loss.filters.base import Candidate
from gp_loss.filters.simulation import SimulationStage
from gp_loss.language import parse_formula
from gp_loss.paper_losses import PAPER_LOSSES
from primitives import get_kind

# One stage per seed, shared: each builds its problems (data, untrained model) once.
_STAGES: dict[int, SimulationStage] = {}


def stage(seed: int = 0) -> SimulationStage:
    if seed not in _STAGES:
        _STAGES[seed] = SimulationStage(seed=seed)
    return _STAGES[seed]


def candidate(kind: str, formula: str) -> Candidate:
    k = get_kind(kind)
    return Candidate(k, parse_formula(k, formula))


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("name", sorted(PAPER_LOSSES))
def test_paper_losses_improve_the_metric(name, seed):
    p = PAPER_LOSSES[name]
    result = stage(seed)(candidate(p.kind, p.formula))
    assert result.passed, result.reason
    n = result.numbers
    assert n["metric_after"] > max(n["metric_before"], n["metric_chance"])
    assert n["steps_run"] == stage(seed).steps[p.kind]
    assert torch.isfinite(torch.tensor(n["final_loss"]))


@pytest.mark.parametrize("kind, formula", [
    ("cls", "dot(y, log(softmax(x)))"),  # negated CE: pushes the true class down
    ("reg", "div(i, u)"),  # minimising IoU
    ("bcls", "log(sigmoid(x))"),  # pushes every logit down, ignores the target
    ("bcls", "mul(y, log(sigmoid(x)))"),  # pushes the true class down
    ("zero", "mul(y, yhat)"),  # pushes the true class's score down
])
def test_bad_losses_do_not_improve(kind, formula):
    result = stage()(candidate(kind, formula))
    assert not result.passed
    assert "did not improve" in result.reason
    assert result.numbers["metric_after"] <= result.numbers["metric_before"] + 1e-6 \
        or result.numbers["metric_after"] <= result.numbers["metric_chance"] + 1e-6


def test_loss_turning_nan_is_rejected_at_its_step():
    # Finite at the start (p_y < 0.5), NaN once training pushes p_y past 0.5.
    c = candidate("cls", "dot(y, log(sub(0.5, softmax(x))))")
    result = stage()(c)
    assert not result.passed
    assert "nan at step" in result.reason
    step = result.numbers["nan_step"]
    assert 0 < step < stage().steps["cls"]
    assert result.numbers["steps_run"] == step
    assert f"step {int(step)}" in result.reason


def test_exception_in_the_loss_is_a_rejection():
    c = candidate("cls", "neg(dot(y, log(softmax(x))))")

    def broken(*inputs):
        raise RuntimeError("boom")

    c.loss = broken
    result = stage()(c)
    assert not result.passed
    assert "RuntimeError: boom" in result.reason


def test_non_scalar_loss_is_rejected():
    c = candidate("cls", "neg(dot(y, log(softmax(x))))")
    c.loss = lambda x, y, w: x
    result = stage()(c)
    assert not result.passed
    assert "not a scalar" in result.reason


def test_time_limit():
    p = PAPER_LOSSES["ce"]
    result = SimulationStage(time_limit=0.0)(candidate(p.kind, p.formula))
    assert not result.passed and result.timed_out
    assert "time limit" in result.reason and result.reason.startswith("too slow")


def test_deterministic_and_leaves_global_state_alone():
    p = PAPER_LOSSES["bce"]
    torch.manual_seed(123)
    state, threads = torch.get_rng_state(), torch.get_num_threads()
    a = SimulationStage(seed=3)(candidate(p.kind, p.formula))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.get_num_threads() == threads
    b = SimulationStage(seed=3)(candidate(p.kind, p.formula))
    assert a.numbers == b.numbers
    assert a.passed and b.passed


def test_settings_per_kind():
    s = SimulationStage(steps={"bcls": 5}, lr=0.1)
    assert s.steps["bcls"] == 5 and s.steps["cls"] == SimulationStage().steps["cls"]
    assert set(s.lr.values()) == {0.1}
    p = PAPER_LOSSES["bce"]
    assert s(candidate(p.kind, p.formula)).numbers["steps_run"] == 5
