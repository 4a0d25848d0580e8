"""The proxy-fidelity benchmark: sampling, overlap, rank agreement, a tiny real search, and synthetic runs of
every task whose trainings return known scores."""
import json
import math

import pytest

from gp_loss.bench import proxy as proxy_module
from gp_loss.bench.proxy import bench_proxy, rank_agreement, spread_sample, top_overlap
from gp_loss.cli import main
from gp_loss.errors import GpLossError
from gp_loss.evolution.config import SearchConfig
from gp_loss.evolution.run_search import run_search
from gp_loss.runtime.run_dir import RunDir
from gp_loss.tasks import TrainOutcome, task_info


def test_spread_sample_spans_the_fitness_range():
    records = [{"fitness": f / 10} for f in (5, 1, 9, 3, 7, 2, 8)]
    picked = [r["fitness"] for r in spread_sample(records, 3)]
    assert picked == [0.1, 0.5, 0.9]
    assert len(spread_sample(records, 20)) == 7


def test_top_overlap_counts_shared_best():
    assert top_overlap([1, 2, 3, 4], [4, 3, 2, 1], 2) == 0
    assert top_overlap([1, 2, 3, 4], [1, 2, 4, 3], 2) == 2
    assert top_overlap([1, 2, 3, 4], [2, 1, 4, 3], 3) == 2


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("proxy") / "run"
    config = SearchConfig(population=3, max_evaluations=5, offspring_per_generation=2, final_seeds=1,
                          final_top=1, task_options={"proxy_epochs": 1, "final_epochs": 1})
    run_search(config, str(path), progress=False)
    return path


def test_rank_agreement_is_kendall_tau_b_and_spearman_and_zero_when_constant():
    assert rank_agreement([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx((1, 1))
    assert rank_agreement([4, 3, 2, 1], [10, 20, 30, 40]) == pytest.approx((-1, -1))
    tau, rho = rank_agreement([1, 2, 2, 3], [1, 2, 3, 4])  # a tie: tau-b's denominator counts it
    assert tau == pytest.approx(5 / math.sqrt(5 * 6)) and rho == pytest.approx(0.9486832980505138)
    assert rank_agreement([0.5] * 4, [1, 2, 3, 4]) == (0.0, 0.0)  # scipy: NaN
    assert rank_agreement([1, 2, 3, 4], [0.0] * 4) == (0.0, 0.0)


def test_bench_proxy_scores_each_length_against_the_final_protocol(tiny_run):
    result = bench_proxy(tiny_run, [2], sample=4, top=2)
    assert result["losses"] == 4 and result["final_seeds"] == 1 and result["task"] == "classification"
    assert (result["proxy_option"], result["proxy_length"]) == ("proxy_epochs", 1)
    assert [r["length"] for r in result["rows"]] == [1, 2]  # the run's own length is added
    current = [r for r in result["rows"] if r["current"]]
    assert len(current) == 1 and current[0]["length"] == 1 and current[0]["time_ratio"] == 1.0
    assert current[0]["reused"] == 4  # every loss was trained by the run at full fidelity: not trained again
    assert result["kendall_tau"] == current[0]["kendall_tau"] and result["top5_overlap"] == 4
    for r in result["rows"]:
        assert -1 <= r["kendall_tau"] <= 1 and -1 <= r["spearman_rho"] <= 1
        assert 0 <= r["top_overlap"] <= 2 and r["seconds"] > 0
    # deterministic: the same run and settings give the same figures
    again = bench_proxy(tiny_run, [2], sample=4, top=2)
    assert [(r["kendall_tau"], r["spearman_rho"], r["top_overlap"]) for r in again["rows"]] == \
        [(r["kendall_tau"], r["spearman_rho"], r["top_overlap"]) for r in result["rows"]]


def test_bench_proxy_cli(tiny_run, capsys, tmp_path):
    assert main(["bench", "proxy", str(tiny_run), "--epochs", "2", "--sample", "3", "--top", "1"]) == 0
    out = capsys.readouterr().out
    assert "Kendall's tau" in out and "spearman" in out and "(the run's)" in out
    assert main(["bench", "proxy", str(tmp_path)]) == 2
    assert "holds no run" in capsys.readouterr().err
    assert main(["bench", "proxy", str(tiny_run), "--epochs", "two"]) == 2
    assert main(["bench", "proxy", str(tiny_run), "--lengths", "2", "--epochs", "2"]) == 2
    assert "not both" in capsys.readouterr().err
    with pytest.raises(GpLossError, match="--sample"):
        bench_proxy(tiny_run, [2], sample=1)


def test_a_run_with_successive_halving_is_sampled_one_loss_each(tmp_path):
    """A loss promoted through the rungs has a record at each fidelity: it is one loss, not three."""
    path = tmp_path / "run"
    config = SearchConfig(population=4, max_evaluations=6, offspring_per_generation=4, final_seeds=1, final_top=1,
                          fidelities=[0.5, 1.0], promote=0.5, selection_seeds=0,
                          task_options={"proxy_epochs": 1, "final_epochs": 1})
    run_search(config, str(path), progress=False)
    records = [r for r in RunDir(path).read_jsonl("evaluations.jsonl") if r["status"] == "ok"]
    losses = {json.dumps(r["formulas"], sort_keys=True) for r in records}
    assert len(losses) < len(records)  # promoted losses were trained again
    result = bench_proxy(path, [1], sample=len(records), top=1)
    assert result["losses"] == len(losses)
    # a loss the run trained only at half the proxy is trained again at the whole proxy
    full = {json.dumps(r["formulas"], sort_keys=True) for r in records if r["fidelity"] == 1.0}
    assert result["reused"] == len(full) < len(losses)


# -- synthetic runs of every task: trainings replaced by known scores, so the figures are exact -------------

class KnownScores:
    """A task whose trainings return scores looked up by the loss's first literal (the ``mul(i, ...)`` below).

    ``proxy``: length -> the proxy scores of losses 0, 1, ...; ``final``: the final scores.
    Records every training, so a test sees which were trained and which were reused.
    """

    def __init__(self, length: int, proxy: dict[int, list[float]], final: list[float], trained: list):
        self.length, self.proxy, self.final, self.trained = length, proxy, final, trained

    @staticmethod
    def index(genome) -> int:
        first = next(iter(genome.formulas().values()))
        return int(first.removeprefix("mul(").split(",")[0])

    def proxy_fitness(self, genome, seed, time_limit_s=None, fidelity=1.0):
        self.trained.append(("proxy", self.length, self.index(genome), seed))
        return TrainOutcome(self.proxy[self.length][self.index(genome)], seconds=0.25 * self.length)

    def final_score(self, genome, seed):
        self.trained.append(("final", self.index(genome), seed))
        return TrainOutcome(self.final[self.index(genome)], seconds=1.0)


LENGTHS = {"classification": 3, "detection": 40, "segmentation": 30}  # each run's own proxy length


def synthetic_run(path, task: str, recorded: list[float], final_seeds: int = 1, fidelities=None) -> None:
    """A run directory of ``task`` whose ``evaluations.jsonl`` holds losses 0.. with the ``recorded`` proxy
    scores (each trained at fidelity 1.0, in 2 s, unless ``fidelities`` says otherwise)."""
    info = task_info(task)
    options = info.options()
    layout = info.layout(options)
    reference = info.baselines_for(options)[info.reference_baseline or "ce"]
    config = SearchConfig(task=task, branches=layout, final_seeds=final_seeds, selection_seeds=0,
                          task_options={info.proxy_option: LENGTHS[task]}, device="cpu")
    RunDir(path).prepare()
    RunDir(path).write_json("config.json", config.to_dict())
    lines = []
    for i, score in enumerate(recorded):
        fidelity = 1.0 if fidelities is None else fidelities[i]
        lines.append({"generation": 0, "slot": i, "evaluation": i + 1, "fidelity": fidelity, "status": "ok",
                      "formulas": {b: f"mul({i}, {f})" for b, f in reference.items()}, "fitness": score,
                      "seconds": 2.0, "steps": 1})
    lines.append({**lines[0], "status": "non-finite", "fitness": 0.0,  # a failed training is no loss to rank
                  "formulas": {b: f"mul(99, {f})" for b, f in reference.items()}})
    (path / "evaluations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))


@pytest.fixture
def known_scores(monkeypatch):
    """Replace task building in the benchmark: returns (set the scores, the trainings made)."""
    trained: list = []
    scores: dict = {}

    def make(name, options, device):
        return KnownScores(options.get(task_info(name).proxy_option, LENGTHS[name]), scores["proxy"],
                           scores["final"], trained)

    monkeypatch.setattr(proxy_module, "make_task", make)
    return scores, trained


KEYS = {"kendall_tau", "spearman_rho", "top5_overlap", "seconds_per_proxy", "losses", "final_seeds", "task", "run",
        "proxy_option", "proxy_length", "top", "top_overlap", "rows"}
ROW_KEYS = {"length", "current", "kendall_tau", "spearman_rho", "top_overlap", "top5_overlap", "seconds",
            "time_ratio"}


@pytest.mark.parametrize("task,option", [("classification", "proxy_epochs"), ("detection", "proxy_steps"),
                                         ("segmentation", "proxy_steps")])
def test_every_task_ranks_by_its_own_proxy_length(tmp_path, known_scores, capsys, task, option):
    scores, trained = known_scores
    own = LENGTHS[task]
    n = 6
    scores["final"] = [i / 10 for i in range(n)]
    scores["proxy"] = {2: [-i for i in range(n)]}  # length 2 ranks them in reverse
    synthetic_run(tmp_path, task, recorded=[i / 100 for i in range(n)])  # the run's proxy: the final order
    assert main(["bench", "proxy", str(tmp_path), "--lengths", "2", "--sample", str(n), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert KEYS <= set(result) and all(ROW_KEYS <= set(r) for r in result["rows"])
    assert (result["task"], result["proxy_option"], result["proxy_length"]) == (task, option, own)
    assert result["losses"] == n and result["final_seeds"] == 1 and "note" not in result
    assert (result["kendall_tau"], result["spearman_rho"], result["top5_overlap"]) == (pytest.approx(1), 1.0, 5)
    assert result["seconds_per_proxy"] == 2.0  # the recorded seconds of the reused scores
    assert result["final_scores"] == scores["final"]
    rows = {r["length"]: r for r in result["rows"]}
    assert sorted(rows) == [2, own] and rows[own]["current"] and not rows[2]["current"]
    assert (rows[2]["kendall_tau"], rows[2]["spearman_rho"], rows[2]["top5_overlap"]) == \
        (pytest.approx(-1), pytest.approx(-1), 4)
    assert rows[2]["seconds"] == 0.5 and rows[2]["time_ratio"] == 0.25
    # the run's own proxies came from evaluations.jsonl: only length 2 and the final protocol trained
    assert sorted(t[:2] for t in trained if t[0] == "proxy") == [("proxy", 2)] * n
    assert len([t for t in trained if t[0] == "final"]) == n


def test_a_constant_proxy_gives_zero_not_nan(tmp_path, known_scores, capsys):
    scores, _ = known_scores
    scores["final"] = [0.1, 0.4, 0.2, 0.3]
    scores["proxy"] = {5: [0.0] * 4}
    synthetic_run(tmp_path, "detection", recorded=[0.5] * 4)  # every proxy scored alike
    assert main(["bench", "proxy", str(tmp_path), "--lengths", "5", "--json"]) == 0
    out = capsys.readouterr().out
    assert "NaN" not in out
    result = json.loads(out)
    assert all((r["kendall_tau"], r["spearman_rho"]) == (0.0, 0.0) for r in result["rows"])


def test_fewer_losses_than_the_sample_are_all_used_and_said(tmp_path, known_scores, capsys):
    scores, _ = known_scores
    scores["final"] = [0.1, 0.3, 0.2, 0.4]
    scores["proxy"] = {}
    synthetic_run(tmp_path, "segmentation", recorded=[0.1, 0.2, 0.3, 0.4])
    result = bench_proxy(tmp_path)
    assert result["losses"] == 4 and "4 distinct losses" in result["note"]
    # of the 6 pairs of losses, the proxy orders 5 as the final score does: tau (5 - 1) / 6
    assert result["kendall_tau"] == pytest.approx(2 / 3) and result["spearman_rho"] == pytest.approx(0.8)
    assert result["top5_overlap"] == 4 and [r["length"] for r in result["rows"]] == [LENGTHS["segmentation"]]
    assert main(["bench", "proxy", str(tmp_path)]) == 0
    assert "note: the run has 4 distinct losses" in capsys.readouterr().out


def test_a_loss_trained_only_at_a_lower_fidelity_is_trained_at_the_whole_proxy(tmp_path, known_scores):
    scores, trained = known_scores
    scores["final"] = [0.1, 0.2, 0.3, 0.4]
    scores["proxy"] = {40: [9.0, 9.0, 9.0, 0.4]}  # what the whole proxy gives: only loss 3 is asked for
    synthetic_run(tmp_path, "detection", recorded=[0.1, 0.2, 0.3, 0.05], fidelities=[1.0, 1.0, 1.0, 0.5])
    result = bench_proxy(tmp_path)
    assert [t for t in trained if t[0] == "proxy"] == [("proxy", 40, 3, 0)]  # the run's seed
    assert result["reused"] == 3
    # in the order of the recorded fitness: loss 3 (0.05 at half the proxy) first
    assert result["rows"][0]["proxy_scores"] == [0.4, 0.1, 0.2, 0.3]
    assert result["kendall_tau"] == pytest.approx(1)
    assert result["seconds_per_proxy"] == pytest.approx((3 * 2.0 + 10.0) / 4)  # recorded, then measured


def test_final_seeds_takes_the_first_of_the_runs(tmp_path, known_scores):
    scores, trained = known_scores
    scores["final"] = [0.1, 0.2, 0.3]
    scores["proxy"] = {}
    synthetic_run(tmp_path, "classification", recorded=[0.1, 0.2, 0.3], final_seeds=3)
    config = SearchConfig.from_dict(RunDir(tmp_path).read_json("config.json"))
    assert bench_proxy(tmp_path)["final_seeds"] == 3
    trained.clear()
    result = bench_proxy(tmp_path, final_seeds=2)
    assert result["final_seeds"] == 2
    assert sorted({t[2] for t in trained if t[0] == "final"}) == config.retrain_seeds[:2]


@pytest.mark.parametrize("kwargs,message", [
    ({"lengths": [0]}, "--lengths"),
    ({"sample": 2}, "--sample"),
    ({"top": 0}, "--top"),
    ({"final_seeds": 0}, "--final-seeds must be 1 to 2"),
    ({"final_seeds": 3}, "--final-seeds must be 1 to 2"),
    ({"lengths": [20_000_000]}, "proxy_steps"),   # past the task's own limit
    ({"unit": "proxy_epochs"}, "give --lengths in steps"),
])
def test_bad_settings_are_one_line_before_any_training(tmp_path, known_scores, kwargs, message):
    scores, trained = known_scores
    synthetic_run(tmp_path, "detection", recorded=[0.1, 0.2, 0.3], final_seeds=2)
    with pytest.raises(GpLossError, match=message):
        bench_proxy(tmp_path, **kwargs)
    assert trained == []


def test_bad_runs_are_one_line(tmp_path, known_scores, capsys):
    synthetic_run(tmp_path / "few", "segmentation", recorded=[0.1, 0.2])
    assert main(["bench", "proxy", str(tmp_path / "few")]) == 2
    assert "need at least 3" in capsys.readouterr().err
    synthetic_run(tmp_path / "odd", "segmentation", recorded=[0.1, 0.2, 0.3])
    config = json.loads((tmp_path / "odd" / "config.json").read_text())
    config["task_options"]["no_such_option"] = 1
    (tmp_path / "odd" / "config.json").write_text(json.dumps(config))
    assert main(["bench", "proxy", str(tmp_path / "odd")]) == 2
    err = capsys.readouterr().err
    assert "no_such_option" in err and len(err.strip().splitlines()) == 1
    assert main(["bench", "proxy", str(tmp_path / "few"), "--epochs", "2"]) == 2
    assert "proxy_steps" in capsys.readouterr().err
