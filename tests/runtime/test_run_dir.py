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


def test_json_with_an_integer_too_long_to_convert_is_a_user_error(tmp_path):
    run = RunDir(tmp_path)
    run.file("final.json").write_text('{"n": ' + "9" * 5000 + "}")
    with pytest.raises(GpLossError, match="final.json is not readable JSON"):
        run.read_json("final.json")


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


def test_jsonl_lines_tell_damaged_and_cut_lines_apart(tmp_path):
    run = RunDir(tmp_path)
    run.append_jsonl_text("log.jsonl", ['{"n": 1}', "[1, 2]", "oops", '{"n": 1e999999}'])
    with open(run.file("log.jsonl"), "a") as f:
        f.write('{"n": 5')  # cut short: no newline
    lines = run.read_jsonl_lines("log.jsonl")
    assert [(l.number, l.record, l.complete) for l in lines] == [
        (1, {"n": 1}, True), (2, None, True), (3, None, True), (4, {"n": float("inf")}, True), (5, None, False)]
    assert [l.sound for l in lines] == [True, False, False, True, False]
    assert lines[4].text == '{"n": 5'
    # A complete line that is not JSON is damaged too, though complete.
    run.rewrite_jsonl_text("log.jsonl", ['{"n": 1}', '{"n": 2'])
    assert [(l.sound, l.complete) for l in run.read_jsonl_lines("log.jsonl")] == [(True, True), (False, True)]


def test_jsonl_digest_runs_over_the_lines_as_written(tmp_path):
    import hashlib
    from gp_loss.runtime.run_dir import jsonl_digest
    run = RunDir(tmp_path)
    run.append_jsonl("log.jsonl", {"b": 1, "a": 2})
    digest = jsonl_digest([])
    digest.update(b'{"a": 2, "b": 1}\n')
    assert digest.hexdigest() == hashlib.sha256(run.file("log.jsonl").read_bytes()).hexdigest()
    assert jsonl_digest(['{"a": 2, "b": 1}']).hexdigest() == digest.hexdigest()
