"""HPS-Det: search the number of positives per (FPN level x aspect-ratio bin) of FCOS or RetinaNet's
dynamic sample assignment, then compare it with the detector's default assignment.

    python runs/hps_det.py --out out/hps_det                      # CPU scale: 9 bins, 30 proxies
    python runs/hps_det.py --map ray --workers 4 --out out/hps_ray  # on Ray (--ray-address HOST:PORT: a cluster)
    python runs/hps_det.py --resume out/hps_det --budget 40       # continue it, with a larger budget
    python runs/hps_det.py --model retinanet --bins 3 --out out/hps_retina     # levels pooled, 3 aspect bins
    python runs/hps_det.py --device cuda --workers 4 --backbone resnet18 --image-size 256 \\
        --canvases 2000 --proxy-steps 1000 --final-steps 3000 --budget 100 --out out/hps_gpu  # a real run
    python runs/hps_det.py --data train.json --val-data val.json --device cuda ...        # your COCO data

Ji Liu et al. (AMD), "Dynamic Sample Assignment with Hyper-Parameter Search for Object
Detection": each ground truth is binned by its best-matching FPN level and its aspect
ratio, and during training the s[bin] candidates of lowest focal + alpha * GIoU loss become
its positives (gp_loss/tasks/detection/assignment.py). The search (gp_loss.hps.maximize,
DYCORS on a Gaussian-process surrogate by default) maximises the validation AP of a short
proxy training as a function of s, every bin's count in [1, 25] (FCOS) or [1, 80]
(RetinaNet). Every proxy trains from the same seed, so the AP differences come from s.

--bins: "default" (3 aspect bins per level: 9 numbers on the small backbone's 3 levels, 15
on a ResNet's 5, the paper's (3,3,3,3,3)), one count per level such as 1,1,1 or 1,1,1,1,1,
or one count for all levels: 5, 3 or 1 (the paper's ablation layouts).

The run directory holds config.json (the settings; --resume uses them), checkpoint.json
(the search, exact on resume), history.csv and history.json (every evaluation: s, AP,
seconds, error), best.json (the best s), ap_over_iterations.png (the paper's Fig. 2) and
final.json: the best s and the default assignment retrained for --final-steps on the same
--final-seeds, with their AP and the paired difference of the two (its 95% interval and verdict).
Each proxy and final training prints one line as it ends (a progress bar too when stderr is a
terminal). While it runs, the directory is locked: a second process on it
is refused, naming the first. A user error is one line and exit status 2, and leaves nothing behind.

``--help`` prints every flag; the code is gp_loss/tasks/detection/hps_search.py.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import replace
from pathlib import Path

from gp_loss.errors import GpLossError
from gp_loss.runtime.atomic import write_text_atomic
from gp_loss.runtime.parallel import BACKEND_FLAGS, RESUMABLE_BACKEND_SETTINGS
from gp_loss.runtime.script import Resumable, script_parser, script_status
from gp_loss.runtime.terminal import safe_line
from gp_loss.tasks.detection.hps_results import ProxyObjective, compare, comparison_table, write_history
from gp_loss.tasks.detection.script_flags import DATA_AND_SCHEDULE_FLAGS

DEFAULT_OUT = "out/hps_det"
KIND = "hps-det"  # gp_loss.runtime.run_dir.RUN_KINDS
# flag -> (setting, type, default, help). Task settings are DetectionOptions fields; the defaults size
# a CPU-scale search of about 6 minutes on 2 cores (see the docstring for a GPU run).
TASK_FLAGS = {
    "--model": ("model", str, "fcos", "fcos (default) or retinanet"),
    "--backbone": ("backbone", str, "small", "small (default, 3 FPN levels, CPU scale), resnet18, resnet34 or "
                                             "resnet50 (5 levels)"),
    **DATA_AND_SCHEDULE_FLAGS,
    "--proxy-steps": ("proxy_steps", int, 150, "SGD steps of a proxy training (the search's AP)"),
    "--final-steps": ("final_steps", int, 150, "SGD steps of the final comparison"),
    "--proxy-images": ("proxy_images", int, 0, "training images the trainings draw from (0: all)"),
    "--metric": ("metric", str, "AP", "the objective: AP (default), AP50, AP75, APs, APm or APl"),
    "--precision": ("precision", str, "fp32", "fp32 (default) or bf16"),
    "--alpha": ("assignment_alpha", float, 1.0, "the cost's GIoU weight: focal + alpha * (1 - GIoU)"),
    "--candidates": ("assignment_candidates", str, "centre", "FCOS candidates: centre (default: near the box "
                                                             "centre, as torchvision's FCOS) or box (the whole box)"),
}
RUN_FLAGS = {
    "--bins": ("bins", str, "default", "layout: default (levels x 3 aspect bins), 3,3,3 / 1,1,1 (per level) "
                                       "or 5 / 3 / 1 (levels pooled)"),
    "--loss": ("loss", str, "torchvision", "what trains the detector: a baseline name (default torchvision: "
                                           "the detector's own losses; fl_giou, ...)"),
    "--budget": ("budget", int, None, "proxy trainings in all, the initial design included "
                                      "(default: the design + 10)"),
    "--n-init": ("n_init", int, None, "initial design points (default 2(d+1))"),
    "--seed": ("seed", int, 0, "seed of the search and of every training"),
    "--strategy": ("strategy", str, "dycors", "dycors (default), srbf, ei or lcb"),
    "--final-seeds": ("final_seeds", int, 3, "seeds of the final comparison (seed, seed+1, ...)"),
    **BACKEND_FLAGS,
    "--device": ("device", str, "auto", "auto (CUDA when present), cpu, cuda or cuda:N"),
    "--threads": ("threads", int, 2, "torch threads per training process (at most 256)"),
    "--max-seconds": ("max_seconds", float, None, "also stop the search after this wall time"),
}
# Settings that may differ on --resume (the rest must match the stored run).
RESUMABLE = {"budget", "workers", "device", "threads", "max_seconds", "final_seeds"} | RESUMABLE_BACKEND_SETTINGS


def build_parser() -> argparse.ArgumentParser:
    """The command line: --out, --resume and the task and run flags."""
    return script_parser(__doc__, DEFAULT_OUT, {**TASK_FLAGS, **RUN_FLAGS},
                         resume_help="continue the run in DIR (its stored settings; --budget may be raised)")


def settings_from_args(args: argparse.Namespace) -> tuple[dict, Path, bool]:
    """The run's settings (``task`` options and ``run`` settings), its directory and whether it resumes."""
    from gp_loss.runtime.run_dir import script_settings

    return script_settings(args, TASK_FLAGS, RUN_FLAGS, RESUMABLE, DEFAULT_OUT, KIND)


def _count(value, name: str, minimum: int) -> None:
    if value is not None and value < minimum:
        raise GpLossError(f"--{name.replace('_', '-')} must be at least {minimum}, got {value}")


def check_settings(settings: dict) -> dict:
    """Every setting checked, the data loaded once, before anything is created: the search's plan.

    ``options`` (the task options, a dict, ``aspect_bins`` from the layout), ``layout``, the bounds
    ``lower`` / ``upper`` of s, ``n_init`` and ``budget``.
    """
    from gp_loss.evolution.config import check_run_settings
    from gp_loss.hps import STRATEGIES
    from gp_loss.hps.design import check_size
    from gp_loss.hps.space import Box
    from gp_loss.runtime.device import check_device
    from gp_loss.runtime.parallel import check_backend_for
    from gp_loss.tasks.detection.assignment import UPPER_BOUNDS, BinLayout
    from gp_loss.tasks.detection.models import DETECTORS, fpn_levels
    from gp_loss.tasks.detection.script_flags import check_data
    from gp_loss.tasks.detection.task import DetectionOptions

    task, run = settings["task"], settings["run"]
    if task["model"] not in UPPER_BOUNDS:
        raise GpLossError(f"--model must be one of {', '.join(UPPER_BOUNDS)}, got {task['model']!r}")
    options = DetectionOptions.from_dict(task)
    options.check()  # every task option, before any training
    layout = BinLayout.parse(run["bins"], fpn_levels(options.backbone))
    baselines = DETECTORS[options.model].baselines
    if run["loss"] not in baselines:
        raise GpLossError(f"--loss must be one of {', '.join(baselines)}, got {run['loss']!r}")
    if run["strategy"] not in STRATEGIES:
        raise GpLossError(f"--strategy must be one of {', '.join(STRATEGIES)}, got {run['strategy']!r}")
    for name, minimum in (("budget", 1), ("n_init", 1), ("final_seeds", 1), ("workers", 1), ("threads", 1)):
        _count(run[name], name, minimum)
    check_run_settings(run)
    if run["max_seconds"] is not None and not (run["max_seconds"] > 0 and math.isfinite(run["max_seconds"])):
        raise GpLossError(f"--max-seconds must be a positive number, got {run['max_seconds']}")
    check_device(run["device"])
    check_backend_for(run)  # as many workers as the machine holds
    upper = [UPPER_BOUNDS[options.model]] * layout.size
    lower = [1] * layout.size
    replace(options, assignment="dynamic", positives=upper, aspect_bins=layout.aspect_bins).check()
    n_init = run["n_init"] if run["n_init"] is not None else min(2 * (layout.size + 1), math.prod(upper))
    budget = run["budget"] if run["budget"] is not None else n_init + 10
    check_size(Box.from_bounds(lower, upper), n_init)
    if budget < n_init:
        raise GpLossError(f"--budget {budget} is smaller than the initial design of {n_init} points (--n-init)")
    check_data(options)
    return {"options": dict(task, aspect_bins=layout.aspect_bins), "layout": layout, "lower": lower,
            "upper": upper, "n_init": n_init, "budget": budget}


def search(out: Path, plan: dict, run: dict, resume: bool, backend):
    """The search (gp_loss.hps.maximize), one line per proxy training; its files written after it."""
    from gp_loss.hps import maximize
    from gp_loss.runtime.progress import Progress

    metric = plan["options"]["metric"]
    objective = ProxyObjective(plan["options"], run["loss"], run["seed"], run["device"], run["threads"])
    with Progress(plan["budget"], "search", unit="proxy") as progress:
        def report(r: dict) -> None:
            progress.at(r["done"])
            if "x" not in r:
                return
            outcome = f"{metric} {r['value']:.4f}" if r["value"] is not None else safe_line(f"failed: {r['error']}")
            best = "none yet" if r["best_value"] is None else f"{r['best_value']:.4f} at s={r['best_x']}"
            progress.line(f"eval {r['done']}/{r['budget']} | s={r['x']} {outcome} | best {best} | "
                          f"{r['seconds']:.0f} s")

        result = maximize(objective, plan["lower"], plan["upper"], budget=plan["budget"], seed=run["seed"],
                          strategy=run["strategy"], n_init=plan["n_init"], map=backend,
                          max_seconds=run["max_seconds"], run_dir=out, resume=resume, progress=report)
    write_history(out, result, plan["layout"], metric, plan["lower"], plan["upper"], plan["n_init"])
    if result.best_x is None:
        raise GpLossError(safe_line(f"every proxy training failed (first: "
                                    f"{next(iter(result.errors.values()), '?')}); see {out / 'history.csv'}"))
    return result


def main(argv: list[str] | None = None) -> int:
    """Search s, compare it with the default assignment; the exit status (:func:`script_status`)."""
    return script_status(lambda place: _run(place, argv))


def _run(place: Resumable, argv: list[str] | None) -> int:
    from gp_loss.runtime.parallel import open_backend_for
    from gp_loss.runtime.run_dir import script_run

    settings, where, resume = settings_from_args(build_parser().parse_args(argv))
    plan = check_settings(settings)  # everything, before the directory is touched
    options, layout, run = plan["options"], plan["layout"], settings["run"]
    metric = options["metric"]
    with script_run(where, resume, KIND) as run_dir:
        out = place.out = run_dir.path
        write_text_atomic(out / "config.json", json.dumps({**settings, "layout": layout.notation()},
                                                          indent=1) + "\n")
        print(f"HPS-Det: {options['model']} ({options['backbone']}), layout {layout.notation()} = "
              f"{layout.size} bins, s in [1, {plan['upper'][0]}], budget {plan['budget']} proxy trainings "
              f"({plan['n_init']} in the initial design), {options['proxy_steps']} steps each; run directory "
              f"{safe_line(out)}", flush=True)
        with open_backend_for(run) as backend:
            started = time.perf_counter()
            result = search(out, plan, run, resume, backend)
            print(f"search: {len(result.history)} proxy trainings in {time.perf_counter() - started:.0f} s "
                  f"({result.stopped}); best {metric} {result.best_value:.4f} with s = {result.best_x}; "
                  f"final comparison: {2 * run['final_seeds']} trainings of {options['final_steps']} steps",
                  flush=True)
            report = compare(out, options, run, result.best_x, metric, backend)
    print("\n" + comparison_table(report, options["model"]))
    print(f"\nrun directory: {safe_line(out)} (best.json, final.json, history.csv, history.json, "
          f"ap_over_iterations.png, checkpoint.json)")
    return 0
