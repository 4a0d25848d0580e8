"""Every GPU target in one run: ``gp-loss bench gpu``.

One process measures, on one device, five groups of figures; time figures are
measured side by side in this one run and reported as ratios. A part that cannot
run (out of memory, a failed search) records its error text in place of each of
its figures and the others go on: every figure is always present, a number or
the line saying why there is none.

1. **Step-time ratio** (target: at most 1.05): a training step with the genome's
   losses (sigmoid focal + GIoU; Faster R-CNN: BCE + GIoU, CE + GIoU) against
   torchvision's own loss code, for FCOS, RetinaNet and Faster R-CNN with a
   ResNet-18 FPN at 256², batch 16: the median of the per-pair ratios of steps
   alternated from the same weights (:func:`gp_loss.bench.detection.bench_detection_loss`).
2. **AP50 of FCOS ResNet-18 trained with Focal + GIoU** after 30, 60 and 90 s of
   training (target: at least 0.85 at 90 s) on the built-in digit canvases at
   256², batch 16, SGD with the detection task's learning rate, momentum, weight
   decay and linear warm-up, then a constant rate. Only the training steps are timed (on CUDA the
   clock is read after ``torch.cuda.synchronize``); the COCO evaluation at each
   checkpoint is not. The first step past a checkpoint is the one evaluated.
3. **Evaluations per minute** of the classification, detection and segmentation
   searches (``runs/search_*.py``, as a user starts them) with 1 worker and with
   K workers on the device (a GPU: ``--workers-per-gpu K``; the CPU:
   ``--workers K``), and their ratio (target: at least 2), from the search phase
   of each run's logbook (:func:`gp_loss.bench.device.bench_device`).
4. **The cost of ``--deterministic`` and of ``--precision bf16``**: the evaluations
   per minute of 1 worker with each, as a ratio to the plain 1-worker run of the
   classification search (below 1: slower). Both run right after the plain one,
   each on its own, so that one failing (a kernel with no deterministic version)
   leaves the other figures; bench_device's own deterministic run is not used.
5. **Peak memory per worker** (MiB): the largest ``peak_memory_mib`` of the
   K-worker run's proxy trainings, per task: on CUDA the most the training
   allocated (``torch.cuda.max_memory_allocated``), on the CPU the worker
   process's peak resident set size (:func:`gp_loss.tasks.base.peak_memory_mib`).

The full sizes are chosen for one H100 in under 8 minutes; ``--quick`` shrinks
every part (small backbone, 64 px, checkpoints at 3, 6 and 9 s, searches of 4
tiny proxies, K = 2 unless given) so that ``--device cpu --quick`` checks the plumbing on a laptop
or CI. The targets are for the full sizes on a GPU only.
"""
from __future__ import annotations

import gc
import json
import math
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from gp_loss.errors import GpLossError
from gp_loss.runtime.device import check_device
from gp_loss.runtime.threads import torch_threads
from gp_loss.tasks.detection.models import BOX_DETECTORS

TARGET_STEP_RATIO = 1.05
TARGET_AP50 = 0.85
TARGET_WORKER_RATIO = 2.0
MODELS = BOX_DETECTORS  # every registered detector that trains on boxes alone
WORKERS_FULL = 4              # K by default
WORKERS_QUICK = 2             # K by default with --quick: each worker process starts torch, seconds of CPU
COST_TASK = "classification"  # whose search measures the cost of --deterministic and bf16
AP_LOSS = "fl_giou"           # the detection task's baseline: sigmoid focal + GIoU


@dataclass(frozen=True)
class SearchPlan:
    """One task's search runs: the budget, the script's flags and its ``--config`` (baselines, task options)."""

    evaluations: int
    flags: tuple[str, ...]
    config: dict = field(default_factory=dict)


# Every search: no warm start, one fidelity, no final choice or top retrained (only the search phase
# is timed; the baselines' final retraining is cut to the one baseline kept and a tiny schedule).
SEARCH_FLAGS = ("--warm-start", "none", "--selection-seeds", "0", "--fidelities", "1", "--final-top", "0")


@dataclass(frozen=True)
class Sizes:
    """What each part runs: the step-time detectors, the AP50 training and the searches."""

    backbone: str
    image_size: int
    batch: int
    steps: int
    warmup: int
    ap_backbone: str
    ap_image_size: int
    ap_batch: int
    ap_canvases: int
    checkpoints: tuple[float, ...]
    searches: dict[str, SearchPlan]


FULL = Sizes(
    backbone="resnet18", image_size=256, batch=16, steps=20, warmup=3,
    ap_backbone="resnet18", ap_image_size=256, ap_batch=16, ap_canvases=480, checkpoints=(30.0, 60.0, 90.0),
    searches={
        "classification": SearchPlan(30, ("--final-epochs", "1"), {"baselines": ["ce"]}),
        "detection": SearchPlan(8, ("--backbone", "resnet18", "--image-size", "256", "--batch-size", "8",
                                    "--proxy-steps", "60", "--final-steps", "10"), {"baselines": ["fl_giou"]}),
        "segmentation": SearchPlan(8, ("--model", "lraspp_mobilenet_v3_large", "--image-size", "256",
                                       "--proxy-steps", "100", "--final-steps", "10"), {"baselines": ["ce"]}),
    })
# One torch thread per proxy: K workers share 2 cores in CI, where more threads would only contend.
QUICK = Sizes(
    backbone="small", image_size=64, batch=2, steps=3, warmup=1,
    ap_backbone="small", ap_image_size=64, ap_batch=4, ap_canvases=48, checkpoints=(3.0, 6.0, 9.0),
    searches={
        "classification": SearchPlan(4, ("--proxy-epochs", "1", "--final-epochs", "1"),
                                     {"baselines": ["ce"], "torch_threads": 1}),
        "detection": SearchPlan(4, ("--image-size", "32", "--batch-size", "2", "--proxy-steps", "2",
                                    "--final-steps", "1"),
                                {"baselines": ["fl_giou"], "torch_threads": 1, "task_options": {"canvases": 16}}),
        "segmentation": SearchPlan(4, ("--image-size", "32", "--canvases", "16", "--batch-size", "2",
                                       "--proxy-steps", "2", "--final-steps", "1"),
                                   {"baselines": ["ce"], "torch_threads": 1}),
    })


def check_options(device: str, workers: int) -> None:
    """Raise a one-line :class:`GpLossError` for a setting the benchmark cannot run."""
    check_device(device)
    if workers < 2:
        raise GpLossError(f"--workers must be at least 2 to compare K workers with 1, got {workers}")


def one_device(spec: str) -> str:
    """The one device every part runs on: ``auto`` and ``cuda`` mean the first GPU (or the CPU without one).

    Resolved here rather than by :func:`~gp_loss.runtime.device.resolve_device`, which would claim a
    worker slot for this process and shift the searches' workers over the GPUs.
    """
    check_device(spec)
    if spec in ("auto", "cuda"):
        return "cuda:0" if torch.cuda.is_available() and torch.cuda.device_count() > 0 else "cpu"
    return spec


def error_text(err: BaseException) -> str:
    """An error as one figure's text: ``"error: Type: message"`` (a failed search: the last line of its stderr)."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    if isinstance(err, RuntimeError) and len(lines) > 1 and " failed:" in lines[0]:  # run_script's
        last = lines[-1]
        return last if last.startswith("error: ") else f"error: {last}"
    return f"error: {type(err).__name__}: {lines[0] if lines else ''}"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _release(device: torch.device) -> None:
    """Give what this process's finished parts cached back to the GPU (for the parts after, and the search
    processes); called once a part has returned, when nothing of it is referenced any more."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# -- 1. step time -----------------------------------------------------------------------

def bench_step_time(device: str, sizes: Sizes, seed: int, progress: Callable[[str], None]) -> tuple[dict, dict]:
    """``({model: genome/torchvision ratio or error text}, {model: details})``."""
    from gp_loss.bench.detection import bench_detection_loss

    ratios, details = {}, {}
    for model in MODELS:
        try:
            r = bench_detection_loss(model, sizes.backbone, sizes.image_size, sizes.batch, sizes.steps,
                                     sizes.warmup, device=device, seed=seed)
            ratios[model] = r["ratio"]
            details[model] = {k: r[k] for k in ("ratio_q1", "ratio_q3", "ratio_of_medians", "max_relative_difference",
                                                "torchvision_loss", "genome_loss")}
            details[model]["median_ms"] = {which: m["median"] for which, m in r["ms"].items()}
            progress(f"step time {model}: genome/torchvision {r['ratio']:.3f}x")
        except Exception as err:  # noqa: BLE001 - one detector failing leaves the others' figures
            ratios[model] = error_text(err)
            progress(f"step time {model}: {ratios[model]}")
        finally:
            _release(torch.device(device))
    return ratios, details


# -- 2. AP50 after a time budget -----------------------------------------------------------

def checkpoint_label(seconds: float) -> str:
    """The key of a checkpoint's figure: ``"30s"``."""
    return f"{seconds:g}s"


def bench_ap50(device: str, sizes: Sizes, seed: int, progress: Callable[[str], None]) -> tuple[dict, list[dict]]:
    """Train FCOS with Focal + GIoU and evaluate AP50 after each checkpoint's seconds of training.

    Returns ``({"30s": AP50 or error text, ...}, [{"budget_s", "trained_s", "steps", "AP", "AP50"}, ...])``.
    """
    labels = [checkpoint_label(s) for s in sizes.checkpoints]
    figures: dict[str, float | str] = {}
    rows: list[dict] = []
    dev = torch.device(device)
    try:
        from gp_loss.tasks.detection import DETECTORS, target_labels
        from gp_loss.tasks.detection.task import DetectionOptions, DetectionTask

        o = DetectionOptions(model="fcos", backbone=sizes.ap_backbone, image_size=sizes.ap_image_size,
                             canvases=sizes.ap_canvases, batch_size=sizes.ap_batch)
        task = DetectionTask(o, dev)
        model = task.build(AP_LOSS, seed)
        model.train()
        # The task's proxy optimiser (DetectionTask.train): SGD with its momentum and weight decay and its
        # linear warm-up; then a constant rate, since a training bounded by time has no known last step
        # for the task's cosine decay to reach.
        optimizer = torch.optim.SGD(model.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
        warmup = max(1, o.warmup_steps)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup))
        order = torch.Generator().manual_seed(seed)
        train, names = task.data.train, DETECTORS[o.model].loss_terms
        queue: list[int] = []
        trained, steps = 0.0, 0
        for budget, label in zip(sizes.checkpoints, labels):
            while trained < budget:
                if len(queue) < o.batch_size:  # epochs over the training canvases, reshuffled each time
                    queue += torch.randperm(len(train), generator=order).tolist()
                index, queue = queue[:o.batch_size], queue[o.batch_size:]
                _sync(dev)
                start = time.perf_counter()
                images, boxes, classes = train.batch(index)
                targets = [{"boxes": b, "labels": target_labels(o.model, c)} for b, c in zip(boxes, classes)]
                terms = {names.get(k) or k: v for k, v in model(images, targets).items()}
                loss = sum(terms.values())
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                _sync(dev)
                trained += time.perf_counter() - start
                steps += 1
                if not math.isfinite(float(loss.detach())):  # (after the clock: it waits for the device)
                    raise FloatingPointError(f"the Focal + GIoU loss is not finite at step {steps}")
            metrics = task.evaluate(model)  # not timed
            ap50 = metrics.get("AP50")
            figures[label] = ap50 if ap50 is not None else "error: AP50 undefined (no detections to score)"
            rows.append({"budget_s": budget, "trained_s": trained, "steps": steps, "AP": metrics.get("AP"),
                         "AP50": ap50})
            progress(f"AP50 after {trained:.1f} s of training ({steps} steps): "
                     + (f"{ap50:.3f}" if ap50 is not None else "undefined"))
    except Exception as err:  # noqa: BLE001 - the checkpoints reached keep their figures
        text = error_text(err)
        for label in labels:
            figures.setdefault(label, text)
        progress(f"AP50: {text}")
    return figures, rows


# -- 3-5. searches: workers, deterministic and bf16, peak memory ------------------------------

def _summary(run: dict) -> dict:
    """A run's figures without its hall of fame (formula text, for the same-hall-of-fame check only)."""
    return {k: v for k, v in run.items() if k != "hall_of_fame"}


def _ratio(a: float, b: float) -> float | str:
    return a / b if b > 0 else "error: the plain run made no evaluation per minute"


def bench_searches(device: str, sizes: Sizes, workers: int, seed: int,
                   progress: Callable[[str], None]) -> dict:
    """Evaluations per minute (1 and K workers), the cost of --deterministic and bf16, and peak memory."""
    from gp_loss.bench.device import bench_device, task_script
    from gp_loss.bench.search import run_script

    throughput: dict[str, dict[str, float | str]] = {}
    memory: dict[str, float | str] = {}
    cost: dict[str, float | str] = {}
    runs: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="gp-loss-bench-gpu-") as tmp:
        for task, plan in sizes.searches.items():
            config = Path(tmp) / f"{task}.json"
            config.write_text(json.dumps(plan.config))
            args = ["--seed", str(seed), "--config", str(config), *SEARCH_FLAGS, *plan.flags]
            cost_task = task == COST_TASK
            try:
                r = bench_device(plan.evaluations, device, workers, deterministic=False,
                                 script=task_script(task), script_args=args)
            except Exception as err:  # noqa: BLE001 - the other tasks' searches still run
                text = error_text(err)
                throughput[task] = {"1_worker": text, "k_workers": text, "ratio": text}
                memory[task] = text
                if cost_task:
                    cost.update(deterministic=text, bf16=text)
                progress(f"searches {task}: {text}")
                continue
            one, many = r["runs"]["1 worker"], r["runs"][f"{workers} workers"]
            runs[task] = {label: _summary(run) for label, run in r["runs"].items()}
            runs[task]["same_hall_of_fame"] = r["same_hall_of_fame"]
            throughput[task] = {"1_worker": one["evaluations_per_minute"],
                                "k_workers": many["evaluations_per_minute"], "ratio": r["speedup"]}
            peak = many.get("peak_memory_mib")
            memory[task] = peak if peak is not None else "error: no proxy training of the K-worker run recorded it"
            progress(f"searches {task}: {one['evaluations_per_minute']:.1f} evaluations/min with 1 worker, "
                     f"{many['evaluations_per_minute']:.1f} with {workers} ({r['speedup']:.2f}x)")
            if not cost_task:
                continue
            for name, flags in (("deterministic", ["--deterministic"]), ("bf16", ["--precision", "bf16"])):
                # bench_device's 1-worker run again, with the one flag more
                out = Path(tmp) / name
                cmd = [sys.executable, task_script(task), "--out", str(out), "--evaluations", str(plan.evaluations),
                       "--final-top", "1", "--final-seeds", "1", "--no-progress", "--device", device, *args,
                       "--map", "serial", *flags]
                try:
                    variant = run_script(cmd, out)
                    runs[task][f"1 worker, {name}"] = _summary(variant)
                    cost[name] = _ratio(variant["evaluations_per_minute"], one["evaluations_per_minute"])
                except Exception as err:  # noqa: BLE001 - a mode failing here is its figure's error, not the bench's
                    cost[name] = error_text(err)
            progress(f"cost on {task}, 1 worker: --deterministic {_text(cost['deterministic'], 'x')}, "
                     f"bf16 {_text(cost['bf16'], 'x')} the plain run's evaluations per minute")
    return {"evaluations_per_minute": throughput, "cost": cost, "peak_memory_mib": memory, "runs": runs}


# -- the whole bench ------------------------------------------------------------------------

def bench_gpu(device: str = "auto", quick: bool = False, workers: int = 4, seed: int = 0,
              progress: Callable[[str], None] | None = None) -> dict:
    """Run every part on ``device`` (one GPU, or the CPU) and return the figures (see the module docstring).

    ``progress``: called with a line as each figure is measured.
    """
    check_options(device, workers)
    dev = one_device(device)
    sizes = QUICK if quick else FULL
    say = progress or (lambda line: None)
    clock = {"start": time.perf_counter()}
    seconds: dict[str, float] = {}

    def lap(name: str) -> None:
        now = time.perf_counter()
        seconds[name] = now - clock["start"]
        clock["start"] = now

    began = time.perf_counter()
    # On the CPU this process trains with one thread, as each search's proxies do: on a shared machine
    # more threads wait on each other far longer than they compute.
    with torch_threads(1 if dev == "cpu" else None):
        step_ratio, step_details = bench_step_time(dev, sizes, seed, say)
        lap("step_time")
        ap50, ap50_rows = bench_ap50(dev, sizes, seed, say)
        _release(torch.device(dev))
        lap("ap50")
    searches = bench_searches(dev, sizes, workers, seed, say)
    lap("searches")
    seconds["total"] = time.perf_counter() - began
    final_ap = ap50[checkpoint_label(sizes.checkpoints[-1])]
    applies = not quick and torch.device(dev).type == "cuda"
    met = {
        "step_time_ratio": {m: r <= TARGET_STEP_RATIO if isinstance(r, float) else False
                            for m, r in step_ratio.items()},
        "ap50": isinstance(final_ap, float) and final_ap >= TARGET_AP50,
        "worker_ratio": {t: isinstance(v["ratio"], float) and v["ratio"] >= TARGET_WORKER_RATIO
                         for t, v in searches["evaluations_per_minute"].items()},
    }
    return _strict({
        "device": dev, "device_name": torch.cuda.get_device_name(dev) if dev.startswith("cuda") else "cpu",
        "quick": quick, "workers": workers, "seed": seed,
        "step_time_ratio": step_ratio,
        "ap50": ap50,
        "evaluations_per_minute": searches["evaluations_per_minute"],
        "cost": {"task": COST_TASK, **searches["cost"]},
        "peak_memory_mib": searches["peak_memory_mib"],
        "targets": {"step_time_ratio": TARGET_STEP_RATIO, "ap50": TARGET_AP50,
                    "ap50_after_s": sizes.checkpoints[-1], "worker_ratio": TARGET_WORKER_RATIO},
        # The targets are set for the full sizes on a GPU: elsewhere none is judged.
        "targets_apply": applies,
        "target_met": met if applies else None,
        "settings": {
            "step_time": {"backbone": sizes.backbone, "image_size": sizes.image_size, "batch": sizes.batch,
                          "steps": sizes.steps, "warmup": sizes.warmup},
            "ap50": {"model": "fcos", "loss": AP_LOSS, "backbone": sizes.ap_backbone,
                     "image_size": sizes.ap_image_size, "batch": sizes.ap_batch, "canvases": sizes.ap_canvases,
                     "checkpoints_s": list(sizes.checkpoints)},
            "searches": {task: {"evaluations": p.evaluations, "flags": [*SEARCH_FLAGS, *p.flags],
                                "config": p.config} for task, p in sizes.searches.items()},
        },
        "details": {"step_time": step_details, "ap50": ap50_rows, "searches": searches["runs"]},
        "seconds": seconds,
    })


def _strict(value):
    """``value`` with every non-finite float written as text (``"inf"``), so the JSON is strict."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    return value


def figures(result: dict) -> dict[str, float | str]:
    """Every figure of a :func:`bench_gpu` result by a dotted name: a number, or its error text."""
    out: dict[str, float | str] = {}
    for model, v in result["step_time_ratio"].items():
        out[f"step_time_ratio.{model}"] = v
    for label, v in result["ap50"].items():
        out[f"ap50.{label}"] = v
    for task, row in result["evaluations_per_minute"].items():
        for k, v in row.items():
            out[f"evaluations_per_minute.{task}.{k}"] = v
    for k in ("deterministic", "bf16"):
        out[f"cost.{k}"] = result["cost"][k]
    for task, v in result["peak_memory_mib"].items():
        out[f"peak_memory_mib.{task}"] = v
    return out


def _text(value: float | str, unit: str = "", digits: int = 3) -> str:
    return value if isinstance(value, str) else f"{value:.{digits}f}{unit}"


def format_report(result: dict) -> list[str]:
    """The printed table of :func:`bench_gpu`'s result."""
    s = result["settings"]
    st, ap = s["step_time"], s["ap50"]
    k = result["workers"]
    met = result["target_met"]

    def verdict(ok: bool | None) -> str:
        return "" if ok is None else ("met" if ok else "NOT met")

    rows: list[tuple[str, str, str, str]] = []
    for model, v in result["step_time_ratio"].items():
        rows.append((f"step time genome/torchvision, {model}", _text(v, "x"), f"<= {TARGET_STEP_RATIO:g}x",
                     verdict(met and met["step_time_ratio"][model])))
    last = checkpoint_label(ap["checkpoints_s"][-1])
    for label, v in result["ap50"].items():
        rows.append((f"AP50 after {label[:-1]} s of training", _text(v),
                     f">= {TARGET_AP50:g}" if label == last else "",
                     verdict(met and met["ap50"]) if label == last else ""))
    for task, row in result["evaluations_per_minute"].items():
        rows.append((f"evaluations/min {task}, 1 worker", _text(row["1_worker"], digits=1), "", ""))
        rows.append((f"evaluations/min {task}, {k} workers", _text(row["k_workers"], digits=1), "", ""))
        rows.append((f"  {k} workers / 1 worker", _text(row["ratio"], "x", 2), f">= {TARGET_WORKER_RATIO:g}x",
                     verdict(met and met["worker_ratio"][task])))
    c = result["cost"]
    rows.append((f"--deterministic / plain, 1 worker, {c['task']}", _text(c["deterministic"], "x", 2), "", ""))
    rows.append((f"--precision bf16 / plain, 1 worker, {c['task']}", _text(c["bf16"], "x", 2), "", ""))
    for task, v in result["peak_memory_mib"].items():
        rows.append((f"peak memory per worker, {task} ({k} workers)", _text(v, " MiB", 1), "", ""))
    width = max(len(r[0]) for r in rows)
    value_width = max([12, *(len(r[1]) for r in rows if not r[1].startswith("error"))])
    sizes = "quick sizes" if result["quick"] else "full sizes"
    lines = [f"gp-loss bench gpu on {result['device']} ({result['device_name']}), {sizes}, K = {k} workers, "
             f"seed {result['seed']}: {result['seconds']['total']:.0f} s",
             f"step time: {st['backbone']} FPN, {st['image_size']} px, batch {st['batch']}, median of {st['steps']} "
             f"alternated step pairs; AP50: FCOS {ap['backbone']}, Focal + GIoU, {ap['image_size']} px, batch "
             f"{ap['batch']}, {ap['canvases']} digit canvases, training time only",
             f"{'figure':<{width}}  {'value':>{value_width}}  {'target':<10} met"]
    for name, value, target, ok in rows:
        lines.append(f"{name:<{width}}  {value:>{value_width}}  {target:<10} {ok}".rstrip())
    if not result["targets_apply"]:
        lines.append("targets not judged: they are set for the full sizes on a GPU")
    return lines
