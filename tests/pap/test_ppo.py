"""ppo_maximize: climbs a smooth function, is a function of its seed whatever the map, resumes exactly,
survives failed evaluations, samples and scores the truncated normal correctly, checks its input."""
import concurrent.futures
import json
import math

import numpy as np
import pytest
import torch

from gp_loss.errors import GpLossError
from gp_loss.pap.ppo import (PPOConfig, ppo_maximize, ppo_update, round_generator, truncated_normal_log_prob,
                             truncated_normal_sample)
from gp_loss.runtime.backend import Backend
from gp_loss.runtime.checkpoint import save_checkpoint

FAST = PPOConfig(rounds=15, samples=8, updates=30, seed=0)


def _target(dim):
    return np.random.default_rng(0).uniform(0.2, 0.8, dim)


class Paraboloid:
    """reward = 1 − ||θ − θ*||²: smooth, maximum 1 at θ*."""

    def __init__(self, dim):
        self.target = _target(dim)

    def __call__(self, theta):
        return 1.0 - float(np.sum((np.asarray(theta) - self.target) ** 2))


def _thetas(result):
    return [h["theta"] for h in result.history]


def _mean_rewards(result):
    return [r["mean_reward"] for r in result.rounds]


# -- the search finds the top -------------------------------------------------------------


def test_the_mean_reward_climbs_and_the_best_comes_close_to_the_optimum_in_5_dimensions():
    f = Paraboloid(5)
    result = ppo_maximize(f, 5, PPOConfig(rounds=20, samples=8, updates=40, seed=1))
    rewards = _mean_rewards(result)
    assert result.rounds_done == 20 == len(rewards) and result.stopped == "budget"
    assert len(result.history) == 20 * 8
    assert np.mean(rewards[-3:]) > np.mean(rewards[:3]) + 0.2
    start = np.linalg.norm(f.target - 0.5)  # 0.47
    assert np.linalg.norm(np.asarray(result.best_theta) - f.target) < 0.1
    assert np.linalg.norm(np.asarray(result.mean) - f.target) < 0.25 * start
    assert result.best_reward == max(h["reward"] for h in result.history) > 0.98
    assert result.best_x == result.best_theta and result.best_value == result.best_reward


def test_the_mean_moves_towards_the_optimum_in_41_dimensions():
    # PAP's size: 5 curves of 8 control coordinates and a gradient scale.
    f = Paraboloid(41)
    result = ppo_maximize(f, 41, FAST)
    rewards = _mean_rewards(result)
    assert np.mean(rewards[-3:]) > np.mean(rewards[:3]) + 1.0  # about -1.5 -> 0.2
    start = np.linalg.norm(f.target - 0.5)  # 1.15
    assert np.linalg.norm(np.asarray(result.mean) - f.target) < 0.9 * start
    assert f(result.mean) > f([0.5] * 41) + 0.3  # the mean itself got better, not only σ smaller


@pytest.mark.slow
def test_the_official_settings_come_close_in_41_dimensions():
    f = Paraboloid(41)
    result = ppo_maximize(f, 41, PPOConfig())
    start = np.linalg.norm(f.target - 0.5)
    assert np.linalg.norm(np.asarray(result.best_theta) - f.target) < 0.65 * start
    assert np.mean(_mean_rewards(result)[-3:]) > 0.45


def test_the_policy_starts_at_the_initial_mean_and_sigma_is_annealed():
    initial = [0.2, 0.25, 0.3333, 0.5]
    result = ppo_maximize(sum, 4, PPOConfig(rounds=4, samples=4, updates=5, sigma_start=0.2, sigma_end=0.05),
                          initial=initial)
    assert result.rounds[0]["mean"] == pytest.approx(initial, abs=1e-12)
    assert [r["sigma"] for r in result.rounds] == pytest.approx([0.2, 0.15, 0.1, 0.05])


def test_the_default_schedules_are_the_official_ones():
    config = PPOConfig()
    assert (config.rounds, config.samples, config.clip, config.lr, config.updates) == (40, 8, 0.1, 0.01, 100)
    # σ_t = 0.2 (1 − t/40) for the 40 rounds; the update after the last round keeps the last σ.
    assert [config.sigma(t) for t in range(40)] == pytest.approx([0.2 * (1 - t / 40) for t in range(40)])
    assert config.sigma(40) == config.sigma(39)
    # The policy's learning rate: 0 at the first update, up to 1 at the 30th, down to 1/70 at the 100th.
    assert [config.lr_factor(s) for s in (0, 15, 30, 65, 99)] == pytest.approx([0, 0.5, 1, 0.5, 1 / 70])


# -- determinism, the map ------------------------------------------------------------------


def test_a_run_is_a_function_of_its_seed():
    f = Paraboloid(3)
    config = PPOConfig(rounds=4, samples=5, updates=10, seed=7)
    a = ppo_maximize(f, 3, config)
    b = ppo_maximize(f, 3, config)
    c = ppo_maximize(f, 3, PPOConfig(rounds=4, samples=5, updates=10, seed=8))
    assert a.history == b.history and a.mean == b.mean and a.best_theta == b.best_theta
    assert _thetas(a) != _thetas(c)
    assert round_generator(7, 2).initial_seed() != round_generator(8, 2).initial_seed()


class OutOfOrderMapper(Backend):
    """A backend whose jobs finish last-submitted-first: asynchrony without processes, deterministic."""

    name = "fake"
    needs_pickle = False  # the jobs run in this process

    def __init__(self, workers):
        self.workers = workers
        self.jobs = {}
        self.most_in_flight = 0

    def submit(self, fn, *args):
        future = concurrent.futures.Future()
        self.jobs[future] = (fn, args)
        self.most_in_flight = max(self.most_in_flight, len(self.jobs))
        return future

    def map(self, fn, items):
        raise AssertionError("only submit and wait_first are used")

    def wait_first(self, pending, timeout=None):
        future = list(self.jobs)[-1]
        fn, args = self.jobs.pop(future)
        future.set_result(fn(*args))
        return {future}, set(pending) - {future}


def test_results_arriving_out_of_order_give_the_serial_run():
    f = Paraboloid(4)
    config = PPOConfig(rounds=5, samples=6, updates=10, seed=2)
    serial = ppo_maximize(f, 4, config)
    mapper = OutOfOrderMapper(workers=4)
    parallel = ppo_maximize(f, 4, config, mapper=mapper)
    assert mapper.most_in_flight == 4
    assert parallel.history == serial.history and parallel.mean == serial.mean


@pytest.mark.slow
def test_two_processes_give_the_serial_run():
    # sum: a picklable objective that spawned workers import without this test module.
    config = PPOConfig(rounds=3, samples=6, updates=10, seed=3)
    serial = ppo_maximize(sum, 4, config)
    parallel = ppo_maximize(sum, 4, config, workers=2)
    assert parallel.history == serial.history and parallel.mean == serial.mean


def test_an_unpicklable_objective_with_workers_is_a_user_error():
    with pytest.raises(GpLossError, match="must pickle"):
        ppo_maximize(lambda theta: 0.0, 2, PPOConfig(rounds=1, samples=2, updates=1), workers=2)


# -- checkpoint and resume ----------------------------------------------------------------


class Interrupt(BaseException):
    """Stands for Ctrl-C or a kill: not an Exception, so not a failed evaluation."""


class InterruptedAfter:
    def __init__(self, objective, k):
        self.objective, self.k, self.calls = objective, k, 0

    def __call__(self, theta):
        self.calls += 1
        if self.calls > self.k:
            raise Interrupt
        return self.objective(theta)


class Counting:
    def __init__(self, objective):
        self.objective, self.calls = objective, []

    def __call__(self, theta):
        self.calls.append(list(theta))
        return self.objective(theta)


@pytest.mark.parametrize("k", [10, 13])  # after round 2 (of 5 samples), and in the middle of round 3
def test_resume_continues_exactly(tmp_path, k):
    f = Paraboloid(3)
    config = PPOConfig(rounds=5, samples=5, updates=15, seed=4)
    whole = ppo_maximize(f, 3, config)
    with pytest.raises(Interrupt):
        ppo_maximize(InterruptedAfter(f, k), 3, config, run_dir=tmp_path)
    saved = json.loads((tmp_path / "checkpoint.json").read_text())["state"]
    assert saved["rounds_done"] == k // 5 and len(saved["history"]) == 5 * (k // 5)
    assert sum(r is not None for r in saved["pending"]["results"]) == k % 5
    counting = Counting(f)
    resumed = ppo_maximize(counting, 3, config, run_dir=tmp_path, resume=True)
    assert resumed.history == whole.history and resumed.mean == whole.mean
    assert resumed.best_theta == whole.best_theta and resumed.rounds == whole.rounds
    assert counting.calls == _thetas(whole)[k:]  # nothing evaluated twice across the interruption
    # Resuming a finished run evaluates nothing more.
    again = ppo_maximize(counting, 3, config, run_dir=tmp_path, resume=True)
    assert again.history == whole.history and len(counting.calls) == 25 - k


def test_the_run_directory_holds_json_checkpoints_and_results(tmp_path):
    f = Paraboloid(2)
    result = ppo_maximize(f, 2, PPOConfig(rounds=3, samples=4, updates=5), run_dir=tmp_path)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["rounds_done"] == 3 and saved["stopped"] == "budget" and len(saved["history"]) == 12
    assert saved["best_theta"] == result.best_theta and saved["best_reward"] == result.best_reward
    assert set(saved["history"][0]) == {"round", "index", "theta", "reward", "status", "error"}
    state = json.loads((tmp_path / "checkpoint.json").read_text())["state"]
    assert state["rounds_done"] == 3 and state["pending"] is None and len(state["mean_logit"]) == 2


def test_resume_with_other_settings_or_without_resume_is_refused(tmp_path):
    config = PPOConfig(rounds=2, samples=3, updates=3, seed=1)
    ppo_maximize(sum, 3, config, run_dir=tmp_path)
    with pytest.raises(GpLossError, match="already holds a checkpoint"):
        ppo_maximize(sum, 3, config, run_dir=tmp_path)
    with pytest.raises(GpLossError, match="other settings: rounds 2 \\(now 3\\), seed 1 \\(now 2\\)") as err:
        ppo_maximize(sum, 3, PPOConfig(rounds=3, samples=3, updates=3, seed=2), run_dir=tmp_path, resume=True)
    assert "\n" not in str(err.value)
    with pytest.raises(GpLossError, match="other settings: dim 3 \\(now 4\\)"):
        ppo_maximize(sum, 4, config, run_dir=tmp_path, resume=True)
    with pytest.raises(GpLossError, match="other settings: initial"):
        ppo_maximize(sum, 3, config, initial=[0.3, 0.5, 0.5], run_dir=tmp_path, resume=True)


def test_a_corrupt_checkpoint_is_a_one_line_error(tmp_path):
    (tmp_path / "checkpoint.json").write_text('{"sha256": "00", "state": {"version": 1}}')
    with pytest.raises(GpLossError) as err:
        ppo_maximize(sum, 2, PPOConfig(rounds=1), run_dir=tmp_path, resume=True)
    assert "no readable checkpoint" in str(err.value) and "\n" not in str(err.value)
    other = tmp_path / "other"
    other.mkdir()
    save_checkpoint(other, {"version": 1, "signature": {}})  # a sound file, a state missing its fields
    with pytest.raises(GpLossError, match="corrupt checkpoint in .*KeyError"):
        ppo_maximize(sum, 2, PPOConfig(rounds=1), run_dir=other, resume=True)


def test_resume_in_an_empty_directory_starts_a_new_run(tmp_path):
    config = PPOConfig(rounds=2, samples=3, updates=3)
    assert ppo_maximize(sum, 2, config, run_dir=tmp_path, resume=True).history == \
        ppo_maximize(sum, 2, config).history


def test_a_wall_time_budget_stops_between_rounds():
    import time

    def slow(theta):
        time.sleep(0.02)
        return sum(theta)

    result = ppo_maximize(slow, 2, PPOConfig(rounds=50, samples=4, updates=2), max_seconds=0.3)
    assert result.stopped == "time" and 1 <= result.rounds_done < 50
    assert len(result.history) == 4 * result.rounds_done  # a started round is finished


# -- failed evaluations ---------------------------------------------------------------------


def test_failed_evaluations_get_reward_zero_and_the_run_goes_on():
    f = Paraboloid(3)

    def fragile(theta):
        if theta[0] < 0.3:
            raise ValueError("diverged")
        if theta[0] < 0.4:
            return math.nan
        if theta[1] < 0.3:
            return None
        if theta[1] < 0.35:
            return "oops"
        return f(theta)

    result = ppo_maximize(fragile, 3, PPOConfig(rounds=6, samples=8, updates=10, seed=5))
    assert result.rounds_done == 6 and len(result.history) == 48
    failed = [h for h in result.history if h["status"] == "failed"]
    assert failed and all(h["reward"] == 0.0 for h in failed)
    reasons = {h["error"] for h in failed}
    assert "ValueError: diverged" in reasons and "returned nan" in reasons
    assert "returned NoneType None, not a number" in reasons
    assert all(h["error"] is None for h in result.history if h["status"] == "ok")
    assert result.best_reward == max(h["reward"] for h in result.history if h["status"] == "ok")


def test_an_objective_that_always_fails_leaves_the_mean_and_reports_no_best():
    def broken(theta):
        raise RuntimeError("no GPU")

    result = ppo_maximize(broken, 2, PPOConfig(rounds=3, samples=4, updates=5), initial=[0.3, 0.6])
    assert result.rounds_done == 3 and len(result.history) == 12
    assert {h["error"] for h in result.history} == {"RuntimeError: no GPU"}
    assert result.best_theta is None and result.best_reward is None
    assert result.mean == pytest.approx([0.3, 0.6], abs=1e-12)  # all advantages 0: no step


def test_a_failed_reward_may_be_set_for_objectives_below_zero():
    def negative(theta):
        if theta[0] > 0.6:
            raise ValueError("diverged")
        return -1.0 - theta[0]

    result = ppo_maximize(negative, 1, PPOConfig(rounds=3, samples=6, updates=5, failed_reward=-10.0))
    assert {h["reward"] for h in result.history if h["status"] == "failed"} == {-10.0}


# -- the truncated normal and the update --------------------------------------------------


@pytest.mark.parametrize("mean, sigma", [(0.5, 0.2), (1e-6, 0.001), (1 - 1e-6, 0.001), (0.02, 5.0), (0.9, 0.05)])
def test_samples_lie_in_the_unit_box(mean, sigma):
    x = truncated_normal_sample(torch.full((3,), mean, dtype=torch.float64), sigma, 2000, round_generator(0, 0))
    assert x.shape == (2000, 3) and x.min() >= 0.0 and x.max() <= 1.0
    assert torch.isfinite(truncated_normal_log_prob(x, torch.tensor(mean, dtype=torch.float64), sigma)).all()


@pytest.mark.parametrize("mean, sigma", [(0.5, 0.2), (0.05, 0.1), (0.9, 0.5), (0.3, 0.01), (0.99, 3.0)])
def test_the_log_prob_is_a_density_on_the_unit_interval(mean, sigma):
    scipy_stats = pytest.importorskip("scipy.stats")
    grid = torch.linspace(0.0, 1.0, 200_001, dtype=torch.float64)
    m = torch.tensor(mean, dtype=torch.float64)
    density = truncated_normal_log_prob(grid, m, sigma).exp()
    assert torch.trapezoid(density, grid).item() == pytest.approx(1.0, abs=1e-6)
    a, b = (0 - mean) / sigma, (1 - mean) / sigma
    expected = scipy_stats.truncnorm.logpdf(grid.numpy()[::1000], a, b, loc=mean, scale=sigma)
    assert truncated_normal_log_prob(grid[::1000], m, sigma).numpy() == pytest.approx(expected, abs=1e-9)
    outside = truncated_normal_log_prob(torch.tensor([-1e-9, 1 + 1e-9], dtype=torch.float64), m, sigma)
    assert (outside == -math.inf).all()


@pytest.mark.parametrize("mean, sigma", [(0.5, 0.2), (0.1, 0.3), (0.95, 0.05)])
def test_samples_follow_the_truncated_normal(mean, sigma):
    scipy_stats = pytest.importorskip("scipy.stats")
    x = truncated_normal_sample(torch.tensor([mean], dtype=torch.float64), sigma, 20_000, round_generator(1, 0))
    a, b = (0 - mean) / sigma, (1 - mean) / sigma
    test = scipy_stats.kstest(x[:, 0].numpy(), scipy_stats.truncnorm(a, b, loc=mean, scale=sigma).cdf)
    assert test.pvalue > 1e-3


def test_the_log_prob_gradient_in_the_mean_is_exact():
    x = torch.tensor([[0.1, 0.7], [0.5, 0.99]], dtype=torch.float64)
    mean = torch.tensor([0.3, 0.8], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda m: truncated_normal_log_prob(x, m, 0.15), (mean,))


def test_one_update_moves_the_mean_towards_the_better_samples_within_the_clip():
    thetas = torch.tensor([[0.3], [0.4], [0.6], [0.7]], dtype=torch.float64)
    rewards = torch.tensor([0.0, 0.1, 0.9, 1.0], dtype=torch.float64)
    config = PPOConfig(rounds=2, updates=100)
    start = torch.zeros(1, dtype=torch.float64)
    after = torch.sigmoid(ppo_update(start, thetas, rewards, 0.2, 0.2, config)).item()
    assert 0.5 < after < 0.6  # up, but the clip (±10 % per coordinate) keeps the step small
    unclipped = torch.sigmoid(ppo_update(start, thetas, rewards, 0.2, 0.2,
                                         PPOConfig(rounds=2, updates=100, clip=0.9))).item()
    assert unclipped > after


# -- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, message", [
    (dict(rounds=0), "rounds must be an integer of at least 1, got 0"),
    (dict(rounds=2.5), "rounds must be an integer"),
    (dict(samples=1), "samples must be an integer of at least 2"),
    (dict(updates=0), "updates must be an integer of at least 1"),
    (dict(sigma_start=0), "sigma_start must be positive"),
    (dict(sigma_start=-0.1), "sigma_start must be positive"),
    (dict(sigma_end=0.0), "sigma_end must be positive"),
    (dict(sigma_start=math.nan), "sigma_start must be a finite number"),
    (dict(clip=0), "clip must lie strictly between 0 and 1"),
    (dict(clip=1.0), "clip must lie strictly between 0 and 1"),
    (dict(lr=0), "lr must be positive"),
    (dict(lr="0.01"), "lr must be a finite number"),
    (dict(failed_reward=math.inf), "failed_reward must be a finite number"),
    (dict(seed=-1), "seed must be an integer in"),
])
def test_a_bad_config_is_a_one_line_user_error(kwargs, message):
    with pytest.raises(GpLossError, match=message) as err:
        PPOConfig(**kwargs)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("kwargs, message", [
    (dict(dim=0), "dim must be an integer of at least 1"),
    (dict(initial=[0.5, 0.5]), "initial has 2 values, expected dim = 3"),
    (dict(initial=[0.5, 0.0, 0.5]), "initial\\[1\\] must lie strictly between 0 and 1"),
    (dict(initial=[0.5, 0.5, 1]), "initial\\[2\\] must lie strictly between 0 and 1"),
    (dict(max_seconds=-1), "max_seconds must be a positive"),
    (dict(workers=0), "workers must be an integer of at least 1"),
    (dict(config=dict(rounds=3)), "config must be a PPOConfig"),
    (dict(resume=True), "resume=True needs the run_dir"),
])
def test_bad_arguments_are_a_one_line_user_error(kwargs, message):
    args = dict(dim=3, config=PPOConfig(rounds=1, samples=2, updates=1))
    args.update(kwargs)
    with pytest.raises(GpLossError, match=message) as err:
        ppo_maximize(sum, args.pop("dim"), args.pop("config"), **args)
    assert "\n" not in str(err.value)


def test_progress_is_told_of_the_start_and_of_each_result_with_the_best_so_far(tmp_path):
    seen = []

    def objective(theta):
        if theta[0] > 0.9:
            raise ValueError("too far")
        return -sum((t - 0.3) ** 2 for t in theta)

    config = PPOConfig(rounds=2, samples=3, updates=2, seed=1)
    ppo_maximize(objective, 2, config, run_dir=tmp_path, progress=seen.append)
    assert seen[0] == {"done": 0, "budget": 6} and [r["done"] for r in seen] == list(range(7))
    assert [r["round"] for r in seen[1:]] == [0, 0, 0, 1, 1, 1]
    values = [r["value"] for r in seen[1:]]
    for k, r in enumerate(seen[1:]):
        ok = [v for v in values[:k + 1] if v is not None]
        assert r["best_value"] == (max(ok) if ok else None) and len(r["x"]) == 2
        assert (r["value"] is None) == (r["error"] is not None)
