"""Choosing the final top: the hall of fame's best trained for the final schedule on validation, best by mean."""
import pytest

from gp_loss.errors import GpLossError
from gp_loss.evolution import jobs
from gp_loss.evolution.config import SearchConfig
from gp_loss.evolution.run_search import run_search
from gp_loss.runtime.run_dir import RunDir
from gp_loss.tasks.base import TrainOutcome
from gp_loss.tasks.classification import ClassificationOptions, ClassificationTask

TINY = dict(task="classification", population=4, offspring_per_generation=4, max_evaluations=8, final_top=2,
            final_seeds=2, task_options={"proxy_epochs": 1, "final_epochs": 1})


def _final(tmp_path, **changes):
    run = tmp_path / "run"
    result = run_search(SearchConfig(**{**TINY, **changes}), str(run), progress=False)
    return result, RunDir(run).read_json("hall_of_fame.json")["hall_of_fame"]


def test_the_final_top_is_the_best_of_the_pool_by_mean_validation_score_at_the_final_length(tmp_path):
    result, hof = _final(tmp_path, selection_seeds=2)
    selection = result["selection"]
    assert selection["seeds"] == [2000, 2001]  # apart from the search's seed 0 and the final's 1000, 1001
    candidates = selection["candidates"]
    assert len(candidates) == min(len(hof), 2 * TINY["final_top"])
    assert [c["mean"] for c in candidates] == sorted((c["mean"] for c in candidates), reverse=True)
    assert sorted(c["hall_of_fame_rank"] for c in candidates) == list(range(1, len(candidates) + 1))
    for c in candidates:  # every candidate is the hall of fame's member of that rank, with its proxy fitness
        member = hof[c["hall_of_fame_rank"] - 1]
        assert c["formulas"] == member["formulas"] and len(c["scores"]) == 2
        assert c["mean"] == pytest.approx(sum(c["scores"]) / 2)
    tops = [r for r in result["rows"] if not r["baseline"]]
    assert [r["name"] for r in tops] == ["top1", "top2"]
    for row, c in zip(tops, candidates):
        assert row["formulas"] == c["formulas"] and row["hall_of_fame_rank"] == c["hall_of_fame_rank"]
        assert row["selection_mean"] == c["mean"] and row["proxy_fitness"] == c["proxy_fitness"]


def test_without_selection_seeds_the_final_top_is_the_hall_of_fames_order(tmp_path):
    result, hof = _final(tmp_path, selection_seeds=0)
    assert "selection" not in result
    tops = [r for r in result["rows"] if not r["baseline"]]
    assert [r["formulas"] for r in tops] == [m["formulas"] for m in hof[:2]]
    assert all("hall_of_fame_rank" not in r for r in tops)


def test_a_loss_that_fails_at_the_final_length_leaves_the_top(tmp_path, monkeypatch):
    """The proxy's first, failing every selection training, falls behind every candidate that trains."""
    evaluate = jobs.evaluate
    first = {}

    def failing_first(job):
        if job.selection:
            first.setdefault("formulas", job.formulas)
            if job.formulas == first["formulas"]:
                return TrainOutcome(0.0, "non-finite", "loss of branch 'cls' is nan at step 3")
        return evaluate(job)

    monkeypatch.setattr(jobs, "evaluate", failing_first)
    result, hof = _final(tmp_path, selection_seeds=2)
    candidates = result["selection"]["candidates"]
    assert first["formulas"] == hof[0]["formulas"]  # the hall of fame's first is asked first
    assert candidates[-1]["hall_of_fame_rank"] == 1 and candidates[-1]["scores"] == [0.0, 0.0]
    assert result["rows"][0]["formulas"] != hof[0]["formulas"]


def test_the_classification_selection_score_is_the_final_schedule_scored_on_validation():
    task = ClassificationTask(ClassificationOptions(proxy_epochs=1, final_epochs=2))
    ce = task.baseline("ce")
    chosen = task.selection_score(ce, 5)
    assert chosen.steps == 2 * task.steps_per_epoch
    assert chosen.score == task.train(ce, 5, 2, "val").score


@pytest.mark.parametrize("value", [-1, 1001])
def test_selection_seeds_out_of_range_is_one_line(value):
    with pytest.raises(GpLossError, match=r"selection_seeds must be in \[0, 1000\]") as info:
        SearchConfig(**{**TINY, "selection_seeds": value}).check()
    assert "\n" not in str(info.value)
