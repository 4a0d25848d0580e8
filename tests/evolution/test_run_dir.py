"""The run directory: evaluations survive a cut line, clear errors for unwritable paths."""
import csv
import json

import pytest

from gp_loss.errors import GpLossError
from gp_loss.evolution.run_dir import RunDir


def test_evaluations_append_and_ignore_a_cut_line(tmp_path):
    run = RunDir(tmp_path / "run")
    run.prepare()
    assert run.read_evaluations() == [] and not run.has_run()
    run.append_evaluation({"evaluation": 1, "fitness": 0.5})
    run.append_evaluation({"evaluation": 2, "fitness": 0.25})
    with open(run.evaluations, "a") as f:
        f.write('{"evaluation": 3, "fitn')  # killed mid-line
    assert [r["evaluation"] for r in run.read_evaluations()] == [1, 2]
    run.rewrite_evaluations(run.read_evaluations()[:1])
    assert run.evaluations.read_text() == '{"evaluation": 1, "fitness": 0.5}\n'


def test_prepare_unwritable_is_a_user_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(GpLossError, match="--out"):
        RunDir(tmp_path / "file" / "run").prepare()


def test_read_json_errors_name_the_file(tmp_path):
    run = RunDir(tmp_path)
    assert run.read_json(run.final) is None
    run.final.write_text("{oops")
    with pytest.raises(GpLossError, match="final.json"):
        run.read_json(run.final)
    run.write_json(run.final, {"b": 1, "a": [1.5]})
    assert json.loads(run.final.read_text()) == {"a": [1.5], "b": 1}


def test_logbook_has_a_column_for_every_key(tmp_path):
    run = RunDir(tmp_path)
    run.write_logbook([])
    assert not run.logbook.exists()
    run.write_logbook([{"gen": 0, "best": 0.5}, {"gen": 1, "best": 0.6, "extra": 3}])
    rows = list(csv.DictReader(run.logbook.open()))
    assert rows == [{"gen": "0", "best": "0.5", "extra": ""}, {"gen": "1", "best": "0.6", "extra": "3"}]
