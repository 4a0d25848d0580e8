"""A run directory is resumed exactly or not at all: configuration and evaluation records are
checked against the checkpoint, damaged or foreign lines are set aside (never dropped or
duplicated), stale files are never reused, and one process writes a run at a time."""
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from gp_loss.errors import GpLossError
from gp_loss.evolution.config import SearchConfig
from gp_loss.evolution.run_search import run_search
from gp_loss.runtime.run_dir import RunDir
from tests.helpers import ROOT

TINY = dict(population=3, max_evaluations=6, offspring_per_generation=3, final_seeds=1, final_top=1,
            task_options={"proxy_epochs": 1, "final_epochs": 1})


def tiny(**changes):
    return SearchConfig(**{**TINY, **changes})


def _json(path):
    return json.loads(path.read_text())


def _lines(run):
    return (run / "evaluations.jsonl").read_text().splitlines()


def _without_seconds(lines):
    return [{k: v for k, v in json.loads(line).items() if k not in ("seconds", "peak_memory_mib")}
            for line in lines]


def _files(run):
    return {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    path = tmp_path_factory.mktemp("integrity") / "run"
    run_search(tiny(), str(path), progress=False)
    return path


def _killed_in_last_generation(src, dst):
    """A copy of a finished run as if killed while its last generation was being recorded:
    the newest checkpoint covers generation 0 (3 lines); the 3 later lines are past it."""
    shutil.copytree(src, dst)
    (dst / "checkpoint.json").unlink()
    (dst / "final.json").unlink()
    assert _json(dst / "checkpoint.prev.json")["state"]["evaluation_lines"] == 3
    return dst


def test_the_checkpoint_holds_the_configuration_and_the_records_digest(finished):
    import hashlib
    state = _json(finished / "checkpoint.json")["state"]
    assert state["config"] == tiny().to_dict()
    text = (finished / "evaluations.jsonl").read_text()
    assert state["evaluations_sha256"] == hashlib.sha256(text.encode()).hexdigest()


def test_resume_under_an_edited_config_json_is_refused(finished, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    stored = _json(run / "config.json")
    stored["seed"] = 7
    stored["task_options"]["proxy_epochs"] = 2
    (run / "config.json").write_text(json.dumps(stored))
    before = _files(run)
    with pytest.raises(GpLossError) as err:
        run_search(SearchConfig.from_dict(stored), str(run), resume=True, progress=False)
    message = str(err.value)
    assert "seed: 0 -> 7" in message and '"proxy_epochs": 1' in message and '"proxy_epochs": 2' in message
    assert "checkpoint" in message
    assert _files(run) == before  # nothing written


def test_resume_with_a_raised_budget_in_config_json_is_allowed(finished, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    stored = _json(run / "config.json")
    stored["max_evaluations"] = 9
    (run / "config.json").write_text(json.dumps(stored))
    run_search(SearchConfig.from_dict(stored), str(run), resume=True, progress=False)
    assert len(_lines(run)) == 9
    assert [json.loads(line)["evaluation"] for line in _lines(run)] == list(range(1, 10))


def test_a_new_run_never_reuses_records_without_a_configuration(finished, tmp_path):
    run = tmp_path / "stale"
    run.mkdir()
    shutil.copy(finished / "evaluations.jsonl", run / "evaluations.jsonl")
    before = _files(run)
    with pytest.raises(GpLossError, match=r"files of an earlier run \(evaluations.jsonl\) but no config.json"):
        run_search(tiny(task_options={"proxy_epochs": 2, "final_epochs": 1}), str(run), progress=False)
    assert {k: v for k, v in _files(run).items() if k != ".lock"} == before


def test_resume_without_a_checkpoint_but_with_records_is_refused(finished, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    (run / "checkpoint.json").unlink()
    (run / "checkpoint.prev.json").unlink()
    with pytest.raises(GpLossError, match="6 line.*no checkpoint that covers them"):
        run_search(tiny(), str(run), resume=True, progress=False)


def test_a_run_killed_before_any_record_resumes_from_its_first_checkpoint(finished, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(finished / "config.json", run / "config.json")  # killed right after writing it
    run_search(tiny(), str(run), resume=True, progress=False)
    assert _without_seconds(_lines(run)) == _without_seconds(_lines(finished))


def test_a_cut_short_last_line_is_set_aside_and_retrained(finished, tmp_path):
    run = _killed_in_last_generation(finished, tmp_path / "run")
    lines = _lines(run)
    cut = lines[-1][: len(lines[-1]) // 2]
    (run / "evaluations.jsonl").write_text("\n".join(lines[:-1]) + "\n" + cut)
    run_search(tiny(), str(run), resume=True, progress=False)
    after = _lines(run)
    assert _without_seconds(after) == _without_seconds(_lines(finished))  # no loss, no duplicate
    assert after[3:5] == lines[3:5]  # the complete lines were reused, not retrained
    (aside,) = [json.loads(line) for line in (run / "evaluations.set_aside.jsonl").read_text().splitlines()]
    assert aside["line"] == 6 and aside["text"] == cut and "cut short" in aside["reason"]
    assert _json(run / "hall_of_fame.json") == _json(finished / "hall_of_fame.json")


def test_foreign_and_duplicate_lines_past_the_checkpoint_are_set_aside(finished, tmp_path, capsys):
    run = _killed_in_last_generation(finished, tmp_path / "run")
    lines = _lines(run)
    duplicate = json.dumps({**json.loads(lines[3]), "fitness": 0.0}, sort_keys=True)
    other_generation = json.dumps({**json.loads(lines[4]), "generation": 7}, sort_keys=True)
    garbage = "not json {"
    (run / "evaluations.jsonl").write_text("\n".join(lines[:4] + [duplicate, garbage, other_generation]
                                                     + lines[4:]) + "\n")
    run_search(tiny(), str(run), resume=True, progress=False)
    after = _lines(run)
    ids = [json.loads(line)["evaluation"] for line in after]
    assert ids == list(range(1, 7))
    assert _without_seconds(after) == _without_seconds(_lines(finished))
    aside = [json.loads(line) for line in (run / "evaluations.set_aside.jsonl").read_text().splitlines()]
    assert [a["line"] for a in aside] == [5, 6, 7]
    assert [a["text"] for a in aside] == [duplicate, garbage, other_generation]
    assert "second record of slot 0" in aside[0]["reason"]
    assert "not a JSON record" in aside[1]["reason"]
    assert "not an evaluation of generation 1" in aside[2]["reason"]
    err = capsys.readouterr().err
    assert err.count("set aside in evaluations.set_aside.jsonl") == 3


@pytest.mark.parametrize("damage, where", [
    (lambda lines: lines[:1] + lines[2:], "it has 5 of them"),              # a covered line removed
    (lambda lines: [lines[0].replace('"fitness": ', '"fitness": 0.0001 + ')] + lines[1:], "line 1 is damaged"),
    (lambda lines: [lines[0].replace('"slot": 0', '"slot": 1')] + lines[1:], "changed"),
    (lambda lines: lines[:2], "it has 2 of them"),
])
def test_changed_records_under_the_checkpoint_refuse_the_resume(finished, tmp_path, damage, where):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    (run / "evaluations.jsonl").write_text("\n".join(damage(_lines(run))) + "\n")
    before = _files(run)
    with pytest.raises(GpLossError, match=f"does not hold the 6 evaluation record.*{where}"):
        run_search(tiny(max_evaluations=9), str(run), resume=True, progress=False)
    assert {k: v for k, v in _files(run).items() if k not in (".lock", "config.json")} == \
        {k: v for k, v in before.items() if k not in (".lock", "config.json")}


def test_a_checkpoint_of_another_state_version_is_refused(finished, tmp_path):
    from gp_loss.runtime.checkpoint import save_checkpoint
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    state = _json(run / "checkpoint.json")["state"]
    save_checkpoint(run, {**state, "version": 1})
    with pytest.raises(GpLossError, match="another version of gp-loss.*start a new run"):
        run_search(tiny(), str(run), resume=True, progress=False)


HOLD = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {root!r})
    from gp_loss.runtime.run_dir import RunDir
    with RunDir(sys.argv[1]).lock():
        print("held", flush=True)
        time.sleep(120)
""")


def _holder(path):
    proc = subprocess.Popen([sys.executable, "-c", HOLD.format(root=str(ROOT)), str(path)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_is_refused_naming_the_holder(finished, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    holder = _holder(run)
    try:
        before = _files(run)
        with pytest.raises(GpLossError, match=f"in use by pid {holder.pid} on .*wait for it"):
            run_search(tiny(max_evaluations=9), str(run), resume=True, progress=False)
        with pytest.raises(GpLossError, match=f"in use by pid {holder.pid}"):
            run_search(tiny(), str(run), progress=False)
        assert _files(run) == before
    finally:
        holder.kill()
        holder.wait()


def test_the_lock_of_a_killed_writer_is_free(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    holder = _holder(run)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    with RunDir(run).lock():  # the operating system released it with the process
        assert f"pid {os.getpid()}" in (run / ".lock").read_text()
    assert (run / ".lock").read_text() == ""  # released: it names nobody


def test_a_resume_interrupted_at_once_keeps_every_finished_record(finished, tmp_path, monkeypatch):
    """Interrupted, resumed, and killed again before it bred anything: the records past the checkpoint
    are still on disk, and the next resume reuses them (none trained again, none lost)."""
    from gp_loss.evolution.search import Search

    run = _killed_in_last_generation(finished, tmp_path / "run")
    lines = _lines(run)
    (run / "evaluations.jsonl").write_text("\n".join(lines[:-1]) + "\n" + "garbage {\n")

    def killed(self, require=False):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(Search, "prepare_workers", killed)
        with pytest.raises(KeyboardInterrupt):
            run_search(tiny(), str(run), resume=True, progress=False)
    assert _lines(run) == lines[:-1]  # only the unusable line left, and only after it was set aside
    (aside,) = [json.loads(line) for line in (run / "evaluations.set_aside.jsonl").read_text().splitlines()]
    assert aside["text"] == "garbage {"
    run_search(tiny(), str(run), resume=True, progress=False)
    after = _lines(run)
    assert after[:5] == lines[:5]  # reused where they stood, byte for byte
    assert _without_seconds(after) == _without_seconds(_lines(finished))


def test_a_kept_record_bred_differently_on_resume_is_set_aside_before_it_leaves(finished, tmp_path):
    run = _killed_in_last_generation(finished, tmp_path / "run")
    lines = _lines(run)
    # Slot 0 of the interrupted generation as if another child had been trained there: breeding makes
    # the real one again, so that record and every one after it must make way for the new training.
    stale = json.loads(lines[3])
    stale["formulas"] = {name: "neg(x)" for name in stale["formulas"]}
    stale_text = json.dumps(stale, sort_keys=True)
    (run / "evaluations.jsonl").write_text("\n".join(lines[:3] + [stale_text] + lines[4:5]) + "\n")
    run_search(tiny(), str(run), resume=True, progress=False)
    after = _lines(run)
    assert _without_seconds(after) == _without_seconds(_lines(finished))
    aside = [json.loads(line) for line in (run / "evaluations.set_aside.jsonl").read_text().splitlines()]
    assert [a["text"] for a in aside] == [stale_text, lines[4]]
    assert [a["reason"] for a in aside] == [
        f"moved: generation 1 went otherwise on resume from slot 0 on; written again after its new "
        f"record if slot {s} is reused" for s in (0, 1)]
    assert after[4] == lines[4]  # slot 1's record, reused and written again after slot 0's


def test_a_refused_setting_writes_nothing(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(GpLossError, match="--workers must be at least 1"):
        run_search(tiny(), str(run), workers=0, progress=False)
    assert not run.exists()


def test_a_run_that_stopped_before_its_first_training_leaves_its_out_usable(tmp_path, monkeypatch, capsys):
    from gp_loss.evolution.search import Search

    run = tmp_path / "run"

    def data_error(self, require=False):
        raise GpLossError("the data cannot be read")

    with monkeypatch.context() as m:
        m.setattr(Search, "prepare_workers", data_error)
        with pytest.raises(GpLossError, match="the data cannot be read"):
            run_search(tiny(), str(run), progress=False)
    assert (run / "config.json").exists()
    # Fixed settings, the same --out: started anew, not refused as "already holds a run".
    run_search(tiny(seed=3), str(run), progress=False)
    assert _json(run / "config.json")["seed"] == 3
    assert "stopped before its first training; starting it anew" in capsys.readouterr().err
    # A run with trainings on disk is never started anew.
    with pytest.raises(GpLossError, match="already holds a run"):
        run_search(tiny(seed=4), str(run), progress=False)


def test_another_scripts_run_is_neither_resumed_nor_replaced(tmp_path):
    run = tmp_path / "hps"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"task": {"model": "fcos"}, "run": {"bins": "default"}}))
    (run / "checkpoint.json").write_text("{}")
    (run / "history.json").write_text("[]")
    before = _files(run)
    with pytest.raises(GpLossError, match=r"holds an HPS-Det search \(runs/hps_det.py\), not an evolutionary "
                                          r"loss search"):
        run_search(tiny(), str(run), resume=True, progress=False)
    with pytest.raises(GpLossError, match=r"holds an HPS-Det search \(runs/hps_det.py\): choose another --out"):
        run_search(tiny(), str(run), progress=False)
    assert {k: v for k, v in _files(run).items() if k != ".lock"} == before
