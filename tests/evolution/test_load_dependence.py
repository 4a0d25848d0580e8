"""A search whose results a time limit changed says so in final.json and under its final table; one that no
limit touched says nothing (its results are reproducible from the seed)."""
from gp_loss.evolution.config import SearchConfig
from gp_loss.evolution.run_search import final_table, run_search
from gp_loss.tasks import TrainOutcome
from gp_loss.tasks.classification import ClassificationTask

CONFIG = SearchConfig(population=3, max_evaluations=3, offspring_per_generation=3, final_seeds=1, final_top=1,
                      task_options={"proxy_epochs": 1, "final_epochs": 1}, baselines=["ce", "focal"])


def test_a_proxy_stopped_by_its_time_limit_is_reported(tmp_path, monkeypatch, capsys):
    calls = []

    def proxy(self, genome, seed, time_limit_s=None):  # the first baseline's and the first child's hit it
        calls.append(seed)
        if len(calls) in (1, 3):
            return TrainOutcome(0.0, "too slow", "over 120 s", hit_time_limit=True)
        return TrainOutcome(0.5)

    monkeypatch.setattr(ClassificationTask, "proxy_fitness", proxy)
    result = run_search(CONFIG, str(tmp_path / "run"), progress=False)
    note = result["load_dependence"]
    assert note.startswith("2 proxy trainings hit the time limit (eval_time_limit_s)")
    assert "depend on the machine's load" in note
    assert final_table(result).splitlines()[-1] == f"warning: {note}"
    out = capsys.readouterr().out
    assert "baselines: 2 proxy training(s) (ce, focal)" in out and "baseline 2/2 | focal" in out
    assert "final 1/3 | top1 seed" in out


def test_a_run_no_limit_touched_says_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(ClassificationTask, "proxy_fitness",
                        lambda self, genome, seed, time_limit_s=None: TrainOutcome(0.5))
    result = run_search(CONFIG, str(tmp_path / "run"), progress=False)
    assert "load_dependence" not in result
    assert "warning" not in final_table(result)
