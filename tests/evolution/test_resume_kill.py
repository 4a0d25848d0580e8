"""A search killed with SIGKILL and resumed ends exactly like one that ran through."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gp_loss.evolution import script
from tests.helpers import ROOT

pytestmark = pytest.mark.slow

SCRIPT = ROOT / "runs" / "search_classification.py"
ARGS = ["--population", "4", "--offspring", "3", "--evaluations", "12", "--final-seeds", "1",
        "--proxy-epochs", "1", "--final-epochs", "1", "--no-progress"]


def _cli():
    import importlib.util
    spec = importlib.util.spec_from_file_location("search_classification_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_script(argv):
    cli = _cli()
    return script.main(cli.__doc__, cli.DEFAULTS, "out/unused", cli.TASK_FLAGS, argv)


def _json(path):
    return json.loads(path.read_text())


def _lines(run):
    path = run / "evaluations.jsonl"
    if not path.exists():
        return 0
    return sum(1 for line in path.read_text().split("\n")[:-1])  # complete lines only


def _checkpointed_lines(run):
    try:
        return _json(run / "checkpoint.json")["state"]["evaluation_lines"]
    except (OSError, ValueError, KeyError):  # being replaced right now
        return None


def _kill_mid_generation(run, log):
    """Start the script and SIGKILL it once two checkpoints exist and a generation is half recorded."""
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, str(SCRIPT), "--out", str(run)] + ARGS,
                                stdout=out, stderr=subprocess.STDOUT, cwd=run.parent)
    deadline = time.monotonic() + 300
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if (run / "checkpoint.prev.json").exists():
                done = _checkpointed_lines(run)
                if done is not None and _lines(run) > done:
                    os.kill(proc.pid, signal.SIGKILL)
                    break
            time.sleep(0.005)
    finally:
        if proc.poll() is None and time.monotonic() >= deadline:
            proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"the run was not killed mid-way:\n{Path(log).read_text()}"
    assert not (run / "final.json").exists()


def _records(run):
    return [{k: v for k, v in json.loads(line).items() if k not in ("seconds", "peak_memory_mib")}
            for line in (run / "evaluations.jsonl").read_text().splitlines()]


def _assert_same_run(run, reference):
    assert _json(run / "hall_of_fame.json")["hall_of_fame"] == _json(reference / "hall_of_fame.json")["hall_of_fame"]
    assert _json(run / "final.json")["rows"] == _json(reference / "final.json")["rows"]
    assert _records(run) == _records(reference)
    state, ref = _json(run / "checkpoint.json")["state"], _json(reference / "checkpoint.json")["state"]
    for key in ("generation", "evaluations", "evaluation_lines", "children", "reused", "random_state",
                "population", "cache"):
        assert state[key] == ref[key], key


def test_killed_run_resumes_to_the_same_result(tmp_path, capsys):
    reference = tmp_path / "reference"
    assert run_script(["--out", str(reference)] + ARGS) == 0

    killed = tmp_path / "killed"
    _kill_mid_generation(killed, tmp_path / "killed.log")
    corrupt = tmp_path / "corrupt"
    shutil.copytree(killed, corrupt)
    capsys.readouterr()

    assert run_script(["--resume", str(killed), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "resumed at generation" in out
    _assert_same_run(killed, reference)

    # The newest checkpoint cut short: the previous one is used, with a warning.
    (corrupt / "checkpoint.json").write_text('{"sha256": "0", "state": {"generation": ')
    assert run_script(["--resume", str(corrupt), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "warning" in err and "checkpoint.json is corrupt or truncated" in err
    _assert_same_run(corrupt, reference)
