"""The PAP-Loss search (gp_loss.pap.search, runs/search_pap.py): the smallest search, both strategies, writes
its files; resumes without re-evaluating; bad flags are one line and exit 2."""
import ast
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from gp_loss.errors import GpLossError
from gp_loss.pap import search, search_compare, search_proxy
from gp_loss.runtime.parallel import open_backend
from gp_loss.runtime.run_dir import RunDir
from gp_loss.tasks.base import TrainOutcome

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "runs" / "search_pap.py"
TINY = ["--rounds", "1", "--samples", "2", "--proxy-steps", "2", "--final-steps", "2", "--final-seeds", "1",
        "--canvases", "8", "--batch-size", "2", "--warmup-steps", "1", "--device", "cpu", "--threads", "1",
        "--top-k", "500"]


@pytest.fixture(scope="module")
def cli():
    return search


def _user_error(cli, capsys, argv):
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err
    return err


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ppo", "surrogate"])
def test_smallest_search_writes_its_files_and_resume_does_not_reevaluate(cli, capsys, tmp_path, monkeypatch,
                                                                          strategy):
    from gp_loss.pap import PAPParameters, read_pap_parameters

    out = tmp_path / "run"
    # a refused setting leaves nothing behind: the same --out serves the run
    err = _user_error(cli, capsys, ["--out", str(out), "--strategy", strategy] + TINY + ["--grid", "0"])
    assert "--grid must be at least 1" in err and not out.exists()
    assert cli.main(["--out", str(out), "--strategy", strategy] + TINY) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "PAP-Loss, searched θ" in printed and "Focal + GIoU (fl_giou)" in printed and "±" in printed
    # progress: a line per proxy training and per final training, as each ends
    assert [line.split(" |")[0] for line in printed.splitlines() if line.startswith("eval ")] == \
        (["eval 1/2 (round 1/1)", "eval 2/2 (round 1/1)"] if strategy == "ppo" else ["eval 1/2", "eval 2/2"])
    for name in ("the searched θ", "fl_giou", "pap (identity)"):
        assert f"final: seed 1/1 of {name} | AP " in printed, printed
    for name in ("config.json", "checkpoint.json", "theta.json", "pap_loss.py", "substitutions.png", "final.json"):
        assert (out / name).is_file(), name
    assert (out / ("results.json" if strategy == "ppo" else "history.json")).is_file()
    assert (out / "substitutions.png").read_bytes()[:4] == b"\x89PNG"
    params = read_pap_parameters(out / "theta.json")
    final = json.loads((out / "final.json").read_text())
    assert list(params.theta) == final["theta"] and len(final["theta"]) == 41
    assert set(final["losses"]) == {"searched", "fl_giou", "pap"} and final["seeds"] == [0]
    for row in final["losses"].values():
        assert len(row["trainings"]) == 1 and row["std"] == 0.0
    # one seed: each loss's difference from fl_giou, with no interval to judge it by
    assert final["reference"] == "fl_giou" and "vs_reference" not in final["losses"]["fl_giou"]
    for name in ("searched", "pap"):
        assert final["losses"][name]["vs_reference"]["verdict"] == "no clear difference"
        assert final["losses"][name]["vs_reference"]["ci95"] is None
    assert printed.count("[one seed: no interval] no clear difference from fl_giou") == 2
    assert "def pap_loss(" in (out / "pap_loss.py").read_text()
    assert PAPParameters.from_theta(final["theta"]).theta == params.theta

    # Resuming the finished run trains nothing: neither the search nor the comparison.
    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was re-evaluated")

    monkeypatch.setattr(search_proxy.ProxyObjective, "__call__", no_training)
    monkeypatch.setattr(search_compare, "final_training", no_training)
    before = (out / "final.json").read_text()
    assert cli.main(["--resume", str(out)]) == 0, capsys.readouterr().err
    assert (out / "final.json").read_text() == before
    # A run made before --theta existed resumes as what it was: separate functions.
    config = json.loads((out / "config.json").read_text())
    del config["run"]["theta"]
    (out / "config.json").write_text(json.dumps(config))
    assert cli.main(["--resume", str(out)]) == 0, capsys.readouterr().err
    assert json.loads((out / "config.json").read_text())["run"]["theta"] == "separate"
    # a setting that is not resumable must match; starting over into the run is refused
    assert "differs" in _user_error(cli, capsys, ["--resume", str(out), "--rounds", "5"])
    assert "already holds a run" in _user_error(cli, capsys, ["--out", str(out)] + TINY)


@pytest.mark.parametrize("argv,message", [
    (["--strategy", "random"], "--strategy must be one of ppo, surrogate"),
    (["--model", "yolo"], "model must be one of"),
    (["--rounds", "0"], "--rounds must be at least 1"),
    (["--samples", "0"], "--samples must be at least 1"),
    (["--final-seeds", "0"], "--final-seeds must be at least 1"),
    (["--grid", "0"], "--grid must be at least 1"),
    (["--data", "/nonexistent.json"], "/nonexistent.json"),
    (["--proxy-steps", "0"], "proxy_steps must be in"),
    (["--device", "gpu"], "device 'gpu'"),
    (["--strategy", "surrogate", "--rounds", "1", "--samples", "1"], "at least 2 proxy trainings"),
    (["--theta", "joint"], "--theta must be one of separate, shared"),
    (["--samples", "1"], "--strategy ppo needs --samples of at least 2"),
    (["--threads", "100000"], "--threads must be at most 256, got 100000"),
    (["--final-seeds", "100000000"], "--final-seeds must be at most 1000, got 100000000"),
    (["--samples", "1000000000"], "--samples must be at most 10000, got 1000000000"),
    (["--workers", "0"], "--workers must be at least 1"),
    (["--workers", "100000"], "is more worker processes than this machine can hold"),
    (["--strategy", "surrogate", "--grid", "1", "--rounds", "3", "--samples", "1"], "raise --grid"),
])
def test_bad_flags_are_one_line_and_exit_2(cli, capsys, tmp_path, argv, message):
    err = _user_error(cli, capsys, ["--out", str(tmp_path / "r")] + argv)
    assert message in err, err
    assert not (tmp_path / "r").exists()


def test_unparsable_flag_and_missing_resume_exit_2(cli, capsys, tmp_path):
    assert cli.main(["--rounds", "many"]) == 2
    capsys.readouterr()
    assert "no run to resume" in _user_error(cli, capsys, ["--resume", str(tmp_path / "none")])


def test_an_error_naming_a_hostile_path_shows_its_control_characters_as_escapes(cli, capsys, tmp_path):
    err = _user_error(cli, capsys, ["--resume", str(tmp_path / "a\x1b]52;c;ZXZpbA==\x07\u202eb")])
    assert "no run to resume" in err and "\\x1b]52" in err and not any(c in err for c in "\x1b\x07\u202e")


@pytest.mark.parametrize("theta,size", [("separate", 41), ("shared", 9)])
@pytest.mark.parametrize("budget", [2, 3, 5, 12, 20, 83, 84, 320])
def test_surrogate_layout_fits_the_budget(cli, budget, theta, size):
    from gp_loss.hps import maximize
    from gp_loss.pap import PAPParameters

    run = {"grid": 20, "rounds": budget, "samples": 1, "seed": 0, "theta": theta}
    free, fixed, ks = search_proxy.surrogate_layout(run)
    assert 1 <= free <= size and (free == size) == (budget >= 2 * (size + 1)) and len(fixed) == size
    assert fixed == [k / 20 for k in ks]
    PAPParameters.from_theta(fixed, shared=theta == "shared")  # a valid θ
    n_init = min(2 * (free + 1), budget)
    result = maximize(lambda x: float(sum(x)), [0] * free, [20] * free, budget=n_init, seed=0, n_init=n_init)
    assert len(result.history) == n_init


def test_a_shared_point_is_one_function_for_all_five(cli):
    from gp_loss.pap import PAPParameters
    from gp_loss.pap.substitutions import THETA_ORDER

    point = [0.1, 0.2, 0.3, 0.35, 0.5, 0.6, 0.7, 0.9, 0.75]
    objective = search_proxy.ProxyObjective({}, 500, 0, "cpu", 1, shared=True)
    theta = objective.theta(point)
    assert len(theta) == 41 and theta[40] == 0.75
    assert all(theta[8 * f: 8 * f + 8] == point[:8] for f in range(len(THETA_ORDER)))
    params = PAPParameters.from_theta(theta)
    assert params.H1.points == params.H2.points == params.I1.points == params.I3.points
    # On the surrogate's grid: the free coordinates from k / grid, the rest at the fixed point.
    run = {"grid": 20, "rounds": 6, "samples": 1, "seed": 0, "theta": "shared"}
    free, fixed, _ = search_proxy.surrogate_layout(run)
    grid_objective = search_proxy.ProxyObjective({}, 500, 0, "cpu", 1, grid=20, fixed=fixed, shared=True)
    theta = grid_objective.theta([4, 10][:free])
    assert free == 2 and theta[:2] == [0.2, 0.5] and theta[2:8] == fixed[2:8] and theta[8:10] == [0.2, 0.5]
    assert search_proxy.searched_size({"theta": "shared"}) == 9 and search_proxy.searched_size({"theta": "separate"}) == 41


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


@pytest.mark.parametrize("config,holds", [
    ({"task": {"model": "fcos"}, "run": {"bins": "default", "strategy": "dycors"}, "layout": "(3,3,3)"},
     "holds an HPS-Det search (runs/hps_det.py), not a PAP-Loss search"),
    ({"task": "classification", "scheme": "zero"}, "holds a classification search (runs/search_classification.py)"),
])
def test_resuming_a_run_of_another_kind_says_what_it_holds(cli, capsys, tmp_path, config, holds):
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "checkpoint.json").write_text("{}")
    err = _user_error(cli, capsys, ["--resume", str(tmp_path)])
    assert holds in err and "cannot resume it" in err and "--strategy" not in err, err


def test_a_directory_in_use_is_refused_naming_the_holder(cli, capsys, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    with RunDir(out).lock():
        err = _user_error(cli, capsys, ["--out", str(out)] + TINY)
    assert f"is in use by pid {os.getpid()} on {socket.gethostname()}" in err
    assert sorted(p.name for p in out.iterdir()) == [".lock"]


class _FailingTask:
    """Every training raises inside torchvision (as with a box that overflowed to inf)."""

    def proxy_fitness(self, loss, seed):
        return TrainOutcome(0.0, "error", "ValueError: boxes must be finite")


def test_every_proxy_training_failing_stops_with_the_reason(cli, capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(search_proxy, "_task", lambda *args: _FailingTask())
    err = _user_error(cli, capsys, ["--out", str(tmp_path / "r")] + TINY)
    assert "every proxy training failed" in err and "boxes must be finite" in err, err


def test_every_reference_training_failing_stops_the_comparison(tmp_path, monkeypatch):
    def training(job):
        _, spec, _, seed, _, _ = job
        failed = spec in ("fl_giou", "pap")
        return {"seed": seed, "score": 0.0 if failed else 0.25, "status": "error" if failed else "ok",
                "reason": "ValueError: boxes must be finite" if failed else "", "metrics": {}, "seconds": 0.1}

    monkeypatch.setattr(search_compare, "final_training", training)
    options = {"metric": "AP", "final_steps": 1}
    run = {"seed": 0, "final_seeds": 2, "top_k": 500, "device": "cpu", "threads": 1, "strategy": "ppo"}
    with open_backend("serial") as backend, pytest.raises(GpLossError) as err:
        search_compare.compare(tmp_path, options, run, [0.5] * 41, 0.1, backend)
    assert "every final training of fl_giou and pap failed" in str(err.value)
    assert "boxes must be finite" in str(err.value) and not (tmp_path / "final.json").exists()
    # one reference left: the comparison stands, the failed loss marked as such
    monkeypatch.setattr(search_compare, "final_training", lambda job: {**training(job), **(
        {"score": 0.2, "status": "ok", "reason": ""} if job[1] == "pap" else {})})
    with open_backend("serial") as backend:
        report = search_compare.compare(tmp_path, options, run, [0.5] * 41, 0.1, backend)
    assert report["losses"]["fl_giou"]["failed"] and not report["losses"]["pap"]["failed"]


# AP of each final training by loss and seed: the searched θ above fl_giou on every seed, pap below it
FINAL_AP = {"searched": [0.30, 0.33, 0.31], "fl_giou": [0.25, 0.27, 0.28], "pap": [0.20, 0.21, 0.22]}


def test_the_final_comparison_gives_each_loss_its_paired_verdict_against_fl_giou(cli, capsys, tmp_path,
                                                                                monkeypatch):
    from gp_loss.metrics.paired import paired_comparison

    def training(job):
        _, spec, _, seed, _, _ = job
        name = spec if isinstance(spec, str) else "searched"
        return {"seed": seed, "score": FINAL_AP[name][seed], "status": "ok", "reason": "", "metrics": {},
                "seconds": 0.1}

    monkeypatch.setattr(search_compare, "final_training", training)
    monkeypatch.setattr(search_proxy.ProxyObjective, "__call__", lambda self, x: 0.1 + 0.01 * float(x[0]))
    out = tmp_path / "run"
    argv = ["--out", str(out)] + TINY
    argv[argv.index("--final-seeds") + 1] = "3"
    assert cli.main(argv) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    final = json.loads((out / "final.json").read_text())
    assert final["reference"] == "fl_giou" and "vs_reference" not in final["losses"]["fl_giou"]
    for name, verdict in (("searched", "better"), ("pap", "worse")):
        expected = paired_comparison(FINAL_AP[name], FINAL_AP["fl_giou"])
        vs = final["losses"][name]["vs_reference"]
        assert vs["baseline"] == "fl_giou" and vs["verdict"] == expected["verdict"] == verdict
        assert vs["delta"] == pytest.approx(expected["delta"]) and vs["ci95"] == pytest.approx(expected["ci95"])
        # mean and std are what they were: over the seeds, the std with ddof 1
        assert final["losses"][name]["mean"] == pytest.approx(sum(FINAL_AP[name]) / 3)
    lines = {line.split(":")[0].strip(): line for line in printed.splitlines() if line.startswith("  ")}
    searched = final["losses"]["searched"]["vs_reference"]
    assert lines["PAP-Loss, searched θ (ppo)"].endswith(
        f"+4.67 [{100 * searched['ci95'][0]:+.2f}, {100 * searched['ci95'][1]:+.2f}] better than fl_giou")
    assert lines["PAP-Loss, identity substitutions (pap)"].endswith("worse than fl_giou")
    assert lines["Focal + GIoU (fl_giou)"].endswith("reference")

    # A final.json without verdicts (kept by --resume, which retrains nothing) still prints its table.
    for row in final["losses"].values():
        row.pop("vs_reference", None)
    del final["reference"]
    (out / "final.json").write_text(json.dumps(final, indent=1) + "\n")
    monkeypatch.setattr(search_compare, "final_training", lambda job: pytest.fail("a finished comparison was retrained"))
    assert cli.main(["--resume", str(out)]) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "PAP-Loss, searched θ (ppo):" in printed and "0.3133 ± " in printed
    assert " than fl_giou" not in printed and "reference" not in printed.split("95% CI):")[1]


def test_the_script_runs_the_search_and_documents_it(tmp_path):
    """runs/search_pap.py is the package's main: its summary, its exit status."""
    script_doc = ast.get_docstring(ast.parse(SCRIPT.read_text(encoding="utf-8")), clean=False)
    assert script_doc.split("\n\n")[0] == search.__doc__.split("\n\n")[0]  # one summary; --help prints the rest
    proc = subprocess.run([sys.executable, str(SCRIPT), "--rounds", "0", "--out", str(tmp_path / "r")],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr == "error: --rounds must be at least 1, got 0\n", proc.stderr
    assert not (tmp_path / "r").exists()
