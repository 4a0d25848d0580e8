"""``gp-loss bench gpu``: every figure present (a number, or the error that kept it from one), its refusals."""
import json
import subprocess
import sys

import pytest

from gp_loss.bench import detection as bench_detection
from gp_loss.bench import device as bench_device
from gp_loss.bench import gpu
from gp_loss.bench import search as bench_search
from gp_loss.cli import main
from tests.helpers import ROOT

FIGURES = {
    *(f"step_time_ratio.{m}" for m in ("fcos", "retinanet", "fasterrcnn")),
    *(f"ap50.{s}s" for s in (3, 6, 9)),
    *(f"evaluations_per_minute.{t}.{k}" for t in ("classification", "detection", "segmentation")
      for k in ("1_worker", "k_workers", "ratio")),
    "cost.deterministic", "cost.bf16",
    *(f"peak_memory_mib.{t}" for t in ("classification", "detection", "segmentation")),
}
RATIOS = ("step_time_ratio.", "evaluations_per_minute.", "cost.")


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@pytest.fixture(scope="module")
def quick():
    proc = subprocess.run([sys.executable, "-m", "gp_loss", "bench", "gpu", "--device", "cpu", "--quick", "--json"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


@pytest.mark.slow
def test_the_quick_cpu_run_gives_every_figure(quick):
    found = gpu.figures(quick)
    assert set(found) == FIGURES
    for name, value in found.items():
        assert _number(value) or (isinstance(value, str) and value.startswith("error: ")), (name, value)
        if _number(value) and name.startswith(RATIOS):
            assert value > 0, name
        if name.startswith("peak_memory_mib.") and _number(value):
            assert value > 0, name
    # What needs no shipped weights always runs: the step times, and the classification searches.
    assert all(_number(found[f"step_time_ratio.{m}"]) for m in ("fcos", "retinanet", "fasterrcnn"))
    assert all(_number(v) for k, v in found.items() if ".classification." in k or k.startswith("cost."))
    assert quick["device"] == "cpu" and quick["quick"] and quick["workers"] == gpu.WORKERS_QUICK
    assert quick["targets_apply"] is False and quick["target_met"] is None
    assert quick["cost"]["task"] == "classification"
    assert set(quick["seconds"]) == {"step_time", "ap50", "searches", "total"}


def test_a_part_that_fails_gives_its_error_in_place_of_its_figures(monkeypatch):
    def step_time(model, *args, **kwargs):
        if model == "retinanet":
            raise MemoryError()
        return {"ratio": 1.02, "ratio_q1": 1.0, "ratio_q3": 1.1, "ratio_of_medians": 1.01,
                "max_relative_difference": 0.0, "torchvision_loss": "tv", "genome_loss": "genome",
                "ms": {"torchvision": {"median": 10.0}, "genome": {"median": 10.2}}}

    def searches(evaluations, device, workers, deterministic, script, script_args):
        if script.endswith("search_segmentation.py"):
            raise RuntimeError(f"{script} failed:\nTraceback (most recent call last):\nValueError: no canvases")
        run = {"evaluations_per_minute": 60.0, "hall_of_fame": [], "peak_memory_mib": 100.0}
        many = {**run, "evaluations_per_minute": 150.0, "peak_memory_mib": 120.0}
        return {"runs": {"1 worker": run, f"{workers} workers": many}, "speedup": 2.5,
                "same_hall_of_fame": {f"{workers} workers": True}}

    variants = []

    def variant(cmd, out):
        variants.append(cmd)
        if "--deterministic" in cmd:
            raise RuntimeError("x failed:\nerror: --deterministic: a kernel has no deterministic version")
        return {"evaluations_per_minute": 30.0, "hall_of_fame": []}

    monkeypatch.setattr(bench_detection, "bench_detection_loss", step_time)
    monkeypatch.setattr(gpu, "bench_ap50", lambda device, sizes, seed, progress: (
        {"3s": 0.1, "6s": 0.2, "9s": "error: FloatingPointError: the Focal + GIoU loss is not finite at step 9"},
        []))
    monkeypatch.setattr(bench_device, "bench_device", searches)
    monkeypatch.setattr(bench_search, "run_script", variant)
    result = gpu.bench_gpu("cpu", quick=True, workers=3, seed=5)
    found = gpu.figures(result)
    assert set(found) == FIGURES
    assert found["step_time_ratio.fcos"] == 1.02 and found["step_time_ratio.retinanet"] == "error: MemoryError: "
    assert found["ap50.9s"].startswith("error: FloatingPointError")
    assert found["evaluations_per_minute.detection.ratio"] == 2.5 and found["peak_memory_mib.detection"] == 120.0
    assert all(found[f"evaluations_per_minute.segmentation.{k}"] == "error: ValueError: no canvases"
               for k in ("1_worker", "k_workers", "ratio"))
    assert found["peak_memory_mib.segmentation"] == "error: ValueError: no canvases"
    assert found["cost.deterministic"] == "error: --deterministic: a kernel has no deterministic version"
    assert found["cost.bf16"] == 0.5  # 30 against the plain run's 60 evaluations per minute
    assert [c[c.index("--precision") + 1] for c in variants if "--precision" in c] == ["bf16"]
    assert all(c[c.index("--seed") + 1] == "5" and c[c.index("--map") + 1] == "serial" for c in variants)
    lines = gpu.format_report(result)
    assert any("retinanet" in line and "error: MemoryError" in line for line in lines)
    assert lines[-1] == "targets not judged: they are set for the full sizes on a GPU"


@pytest.mark.parametrize("argv, text", [
    (["--workers", "1"], "--workers must be at least 2"),
    (["--device", "cuda:7"], "device 'cuda:7'"),
    (["--device", "gpu"], "device 'gpu' is not one of"),
])
def test_bad_flags_are_one_line_and_exit_2(capsys, argv, text):
    assert main(["bench", "gpu", "--quick", "--device", "cpu", *argv]) == 2
    err = capsys.readouterr().err
    assert text in err and len(err.strip().splitlines()) == 1
