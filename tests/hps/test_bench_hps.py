"""gp-loss bench hps: the figures' arithmetic, the test problems, and a tiny run of the command."""
import math
import pickle

import pytest

from gp_loss.bench import hps as bench
from gp_loss.cli import main
from gp_loss.hps.benchmark_functions import APLike, Ackley, Levy, Rastrigin, Slow


def test_the_benchmark_functions_have_their_optimum_where_expected_and_pickle():
    assert abs(Ackley()([16] * 15)) < 1e-9  # grid centre -> 0
    assert abs(Rastrigin()([40] * 15)) < 1e-9
    assert Ackley()([0] * 15) < -19
    levy = Levy()
    assert levy([14] * 15) > levy([0] * 15)  # near z = 1 beats the corner
    ap = APLike(seed=3)
    x = [5] * 15
    assert ap(x) == ap(list(x)) == pickle.loads(pickle.dumps(ap))(x)  # noise fixed per point
    assert ap([int(round(math.exp(v))) for v in ap.log_opt]) > ap([80] * 15)
    assert Slow(ap, 0.0).bounds == ([1] * 15, [80] * 15)


def test_problem_figures_pair_seeds_and_measure_the_gain_against_the_reference():
    runs = {"dycors": [{"best": v} for v in (-5.0, -6.0, -20.0)],
            "random": [{"best": v} for v in (-10.0, -9.0, -11.0)],
            "tpe": [{"best": v} for v in (-7.0, -8.0, -6.5)]}
    f = bench._problem_figures("ackley", runs, ["dycors"])["dycors"]
    assert f["median"] == -6.0
    assert f["beats_random"] == pytest.approx(2 / 3)  # seed 2: -20 < -11
    assert f["at_least_tpe"] is True  # -6.0 >= -7.0
    # Reference gain: -4.2 - (-9.7) = 5.5; our gain over our random median (-10): 4.0.
    assert f["gain_fraction"] == pytest.approx(4.0 / 5.5)
    assert f["reference_position"] == pytest.approx((-6.0 + 9.7) / 5.5)


def test_targets_read_the_first_strategy():
    figures = {"dycors": {"beats_random": 1.0, "at_least_tpe": True, "gain_fraction": 0.8}}
    result = {"strategies": ["dycors"], "problems": {"ackley": figures, "levy": {
        "dycors": {"beats_random": 0.8, "at_least_tpe": True, "gain_fraction": 2.0}}},
        "overhead": {"dycors": {"late_mean_s": 0.4}}, "parallel": {"median_fraction": 0.7}}
    t = bench._targets(result)
    assert t == {"beats_random": False, "at_least_tpe": True, "gain": True, "overhead": True, "parallel": False}


def test_random_search_never_repeats_a_point_and_respects_the_budget():
    seen = []

    class Recorder:
        bounds = ([0, 0], [3, 3])

        def __call__(self, x):
            seen.append(tuple(x))
            return float(sum(x))

    assert bench.random_search(Recorder(), 16, seed=0) == 6.0  # the whole grid: its best is (3, 3)
    assert len(seen) == 16 == len(set(seen))


TINY = ["bench", "hps", "--quick", "--seeds", "2", "--dim", "3", "--evaluations", "12",
        "--parallel-evaluations", "10", "--sleep", "0.02", "--problems", "ackley,ap-like"]


def test_the_command_runs_a_tiny_configuration_and_prints_its_figures(capsys, monkeypatch):
    monkeypatch.setattr(bench, "optuna_available", lambda: False)
    assert main(TINY) == 0
    out = capsys.readouterr().out
    assert "3 dimensions, 12 evaluations, 2 seeds" in out
    assert "TPE: skipped: optuna is not installed" in out
    assert "ackley:" in out and "ap-like:" in out and "dycors" in out and "random" in out
    assert "beats random" in out and "of the reference gain" in out
    assert "optimiser overhead (dycors):" in out and "s per proposal" in out
    assert "parallel check: ap-like, 0.02 s per evaluation, 10 serial evaluations; 2 workers" in out
    assert "targets (dycors):" in out and "read them as indicative" in out


def test_tpe_is_compared_when_optuna_is_installed(capsys):
    pytest.importorskip("optuna")
    assert main(TINY[:-2] + ["--problems", "levy", "--no-parallel", "--seeds", "1"]) == 0
    out = capsys.readouterr().out
    assert "TPE: ran" in out and "  tpe " in out and "median >= TPE:" in out
    assert "parallel check" not in out


@pytest.mark.parametrize("args, message", [
    (["--evaluations", "9", "--dim", "4"], "--evaluations must be at least the initial design.s 2\\(d\\+1\\) = 10"),
    (["--strategies", "dycors,bo"], "--strategies takes dycors, srbf, ei, lcb or all"),
    (["--problems", "sphere"], "--problems takes ackley, levy, rastrigin, ap-like, ackley-small"),
    (["--seeds", "0"], "--seeds must be at least 1"),
    (["--sleep", "-1"], "--sleep must be 0 or more"),
])
def test_bad_options_are_one_line_errors(capsys, args, message):
    import re

    assert main(["bench", "hps", *args]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and err.count("\n") == 1


def test_the_command_knows_every_test_problem():
    from gp_loss.cli.bench_cmd import PROBLEM_NAMES
    from gp_loss.hps.benchmark_functions import PROBLEMS

    assert set(PROBLEM_NAMES) == set(PROBLEMS)
    assert set(bench.REFERENCE) == {"ackley", "levy", "rastrigin", "ackley-small", "levy-small", "rastrigin-small"}
