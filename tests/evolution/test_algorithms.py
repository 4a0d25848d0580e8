"""The evolution loops keep to the budget from generation 0 on."""
import json

from gp_loss.evolution.config import SearchConfig
from gp_loss.evolution.run_search import run_search


def test_cse_generation_zero_keeps_to_a_budget_below_the_population(tmp_path):
    config = SearchConfig(scheme="cse", population=8, max_evaluations=3, offspring_per_generation=2,
                          final_seeds=1, final_top=1, task_options={"proxy_epochs": 1, "final_epochs": 1})
    run_search(config, str(tmp_path / "r"), progress=False)
    lines = (tmp_path / "r" / "evaluations.jsonl").read_text().splitlines()
    assert len(lines) <= 3
    assert json.loads((tmp_path / "r" / "final.json").read_text())["evaluations"] <= 3
