"""runs/search_classification.py: user mistakes exit 2 with one line "error: ...", never a traceback."""
import json
import subprocess
import sys

import pytest

from gp_loss.errors import GpLossError
from gp_loss.evolution import script
from tests.helpers import ROOT, assert_user_error

SCRIPT = ROOT / "runs" / "search_classification.py"
# One fidelity and no warm start: these tests count trainings of the search loop itself.
TINY_FLAGS = ["--population", "2", "--offspring", "1", "--evaluations", "2", "--final-seeds", "1",
              "--final-top", "1", "--proxy-epochs", "1", "--final-epochs", "1", "--no-progress",
              "--fidelities", "1", "--warm-start", "none"]


@pytest.fixture(scope="module")
def cli(load_script):
    return load_script("search_classification")  # not "__main__": defines DEFAULTS and TASK_FLAGS only


def run_main(cli, argv):
    return script.main(cli.__doc__, cli.DEFAULTS, "out/unused", cli.TASK_FLAGS, argv)


def _user_error(cli, capsys, argv):
    return assert_user_error(run_main(cli, argv), capsys.readouterr().err)


def test_negative_population(cli, capsys, tmp_path):
    err = _user_error(cli, capsys, ["--out", str(tmp_path / "r"), "--population", "-1"])
    assert len(err.strip().splitlines()) == 1 and "population must be at least 1, got -1" in err
    assert not (tmp_path / "r").exists()  # checked before anything is written


def test_missing_data_path(cli, capsys, tmp_path):
    err = _user_error(cli, capsys, ["--out", str(tmp_path / "r"), "--data", "/nonexistent/images"])
    assert len(err.strip().splitlines()) == 1 and "/nonexistent/images" in err


def test_out_into_an_existing_run(cli, capsys, tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "config.json").write_text("{}")
    (tmp_path / "r" / "baselines.json").write_text('{"ce": 0.9}')  # trained: something to keep
    err = _user_error(cli, capsys, ["--out", str(tmp_path / "r")] + TINY_FLAGS)
    assert len(err.strip().splitlines()) == 1 and "already holds a run" in err and "--resume" in err
    assert (tmp_path / "r" / "config.json").read_text() == "{}"


def test_resume_a_dir_without_a_run(cli, capsys, tmp_path):
    err = _user_error(cli, capsys, ["--resume", str(tmp_path / "nothing")])
    assert len(err.strip().splitlines()) == 1 and "nothing to resume" in err


def test_resume_of_an_hps_det_run_names_what_it_holds(cli, capsys, tmp_path):
    run = tmp_path / "hps"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"task": {"model": "fcos"}, "run": {"bins": "default"}}))
    err = _user_error(cli, capsys, ["--resume", str(run)])
    assert len(err.strip().splitlines()) == 1 and "holds an HPS-Det search (runs/hps_det.py)" in err


def test_out_and_resume_differ(cli, capsys, tmp_path):
    err = _user_error(cli, capsys, ["--out", str(tmp_path / "a"), "--resume", str(tmp_path / "b")])
    assert "not both" in err


def test_config_file_with_an_unknown_key(cli, capsys, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("population: 5\npopulaton: 6\n")
    err = _user_error(cli, capsys, ["--out", str(tmp_path / "r"), "--config", str(cfg)])
    assert len(err.strip().splitlines()) == 1 and "populaton" in err


@pytest.mark.parametrize("name, text", [("c.yaml", "population: [1\n"), ("c.json", "{oops"),
                                        ("c.yaml", "- 1\n- 2\n")])
def test_config_file_that_is_not_a_mapping(cli, capsys, tmp_path, name, text):
    (tmp_path / name).write_text(text)
    err = _user_error(cli, capsys, ["--out", str(tmp_path / "r"), "--config", str(tmp_path / name)])
    assert name in err


def test_config_file_missing(cli, capsys, tmp_path):
    err = _user_error(cli, capsys, ["--out", str(tmp_path / "r"), "--config", str(tmp_path / "none.yaml")])
    assert "none.yaml" in err


def test_config_file_with_a_non_number(cli, capsys, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("population: ten\n")
    _user_error(cli, capsys, ["--out", str(tmp_path / "r"), "--config", str(cfg)])


def test_config_yaml_sets_population_and_flags_win(cli, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("population: 3\nmax_evaluations: 7\ntask_options:\n  proxy_epochs: 2\n")
    args = script.build_parser("d", cli.TASK_FLAGS).parse_args(
        ["--config", str(cfg), "--evaluations", "9", "--final-epochs", "1", "--out", str(tmp_path / "r")])
    config, out, resume = script.config_from_args(args, cli.TASK_FLAGS, cli.DEFAULTS, "out/x")
    assert (config.population, config.max_evaluations) == (3, 9)
    assert config.task_options == {"proxy_epochs": 2, "final_epochs": 1}
    assert out == str(tmp_path / "r") and not resume


def test_config_yaml_run(cli, capsys, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("population: 2\n")
    flags = TINY_FLAGS[2:]  # everything but --population: the file sets it
    assert "--population" not in flags
    code = run_main(cli, ["--out", str(tmp_path / "r"), "--config", str(cfg)] + flags)
    out = capsys.readouterr().out
    assert code == 0
    assert json.loads((tmp_path / "r" / "config.json").read_text())["population"] == 2
    assert "top1" in out and "ce" in out and "run directory:" in out
    assert len((tmp_path / "r" / "evaluations.jsonl").read_text().splitlines()) == 2


def test_resume_checks_options_given_again(cli, capsys, tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    stored = dict(cli.DEFAULTS.to_dict(), population=2)
    (run / "config.json").write_text(json.dumps(stored))
    err = assert_user_error(run_main(cli, ["--resume", str(run), "--population", "3"]), capsys.readouterr().err,
                            one_line=False)  # the differing settings, one a line
    assert "population: 2 -> 3" in err


def test_config_from_args_resume_uses_the_stored_config(cli, tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(dict(cli.DEFAULTS.to_dict(), population=2, seed=5)))
    args = script.build_parser("d", cli.TASK_FLAGS).parse_args(["--resume", str(run), "--evaluations", "50"])
    config, out, resume = script.config_from_args(args, cli.TASK_FLAGS, cli.DEFAULTS, "out/x")
    assert resume and out == str(run)
    assert (config.population, config.seed, config.max_evaluations) == (2, 5, 50)


def test_start_flag_needs_branch_and_formula(cli, tmp_path):
    args = script.build_parser("d", cli.TASK_FLAGS).parse_args(["--start", "neg(x)"])
    with pytest.raises(GpLossError, match="BRANCH=FORMULA"):
        script.config_from_args(args, cli.TASK_FLAGS, cli.DEFAULTS, "out/x")


def test_the_script_itself_prints_one_line(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "r"), "--population", "-1"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: population must be at least 1, got -1"]
    assert proc.stdout == ""


def test_workers_per_gpu_is_checked_before_any_work(monkeypatch):
    from gp_loss.runtime import scoop_backend
    from gp_loss.runtime.parallel import planned_workers
    assert planned_workers("auto", None, "cpu") == 1 and planned_workers("auto", 3, "cpu") == 3
    with pytest.raises(GpLossError, match="--workers-per-gpu must be at least 1, got 0"):
        planned_workers("auto", None, "cpu", workers_per_gpu=0)
    with pytest.raises(GpLossError, match="drop --map serial"):
        planned_workers("serial", None, "cpu", workers_per_gpu=2)
    with pytest.raises(GpLossError, match="needs a GPU, but --device cpu trains on the CPU"):
        planned_workers("auto", None, "cpu", workers_per_gpu=2)
    with pytest.raises(GpLossError, match=r"^--map scoop needs the script started as `python -m scoop"):
        planned_workers("scoop", None, "cpu")
    monkeypatch.setattr(scoop_backend, "scoop_running", lambda: True)
    with pytest.raises(GpLossError, match="under SCOOP"):
        planned_workers("scoop", None, "cpu", workers_per_gpu=2)
    with pytest.raises(GpLossError, match="under SCOOP"):
        planned_workers("auto", None, "cpu", workers_per_gpu=2)  # auto picks SCOOP under `python -m scoop`


@pytest.mark.parametrize("flags, message", [
    (["--map", "scoop"], "error: --map scoop needs the script started as `python -m scoop -n N script.py ...`"),
    (["--map", "serial", "--workers-per-gpu", "2"], "error: --workers-per-gpu needs worker processes: drop --map serial"),
    (["--map", "multiprocessing", "--ray-address", "127.0.0.1:6379"], "error: --ray-address joins a Ray cluster"),
])
def test_backend_flags_that_cannot_work_are_one_line_before_anything_is_written(cli, capsys, tmp_path, flags,
                                                                                  message):
    err = _user_error(cli, capsys, ["--out", str(tmp_path / "r")] + flags)
    assert err.startswith(message)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("flags, message", [
    (["--seed", "-1"], "seed must be in [0, 4294967295]"),
    (["--seed", "1000000000000000000000000000000"], "seed must be in [0, 4294967295]"),
    (["--seconds", "nan"], "max_seconds must be a finite number"),
    (["--seconds", "inf"], "max_seconds must be a finite number"),
    (["--tournament", "nan"], "tournament_fraction must be a finite number"),
    (["--init-depth", "100"], "init_depth (100) <= max_height (12) <= 17"),
])
def test_bad_numbers_are_one_line_before_anything_is_written(cli, capsys, tmp_path, flags, message):
    err = _user_error(cli, capsys, ["--out", str(tmp_path / "r")] + flags)
    assert err.strip().splitlines() == [f"error: {err.strip()[7:]}"] and message in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("flag", ["--out", "--resume"])
def test_an_empty_run_directory_is_refused(cli, capsys, tmp_path, monkeypatch, flag):
    monkeypatch.chdir(tmp_path)
    err = _user_error(cli, capsys, [flag, ""])
    assert len(err.strip().splitlines()) == 1 and f"--{flag.lstrip('-')} is empty" in err
    assert list(tmp_path.iterdir()) == []  # nothing written into the current directory


@pytest.mark.parametrize("text", ["task_options: abc\n", "task_options: [1, 2]\n", "task_options: [[lr, 1]]\n"])
def test_task_options_that_are_not_a_mapping(cli, capsys, tmp_path, text):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    err = _user_error(cli, capsys, ["--out", str(tmp_path / "r"), "--config", str(cfg)])
    assert len(err.strip().splitlines()) == 1 and "task_options" in err and "mapping" in err
    assert not (tmp_path / "r").exists()


def test_task_option_nan_is_one_line(cli, capsys, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("task_options: {lr: .nan}\n")
    err = _user_error(cli, capsys, ["--out", str(tmp_path / "r"), "--config", str(cfg)])
    assert len(err.strip().splitlines()) == 1 and "lr" in err and "nan" in err


@pytest.mark.parametrize("text", ["garbage{", "[1, 2]", '{"task_options": "abc"}'])
def test_resume_a_bad_config_json_is_one_line(cli, capsys, tmp_path, text):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "config.json").write_text(text)
    err = _user_error(cli, capsys, ["--resume", str(tmp_path / "r")])
    assert len(err.strip().splitlines()) == 1 and "config.json" in err
    assert (tmp_path / "r" / "config.json").read_text() == text


def test_run_script_exit_status_serially():
    with pytest.raises(SystemExit) as stop:
        script.run_script(lambda: 2)
    assert stop.value.code == 2
    with pytest.raises(SystemExit) as stop:
        script.run_script(lambda: 1 / 0)  # a crash: traceback printed, exit 1
    assert stop.value.code == 1


def _scoop(args, cwd, timeout=240):
    return subprocess.run([sys.executable, "-m", "scoop", "-n", "2"] + args, capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


def test_scoop_user_error_exits_non_zero_with_one_line_and_writes_nothing(tmp_path):
    proc = _scoop([str(SCRIPT), "--out", str(tmp_path / "r"), "--population", "-5"], tmp_path)
    assert proc.returncode != 0, proc.stderr
    assert "Traceback" not in proc.stderr
    ours = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert ours == ["error: population must be at least 1, got -5"]
    assert not (tmp_path / "r").exists()


def test_scoop_crash_exits_non_zero(tmp_path):
    crash = tmp_path / "crash.py"
    crash.write_text(f"import sys\nsys.path.insert(0, {str(ROOT)!r})\n"
                     "from gp_loss.evolution.script import run_script\n"
                     "def main():\n    raise RuntimeError('boom')\n"
                     "if __name__ == '__main__':\n    run_script(main)\n")
    proc = _scoop([str(crash)], tmp_path)
    assert proc.returncode != 0 and "RuntimeError: boom" in proc.stderr
