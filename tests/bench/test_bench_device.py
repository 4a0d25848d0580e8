"""The device benchmark: the runs it starts, the ratios it prints, its refusals."""
import pytest

from gp_loss.bench import device as bench
from gp_loss.cli import main


def test_one_worker_k_workers_and_deterministic_runs_are_compared(monkeypatch):
    commands = []
    per_minute = iter([60, 150, 40])

    def fake_run(cmd, out):
        commands.append(cmd)
        return {"evaluations_per_minute": next(per_minute), "hall_of_fame": [{"cls": "neg(x)"}]}

    monkeypatch.setattr(bench, "run_script", fake_run)
    result = bench.bench_device(10, device="cpu", workers=3)
    assert [c[c.index("--device") + 1] for c in commands] == ["cpu"] * 3
    assert ["--map", "serial"] == commands[0][-2:] and ["--workers", "3"] == commands[1][-2:]
    assert commands[2][-1] == "--deterministic"
    assert result["speedup"] == 2.5 and result["deterministic_cost"] == 1.5
    assert all(result["same_hall_of_fame"].values())


def test_refusals_are_one_line(capsys):
    assert main(["bench", "device", "--device", "gpu"]) == 2
    assert "device 'gpu' is not one of" in capsys.readouterr().err
    assert main(["bench", "device", "--device", "cpu", "--workers", "1"]) == 2
    assert "--workers must be at least 2" in capsys.readouterr().err


@pytest.mark.slow
def test_a_real_cpu_run_finds_the_same_hall_of_fame_with_two_workers():
    result = bench.bench_device(2, device="cpu", workers=2, deterministic=False)
    assert result["same_hall_of_fame"] == {"2 workers": True} and result["speedup"] > 0


def test_each_registered_task_names_its_search_script_and_the_script_exists():
    from pathlib import Path

    from gp_loss.tasks.registry import TASK_NAMES, task_info

    for name in TASK_NAMES:
        script = Path(bench.task_script(name))
        assert script.name == task_info(name).search_script and script.is_file()


def test_the_detection_search_script_gets_its_own_flags(monkeypatch, capsys):
    commands = []

    def fake_run(cmd, out):
        commands.append(cmd)
        return {"evaluations_per_minute": 10, "hall_of_fame": [], "evaluations": 4, "wall_s": 1.0,
                "train_s": 1.0, "breed_s": 0.0}

    monkeypatch.setattr(bench, "run_script", fake_run)
    assert main(["bench", "device", "--device", "cpu", "--workers", "2", "--evaluations", "4", "--no-deterministic",
                 "--task", "detection", "--task-args", "--proxy-steps 5 --image-size 64"]) == 0
    assert all(c[1].endswith("runs/search_detection.py") for c in commands)
    assert all(c[c.index("--proxy-steps") + 1] == "5" and "--image-size" in c for c in commands)
    assert main(["bench", "device", "--task", "segmentaton"]) == 2
    assert "--task must be one of classification, detection, segmentation" in capsys.readouterr().err
