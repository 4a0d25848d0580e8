"""The parent of a parallel search neither loads task data nor builds filter samples: workers do."""
import json

import pytest

from gp_loss.data import digits
from gp_loss.evolution.config import SearchConfig
from gp_loss.evolution.run_search import run_search
from gp_loss.tasks import classification

CE = "neg(dot(y, log(softmax(x))))"


@pytest.fixture
def parent_without_data(monkeypatch):
    """Any digits or task data the parent reads raises (spawned workers import their own, unpatched)."""
    def refuse(*args):
        raise AssertionError("the parent process loaded data")
    monkeypatch.setattr(classification, "_load", refuse)
    monkeypatch.setattr(digits, "_arrays", refuse)


@pytest.mark.parametrize("scheme, start", [("zero", {}), ("cse", {"cls": CE})])
def test_a_multiprocessing_search_loads_nothing_in_the_parent(tmp_path, parent_without_data, scheme, start):
    config = SearchConfig(scheme=scheme, start=start or SearchConfig().start, population=2, max_evaluations=3,
                          offspring_per_generation=2, final_seeds=1, final_top=1,
                          task_options={"proxy_epochs": 1, "final_epochs": 1})
    result = run_search(config, str(tmp_path / "run"), workers=2, map_kind="multiprocessing", progress=False)
    assert result["evaluations"] == 3 and [r["name"] for r in result["rows"]] == ["top1", "ce"]
    records = [json.loads(line) for line in (tmp_path / "run" / "evaluations.jsonl").read_text().splitlines()]
    assert all(set(r["losses"]) == {"cls"} for r in records if r["status"] == "ok")
