"""Proxy trainings per minute with K workers sharing one device, and the cost of deterministic mode.

Small proxies do not fill a modern GPU, so several worker processes train on
one GPU at once (``--workers-per-gpu K``). This benchmark runs
``runs/search_classification.py`` as a user does, with the same seed and
budget:

* 1 worker on the device, then K workers on the same device (for a GPU:
  ``--workers-per-gpu``; for the CPU: ``--workers``), and the ratio of their
  evaluations per minute;
* with ``deterministic``, 1 worker again under ``--deterministic``, and the
  ratio of its evaluations per minute to the plain 1-worker run;
* ``--task detection`` / ``--task segmentation``: the same with that task's search script
  (its own flags through ``--task-args``): evaluations per hour with 1 and K proxies on one GPU;
* whether the runs found the same hall of fame (on the CPU they must; on a GPU
  only deterministic mode promises it).
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from gp_loss.bench.search import run_script
from gp_loss.errors import GpLossError
from gp_loss.runtime.device import check_device, gpu_count
from gp_loss.tasks.registry import TASK_NAMES, task_info

RUNS = Path(__file__).resolve().parents[2] / "runs"  # the search scripts, beside the package


def task_script(task: str) -> str:
    """The path of the ``runs/`` script that searches ``task``: its registered
    :attr:`~gp_loss.tasks.base.TaskInfo.search_script`."""
    if task not in TASK_NAMES:  # (before importing the task's module)
        raise GpLossError(f"--task must be one of {', '.join(TASK_NAMES)}, got {task!r}")
    script = task_info(task).search_script
    if script is None:
        raise GpLossError(f"task {task} has no search script in runs/ to benchmark")
    return str(RUNS / script)


def bench_device(evaluations: int, device: str = "auto", workers: int = 4, deterministic: bool = True,
                 script: str | None = None, script_args: list[str] | None = None) -> dict:
    """Run the search with 1 and ``workers`` workers on ``device`` (one GPU when it has several).

    ``script``: the search script (default: the classification one); ``script_args``: more of its
    flags, the same in every run (e.g. a detection proxy's ``--proxy-steps``).
    """
    script = script or task_script("classification")
    check_device(device)
    if workers < 2:
        raise GpLossError(f"--workers must be at least 2 to compare with 1 worker, got {workers}")
    gpus = gpu_count(device)
    one_device = "cuda:0" if gpus > 1 and device in ("auto", "cuda") else device
    common = ["--evaluations", str(evaluations), "--final-top", "1", "--final-seeds", "1", "--no-progress",
              "--device", one_device, *(script_args or [])]
    many = (["--workers-per-gpu", str(workers)] if gpus else ["--workers", str(workers)])
    plan = {"1 worker": ["--map", "serial"], f"{workers} workers": many}
    if deterministic:
        plan["1 worker, deterministic"] = ["--map", "serial", "--deterministic"]
    runs = {}
    with tempfile.TemporaryDirectory(prefix="gp-loss-bench-device-") as tmp:
        for i, (label, args) in enumerate(plan.items()):
            out = Path(tmp) / str(i)
            runs[label] = run_script([sys.executable, script, "--out", str(out), *common, *args], out)
    base = runs["1 worker"]
    result = {"device": one_device, "evaluations": evaluations, "workers": workers, "runs": runs,
              "speedup": runs[f"{workers} workers"]["evaluations_per_minute"] / base["evaluations_per_minute"],
              "same_hall_of_fame": {label: r["hall_of_fame"] == base["hall_of_fame"]
                                    for label, r in runs.items() if label != "1 worker"}}
    if deterministic:
        det = runs["1 worker, deterministic"]
        result["deterministic_cost"] = base["evaluations_per_minute"] / det["evaluations_per_minute"]
    return result
