"""What a run directory holds (run_kind) and the scripts' use of it: settings, claims, the lock."""
import argparse
import json

import pytest

from gp_loss.errors import GpLossError
from gp_loss.runtime.run_dir import RunDir, claim_new_run, describe_run, run_kind, script_run, script_settings


@pytest.mark.parametrize("config,files,kind", [
    ({"task": "segmentation", "scheme": "zero"}, [], "search"),
    ({"task": {"model": "fcos"}, "run": {"bins": "default"}, "layout": "(3,3,3)"}, [], "hps-det"),
    ({"task": {"model": "retinanet"}, "run": {"rounds": 3, "samples": 4}}, [], "pap"),
    (None, ["logbook.csv"], "search"),
    (None, ["history.csv"], "hps-det"),
    (None, ["theta.json"], "pap"),
    ("[" * 100_000, ["results.json"], "pap"),  # a damaged config.json: the files tell
    (None, ["checkpoint.json", "final.json"], None),  # written by several kinds
    (None, [], None),
])
def test_run_kind(tmp_path, config, files, kind):
    if config is not None:
        (tmp_path / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
    for name in files:
        (tmp_path / name).write_text("{}")
    assert run_kind(tmp_path) == kind
    assert run_kind(tmp_path / "missing") is None


def test_describe_run_names_a_search_by_its_task(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"task": "detection", "scheme": "cse"}))
    assert describe_run(tmp_path) == "a detection search (runs/search_detection.py)"
    assert describe_run(tmp_path / "missing") == "no run"


FLAGS = {"--seed": ("seed", int, 0, "seed")}


def _args(**given):
    return argparse.Namespace(**given)


def test_script_settings_creates_nothing_and_refuses_another_kind(tmp_path):
    out = tmp_path / "new"
    settings, where, resume = script_settings(_args(out=str(out)), {}, FLAGS, set(), "x", "pap")
    assert settings == {"task": {}, "run": {"seed": 0}} and where == out and not resume and not out.exists()
    (tmp_path / "config.json").write_text(json.dumps({"task": "segmentation", "scheme": "zero"}))
    with pytest.raises(GpLossError, match="holds a segmentation search .* cannot resume it"):
        script_settings(_args(resume=str(tmp_path)), {}, FLAGS, set(), "x", "pap")
    with pytest.raises(GpLossError, match="--out is empty"):
        script_settings(_args(out=" "), {}, FLAGS, set(), "x", "pap")


def test_a_new_run_takes_the_place_of_one_that_saved_nothing(tmp_path):
    run = RunDir(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"task": {}, "run": {"rounds": 1}}))
    claim_new_run(run, "pap")  # config.json alone: nothing of value
    (tmp_path / "checkpoint.json").write_text("{}")
    with pytest.raises(GpLossError, match="already holds a run: continue it with --resume"):
        claim_new_run(run, "pap")
    with pytest.raises(GpLossError, match="holds a PAP-Loss search"):
        claim_new_run(run, "hps-det")
    (tmp_path / "config.json").unlink()
    with pytest.raises(GpLossError, match=r"files of an earlier run \(checkpoint.json\)"):
        claim_new_run(run, "pap")


def test_script_run_holds_the_lock_and_checks_under_it(tmp_path):
    out = tmp_path / "run"
    with script_run(out, False, "pap") as run:
        assert run.path == out and "pid" in (out / ".lock").read_text()
        with pytest.raises(GpLossError, match="is in use by pid"):
            with script_run(out, True, "pap"):
                pass
    with script_run(out, True, "pap"):  # released
        pass


@pytest.mark.parametrize("value", ["2", 2.5, True, None, [1]])
def test_a_stored_setting_of_the_wrong_type_is_one_line(tmp_path, value):
    (tmp_path / "config.json").write_text(json.dumps({"task": {}, "run": {"rounds": 1, "seed": value}}))
    with pytest.raises(GpLossError, match="config.json: seed = .* is not an integer: the file was edited"):
        script_settings(_args(resume=str(tmp_path)), {}, FLAGS, set(), "x", "pap")
