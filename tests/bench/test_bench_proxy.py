"""The proxy-fidelity benchmark: sampling, overlap, and a run on a tiny search."""
import json

import pytest

from gp_loss.bench.proxy import bench_proxy, spread_sample, top_overlap
from gp_loss.cli import main
from gp_loss.errors import GpLossError
from gp_loss.evolution.config import SearchConfig
from gp_loss.evolution.run_search import run_search
from gp_loss.runtime.run_dir import RunDir


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


def test_bench_proxy_scores_each_length_against_the_final_protocol(tiny_run):
    result = bench_proxy(tiny_run, [2], sample=4, top=2)
    assert result["losses"] == 4 and result["final_seeds"] == 1
    assert [r["proxy_epochs"] for r in result["rows"]] == [1, 2]  # the run's own length is added
    current = [r for r in result["rows"] if r["current"]]
    assert len(current) == 1 and current[0]["proxy_epochs"] == 1 and current[0]["time_ratio"] == 1.0
    for r in result["rows"]:
        assert -1 <= r["spearman"] <= 1 and 0 <= r["top_overlap"] <= 2 and r["seconds"] > 0
    # deterministic: the same run and settings give the same figures
    again = bench_proxy(tiny_run, [2], sample=4, top=2)
    assert [(r["spearman"], r["top_overlap"]) for r in again["rows"]] == \
        [(r["spearman"], r["top_overlap"]) for r in result["rows"]]


def test_bench_proxy_cli(tiny_run, capsys, tmp_path):
    assert main(["bench", "proxy", str(tiny_run), "--epochs", "2", "--sample", "3", "--top", "1"]) == 0
    out = capsys.readouterr().out
    assert "spearman" in out and "(the run's)" in out
    assert main(["bench", "proxy", str(tmp_path)]) == 2
    assert "holds no run" in capsys.readouterr().err
    assert main(["bench", "proxy", str(tiny_run), "--epochs", "two"]) == 2
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
