"""The run directory: atomic JSON and CSV, JSONL lines that survive a kill, clear errors."""
import csv
import json

import pytest

from gp_loss.errors import GpLossError
from gp_loss.runtime.run_dir import RunDir


def test_jsonl_appends_and_ignores_a_cut_line(tmp_path):
    run = RunDir(tmp_path / "run")
    run.prepare()
    assert run.read_jsonl("log.jsonl") == [] and not run.exists("log.jsonl")
    run.append_jsonl("log.jsonl", {"n": 1, "fitness": 0.5})
    run.append_jsonl("log.jsonl", {"n": 2, "fitness": 0.25})
    with open(run.file("log.jsonl"), "a") as f:
        f.write('{"n": 3, "fitn')  # killed mid-line
    assert [r["n"] for r in run.read_jsonl("log.jsonl")] == [1, 2]
    run.rewrite_jsonl("log.jsonl", run.read_jsonl("log.jsonl")[:1])
    assert run.file("log.jsonl").read_text() == '{"fitness": 0.5, "n": 1}\n'


def test_prepare_makes_the_directory_and_an_unwritable_one_is_a_user_error(tmp_path):
    RunDir(tmp_path / "a" / "b").prepare()
    assert (tmp_path / "a" / "b").is_dir() and not any((tmp_path / "a" / "b").iterdir())
    (tmp_path / "file").write_text("x")
    with pytest.raises(GpLossError, match="--out"):
        RunDir(tmp_path / "file" / "run").prepare()


def test_json_round_trip_and_errors_name_the_file(tmp_path):
    run = RunDir(tmp_path)
    assert run.read_json("final.json") is None
    run.file("final.json").write_text("{oops")
    with pytest.raises(GpLossError, match="final.json"):
        run.read_json("final.json")
    run.write_json("final.json", {"b": 1, "a": [1.5]})
    assert json.loads(run.file("final.json").read_text()) == {"a": [1.5], "b": 1}
    assert run.read_json("final.json") == {"a": [1.5], "b": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["final.json"]  # no temporary file left


def test_csv_has_a_column_for_every_key(tmp_path):
    run = RunDir(tmp_path)
    run.write_csv("rows.csv", [])
    assert not run.exists("rows.csv")
    run.write_csv("rows.csv", [{"gen": 0, "best": 0.5}, {"gen": 1, "best": 0.6, "extra": 3}])
    rows = list(csv.DictReader(run.file("rows.csv").open()))
    assert rows == [{"gen": "0", "best": "0.5", "extra": ""}, {"gen": "1", "best": "0.6", "extra": "3"}]


def test_write_text_replaces_the_file(tmp_path):
    run = RunDir(tmp_path)
    run.write_text("a.py", "x = 1\n")
    run.write_text("a.py", "x = 2\n")
    assert run.file("a.py").read_text() == "x = 2\n"
