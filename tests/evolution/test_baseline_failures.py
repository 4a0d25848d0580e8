"""A search whose every baseline training fails stops before searching, naming the first failure, instead of
comparing zeros; one baseline that trains is enough to go on."""
import pytest

from gp_loss.errors import GpLossError
from gp_loss.evolution import jobs
from gp_loss.evolution.config import SearchConfig
from gp_loss.evolution.run_search import run_search
from gp_loss.evolution.search import Search
from gp_loss.runtime.parallel import open_backend
from gp_loss.tasks import TrainOutcome
from gp_loss.tasks.classification import ClassificationTask

CONFIG = SearchConfig(population=3, max_evaluations=3, offspring_per_generation=3, final_seeds=1, final_top=1,
                      task_options={"proxy_epochs": 1, "final_epochs": 1},
                      baselines=["ce", "focal", "label_smoothing_ce"])
BROKEN = TrainOutcome(0.0, "error", "ValueError: Expected all boxes to be finite")


class _Recorder:
    def evaluation(self, record):
        raise AssertionError("baselines are not evaluations of the search")

    def baselines_start(self, names, metric):
        self.trained = []

    def baseline_trained(self, name, outcome):
        self.trained.append(name)


def _search(monkeypatch, outcomes: dict) -> Search:
    """A search whose baseline trainings end as ``outcomes`` says, by baseline name."""
    monkeypatch.setattr(jobs, "evaluate", lambda job: outcomes[job.baseline])
    return Search(CONFIG, open_backend("serial"), _Recorder())


def test_every_baseline_failing_stops_naming_the_first_failure(monkeypatch):
    nan = TrainOutcome(0.0, "non-finite", "loss of branch 'cls' is nan")
    search = _search(monkeypatch, {"ce": BROKEN, "focal": nan, "label_smoothing_ce": BROKEN})
    with pytest.raises(GpLossError) as err:
        search.evaluate_baselines()
    message = str(err.value)
    assert message.startswith("every baseline training failed (ce: error: ValueError: Expected all boxes to be "
                              "finite); the data or the settings cannot be trained: check the data")
    assert "gp-loss evaluate --task classification --loss ce" in message and "\n" not in message
    assert search.baseline_fitness == {}  # nothing recorded as a result


def test_every_baseline_past_the_time_limit_names_the_limit(monkeypatch):
    slow = TrainOutcome(0.0, "too slow", "over 120 s at step 7")
    search = _search(monkeypatch, dict.fromkeys(("ce", "focal", "label_smoothing_ce"), slow))
    with pytest.raises(GpLossError, match=r"\(ce: too slow: over 120 s at step 7\); each ran past "
                                          r"eval_time_limit_s \(120 s\): raise it"):
        search.evaluate_baselines()


def test_one_baseline_that_trains_is_enough(monkeypatch):
    collapsed = TrainOutcome(0.1, "collapsed", "one class everywhere")  # a scored early stop, not a failure
    search = _search(monkeypatch, {"ce": BROKEN, "focal": collapsed, "label_smoothing_ce": BROKEN})
    search.evaluate_baselines()
    assert search.baseline_fitness == {"ce": 0.0, "focal": 0.1, "label_smoothing_ce": 0.0}


def test_the_search_stops_before_its_first_generation(tmp_path, monkeypatch):
    """End to end, as the search scripts run it: an error line, not a result of zeros."""
    monkeypatch.setattr(ClassificationTask, "proxy_fitness", lambda self, genome, seed, time_limit_s=None: BROKEN)
    with pytest.raises(GpLossError, match=r"^every baseline training failed \(ce: error: ValueError"):
        run_search(CONFIG, str(tmp_path / "run"), progress=False)
    assert not (tmp_path / "run" / "final.json").exists()
    evaluations = tmp_path / "run" / "evaluations.jsonl"
    assert not evaluations.exists() or not evaluations.read_text()
