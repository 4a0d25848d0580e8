"""A record kept past the checkpoint is reused only with a usable score and time: an edited
value (NaN, a string, a negative time) is set aside and the child trained again."""
import json
import math
import shutil

import pytest

from gp_loss.evolution.config import SearchConfig
from gp_loss.evolution.run_search import run_search

TINY = dict(population=3, max_evaluations=6, offspring_per_generation=3, final_seeds=1, final_top=1,
            task_options={"proxy_epochs": 1, "final_epochs": 1})


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    path = tmp_path_factory.mktemp("kept") / "run"
    run_search(SearchConfig(**TINY), str(path), progress=False)
    return path


@pytest.mark.parametrize("field, value", [
    ("fitness", math.nan), ("fitness", math.inf), ("fitness", "0.9"), ("fitness", True),
    ("seconds", math.inf), ("seconds", -1.0),
])
def test_a_kept_record_with_an_unusable_value_is_set_aside_and_retrained(finished, tmp_path, field, value):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    # As if killed while the last generation was recorded: the previous checkpoint covers 3 lines.
    (run / "checkpoint.json").unlink()
    (run / "final.json").unlink()
    lines = (run / "evaluations.jsonl").read_text().splitlines()
    edited = json.dumps({**json.loads(lines[3]), field: value}, sort_keys=True)
    (run / "evaluations.jsonl").write_text("\n".join(lines[:3] + [edited] + lines[4:]) + "\n")
    run_search(SearchConfig(**TINY), str(run), resume=True, progress=False)
    after = [json.loads(line) for line in (run / "evaluations.jsonl").read_text().splitlines()]
    assert [r["evaluation"] for r in after] == list(range(1, 7))
    assert after[3]["fitness"] == json.loads(lines[3])["fitness"]  # trained again: the real score
    aside = [json.loads(line) for line in (run / "evaluations.set_aside.jsonl").read_text().splitlines()]
    assert aside[0]["text"] == edited and f"unusable {field}" in aside[0]["reason"]
