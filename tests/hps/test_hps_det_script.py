"""runs/hps_det.py: a tiny search writes its files and the comparison, resumes, and refuses bad input in one line."""
import csv
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "runs" / "hps_det.py"
# One bin (levels pooled, 1 aspect bin): d = 1, an initial design of 2 points; 1-step trainings.
TINY = ["--bins", "1", "--n-init", "2", "--budget", "3", "--proxy-steps", "1", "--final-steps", "1",
        "--canvases", "8", "--batch-size", "2", "--warmup-steps", "1", "--device", "cpu", "--threads", "1",
        "--final-seeds", "1"]


@pytest.fixture(scope="module")
def cli():
    spec = importlib.util.spec_from_file_location("hps_det_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # not "__main__": nothing runs
    return module


def _user_error(cli, capsys, argv):
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err
    return err


def test_a_tiny_search_writes_its_files_and_the_comparison_and_resumes(cli, capsys, tmp_path):
    out = tmp_path / "run"
    assert cli.main(["--out", str(out)] + TINY) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "dynamic assignment, s = [" in printed and "default assignment (fcos)" in printed and "gain:" in printed
    for name in ("config.json", "checkpoint.json", "history.csv", "history.json", "best.json", "final.json",
                 "ap_over_iterations.png"):
        assert (out / name).is_file(), name
    with open(out / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and set(rows[0]) >= {"evaluation", "AP", "best_AP", "s0"}
    points = [int(r["s0"]) for r in rows]
    assert len(set(points)) == 3 and all(1 <= p <= 25 for p in points)
    best = json.loads((out / "best.json").read_text())
    assert best["layout"] == "(1)" and best["positives"][0] in points
    final = json.loads((out / "final.json").read_text())
    assert final["dynamic"]["positives"] == best["positives"] and final["seeds"] == [0]
    assert final["gain"] == final["dynamic"]["mean"] - final["default"]["mean"]
    assert (out / "ap_over_iterations.png").read_bytes()[:4] == b"\x89PNG"

    # Resume with a larger budget: the same 3 points first, then one more.
    assert cli.main(["--resume", str(out), "--budget", "4"]) == 0, capsys.readouterr().err
    history = json.loads((out / "history.json").read_text())["evaluations"]
    assert [e["positives"][0] for e in history[:3]] == points and len(history) == 4
    assert history[3]["positives"][0] not in points

    # A setting that is not resumable must match.
    err = _user_error(cli, capsys, ["--resume", str(out), "--model", "retinanet"])
    assert "model" in err and "differs" in err
    # Starting over into the run is refused.
    assert "already holds a run" in _user_error(cli, capsys, ["--out", str(out)] + TINY)


def test_the_default_budget_is_the_initial_design_and_ten_more(cli, capsys, tmp_path):
    out = tmp_path / "run"
    at = TINY.index("--n-init")
    assert TINY[at + 2] == "--budget"
    argv = TINY[:at] + TINY[at + 4:]  # without --n-init 2 --budget 3
    assert cli.main(["--out", str(out)] + argv) == 0, capsys.readouterr().err
    # One bin: d = 1, a design of 2(d + 1) = 4 points, then 10 proposals.
    assert len(json.loads((out / "history.json").read_text())["evaluations"]) == 4 + 10


@pytest.mark.parametrize("argv,message", [
    (["--model", "fasterrcnn"], "--model must be one of fcos, retinanet"),
    (["--bins", "3,3"], "bins '3,3'"),
    (["--budget", "1"], "smaller than the initial design"),
    (["--n-init", "1"], "n_init must be at least d + 1"),
    (["--strategy", "grid"], "--strategy must be one of"),
    (["--loss", "nope"], "--loss must be one of"),
    (["--data", "/nonexistent.json"], "/nonexistent.json"),
    (["--proxy-steps", "0"], "proxy_steps must be in"),
    (["--device", "gpu"], "device 'gpu'"),
])
def test_bad_input_is_one_line_and_writes_nothing(cli, capsys, tmp_path, argv, message):
    out = tmp_path / "r"
    err = _user_error(cli, capsys, ["--out", str(out), "--bins", "1"] + argv if argv[0] != "--bins" else
                      ["--out", str(out)] + argv)
    assert message in err, err
    assert not out.exists()


def test_resume_of_a_directory_without_a_run(cli, capsys, tmp_path):
    assert "no run to resume" in _user_error(cli, capsys, ["--resume", str(tmp_path)])
