"""HPS-Det (gp_loss.tasks.detection.hps_search, runs/hps_det.py): a tiny search writes its files and the
comparison, resumes, and refuses bad input in one line."""
import ast
import csv
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from gp_loss.errors import GpLossError
from gp_loss.runtime.parallel import open_backend
from gp_loss.tasks.detection import hps_results, hps_search

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "runs" / "hps_det.py"
# One bin (levels pooled, 1 aspect bin): d = 1, an initial design of 2 points; 1-step trainings.
TINY = ["--bins", "1", "--n-init", "2", "--budget", "3", "--proxy-steps", "1", "--final-steps", "1",
        "--canvases", "8", "--batch-size", "2", "--warmup-steps", "1", "--device", "cpu", "--threads", "1",
        "--final-seeds", "1"]


@pytest.fixture(scope="module")
def cli():
    return hps_search


def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def _user_error(cli, capsys, argv):
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err
    return err


def test_a_tiny_search_writes_its_files_and_the_comparison_and_resumes(cli, capsys, tmp_path, monkeypatch):
    out = tmp_path / "run"
    # A refused setting leaves nothing behind, and a run stopped before it saved anything holds nothing
    # of value: the same --out serves the next run.
    assert "--threads must be at most" in _user_error(cli, capsys, ["--out", str(out)] + TINY + ["--threads", "9999"])
    assert not out.exists()
    with monkeypatch.context() as patch:
        patch.setattr(hps_results.ProxyObjective, "__call__", _interrupt)
        assert cli.main(["--out", str(out)] + TINY) == 130
    assert f"--resume {out}" in capsys.readouterr().err and (out / "config.json").is_file()
    assert cli.main(["--out", str(out)] + TINY) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "dynamic assignment, s = [" in printed and "default assignment (fcos)" in printed and "gain:" in printed
    # progress: a line per proxy training and per final training, as each ends
    assert [line.split(" |")[0] for line in printed.splitlines() if line.startswith("eval ")] == \
        ["eval 1/3", "eval 2/3", "eval 3/3"]
    assert "final: seed 1/1 of the dynamic assignment | AP " in printed
    assert "final: seed 1/1 of the default assignment | AP " in printed
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
    # one seed: a paired difference, but no spread to build an interval from
    assert final["reference"] == "default" and "vs_reference" not in final["default"]
    assert final["dynamic"]["vs_reference"] == {"baseline": "default", "delta": pytest.approx(final["gain"]),
                                                "ci95": None, "verdict": "no clear difference"}
    assert "[one seed: no interval] no clear difference from default" in printed
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
    (["--threads", "100000"], "--threads must be at most 256, got 100000"),
    (["--final-seeds", "100000000"], "--final-seeds must be at most 1000, got 100000000"),
    (["--workers", "0"], "--workers must be at least 1"),
    (["--workers", "100000"], "is more worker processes than this machine can hold"),
    (["--seed", "-1"], "--seed must be in [0, 2**32 - 1]"),
])
def test_bad_input_is_one_line_and_writes_nothing(cli, capsys, tmp_path, argv, message):
    out = tmp_path / "r"
    err = _user_error(cli, capsys, ["--out", str(out), "--bins", "1"] + argv if argv[0] != "--bins" else
                      ["--out", str(out)] + argv)
    assert message in err, err
    assert not out.exists()


def test_resume_of_a_directory_without_a_run(cli, capsys, tmp_path):
    assert "no run to resume" in _user_error(cli, capsys, ["--resume", str(tmp_path)])


def test_an_error_naming_a_hostile_path_shows_its_control_characters_as_escapes(cli, capsys, tmp_path):
    err = _user_error(cli, capsys, ["--resume", str(tmp_path / "a\x1b]52;c;ZXZpbA==\x07\u202eb")])
    assert "no run to resume" in err and "\\x1b]52" in err and not any(c in err for c in "\x1b\x07\u202e")


@pytest.mark.parametrize("where,message", [
    ("file", "is a file, not a directory"),
    ("file/run", "is not writable"),
    ("/proc/gp-loss-test-run", "is not writable"),
])
def test_an_output_directory_that_cannot_be_made_is_one_line(cli, capsys, tmp_path, where, message):
    (tmp_path / "file").write_text("x")
    out = where if where.startswith("/") else str(tmp_path / where)
    assert message in _user_error(cli, capsys, ["--out", out] + TINY)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through directory permissions")
def test_an_unwritable_output_directory_is_one_line(cli, capsys, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert "is not writable" in _user_error(cli, capsys, ["--out", str(locked / "run")] + TINY)
    finally:
        locked.chmod(0o700)


@pytest.mark.parametrize("config,files,holds", [
    ({"task": "segmentation", "scheme": "zero", "seed": 0}, ["evaluations.jsonl"],
     "holds a segmentation search (runs/search_segmentation.py), not an HPS-Det search"),
    ({"task": {"model": "retinanet"}, "run": {"rounds": 3, "strategy": "ppo"}}, ["results.json"],
     "holds a PAP-Loss search (runs/search_pap.py), not an HPS-Det search"),
    (None, ["theta.json", "checkpoint.json"], "holds a PAP-Loss search (runs/search_pap.py)"),
])
def test_resuming_a_run_of_another_kind_says_what_it_holds(cli, capsys, tmp_path, config, files, holds):
    if config is not None:
        (tmp_path / "config.json").write_text(json.dumps(config))
    for name in files:
        (tmp_path / name).write_text("{}")
    err = _user_error(cli, capsys, ["--resume", str(tmp_path)])
    assert holds in err and "cannot resume it" in err, err
    assert "--strategy" not in err and "unreadable" not in err
    # a new run refuses it too, saying what it holds
    assert holds.split(", not")[0] in _user_error(cli, capsys, ["--out", str(tmp_path)] + TINY)


def test_a_second_process_on_a_running_directory_is_refused_naming_the_holder(cli, capsys, tmp_path, monkeypatch):
    out = tmp_path / "run"
    training, release = threading.Event(), threading.Event()

    def held(self, s):  # the first run's first proxy training: it waits, holding the directory
        training.set()
        release.wait(60)
        raise KeyboardInterrupt

    monkeypatch.setattr(hps_results.ProxyObjective, "__call__", held)
    first = threading.Thread(target=cli.main, args=(["--out", str(out)] + TINY,))
    first.start()
    try:
        assert training.wait(60)
        capsys.readouterr()
        for argv in (["--out", str(out)] + TINY, ["--resume", str(out)]):
            err = _user_error(cli, capsys, argv)
            assert f"is in use by pid {os.getpid()} on {socket.gethostname()}" in err, err
    finally:
        release.set()
        first.join(60)


def test_every_default_training_failing_stops_the_comparison(tmp_path, monkeypatch):
    def training(job):
        options, _, seed, _, _ = job
        failed = options["assignment"] == "default" or seed == 1
        return {"seed": seed, "score": 0.0 if failed else 0.25, "status": "error" if failed else "ok",
                "reason": "ValueError: boxes are not finite" if failed else "", "metrics": {}, "seconds": 0.1}

    monkeypatch.setattr(hps_results, "final_training", training)
    options = {"metric": "AP", "final_steps": 1}
    run = {"seed": 0, "final_seeds": 2, "loss": "torchvision", "device": "cpu", "threads": 1}
    with open_backend("serial") as backend, pytest.raises(GpLossError) as err:
        hps_results.compare(tmp_path, options, run, [3], "AP", backend)
    assert "every final training of the default assignment failed" in str(err.value)
    assert "ValueError: boxes are not finite" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "final.json").exists()

    # A searched s whose every training failed is reported as failed, with no gain taken from its zeros.
    monkeypatch.setattr(hps_results, "final_training", lambda job: {**training(job), **(
        {"score": 0.0, "status": "non-finite", "reason": "loss is nan"} if job[0]["assignment"] == "dynamic" else
        {"score": 0.3, "status": "ok", "reason": ""})})
    with open_backend("serial") as backend:
        report = hps_results.compare(tmp_path, options, run, [3], "AP", backend)
    assert report["dynamic"]["failed"] and report["gain"] is None and not report["default"]["failed"]
    # its zeros are scored as failures are in every final comparison: below the default on every seed
    assert report["dynamic"]["vs_reference"]["verdict"] == "worse"


# AP of each final training by (assignment, seed): the searched s above the default on every seed
FINAL_AP = {("dynamic", 0): 0.30, ("dynamic", 1): 0.33, ("dynamic", 2): 0.31,
            ("default", 0): 0.25, ("default", 1): 0.27, ("default", 2): 0.28}


def test_the_final_comparison_gives_the_paired_difference_its_interval_and_verdict(cli, capsys, tmp_path,
                                                                                  monkeypatch):
    from gp_loss.metrics.paired import paired_comparison

    def training(job):
        options, _, seed, _, _ = job
        return {"seed": seed, "score": FINAL_AP[options["assignment"], seed], "status": "ok", "reason": "",
                "metrics": {}, "seconds": 0.1}

    monkeypatch.setattr(hps_results, "final_training", training)
    monkeypatch.setattr(hps_results.ProxyObjective, "__call__", lambda self, s: 0.1 + 0.001 * s[0])
    out = tmp_path / "run"
    argv = ["--out", str(out)] + TINY[:-1] + ["3"]
    assert argv[-2] == "--final-seeds"
    assert cli.main(argv) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    final = json.loads((out / "final.json").read_text())
    expected = paired_comparison([FINAL_AP["dynamic", s] for s in range(3)],
                                 [FINAL_AP["default", s] for s in range(3)])
    assert final["reference"] == "default" and final["seeds"] == [0, 1, 2]
    vs = final["dynamic"]["vs_reference"]
    assert vs["baseline"] == "default" and vs["verdict"] == expected["verdict"] == "better"
    assert vs["delta"] == pytest.approx(expected["delta"]) and vs["ci95"] == pytest.approx(expected["ci95"])
    assert 0 < vs["ci95"][0] < vs["delta"] < vs["ci95"][1]
    line = next(line for line in printed.splitlines() if line.startswith("  vs default, paired"))
    assert line.endswith(f"+4.67 [{100 * vs['ci95'][0]:+.2f}, {100 * vs['ci95'][1]:+.2f}] better than default")
    # the other figures are as before: the means and the gain over the default
    assert final["gain"] == pytest.approx(0.94 / 3 - 0.80 / 3) and "gain:" in printed


def test_a_data_error_is_one_line_before_anything_is_created(cli, capsys, tmp_path):
    import numpy as np
    from PIL import Image

    images, annotations = [], []
    for i in (1, 2, 3):
        Image.fromarray(np.full((40, 40, 3), 60 * i, dtype=np.uint8)).save(tmp_path / f"img{i}.png")
        images.append({"id": i, "file_name": f"img{i}.png", "height": 40, "width": 40})
        annotations.append({"id": 10 * i, "image_id": i, "category_id": 1, "bbox": [4, 4, 20, 20], "area": 400,
                            "iscrowd": 0})
    annotations[1]["bbox"] = [1e308, 1e308, 1e308, 1e308]  # finite, but inf once scaled: every training would fail
    data = tmp_path / "instances.json"
    data.write_text(json.dumps({"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "a"}]}))
    out = tmp_path / "run"
    err = _user_error(cli, capsys, ["--out", str(out), "--data", str(data)] + TINY)
    assert str(data) in err and "bbox" in err, err
    assert not out.exists()


def test_the_script_runs_the_search_and_documents_it(tmp_path):
    """runs/hps_det.py is the package's main: its summary, its exit status."""
    script_doc = ast.get_docstring(ast.parse(SCRIPT.read_text(encoding="utf-8")), clean=False)
    assert script_doc.split("\n\n")[0] == hps_search.__doc__.split("\n\n")[0]  # one summary; --help prints the rest
    proc = subprocess.run([sys.executable, str(SCRIPT), "--seed", "-1", "--out", str(tmp_path / "r")],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == "error: --seed must be in [0, 2**32 - 1], got -1\n", proc.stderr
    assert not (tmp_path / "r").exists()
