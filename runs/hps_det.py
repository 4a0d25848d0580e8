"""HPS-Det: search the number of positives per (FPN level x aspect-ratio bin) of FCOS or RetinaNet's
dynamic sample assignment, then compare it with the detector's default assignment.

    python runs/hps_det.py --out out/hps_det                      # CPU scale: 9 bins, 30 proxies (about 8 minutes)
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
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gp_loss.errors import GpLossError  # noqa: E402
from gp_loss.evolution.script import run_script  # noqa: E402
from gp_loss.runtime.atomic import write_bytes_atomic, write_text_atomic  # noqa: E402
from gp_loss.runtime.parallel import WorkerDied  # noqa: E402
from gp_loss.runtime.terminal import safe_line, safe_text  # noqa: E402
from gp_loss.tasks.base import FAILED_STATUSES as FAILED  # noqa: E402
from gp_loss.tasks.detection.script_flags import DATA_AND_SCHEDULE_FLAGS  # noqa: E402

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
    "--workers": ("workers", int, 1, "proxy trainings at once (processes)"),
    "--device": ("device", str, "auto", "auto (CUDA when present), cpu, cuda or cuda:N"),
    "--threads": ("threads", int, 2, "torch threads per training process (at most 256)"),
    "--max-seconds": ("max_seconds", float, None, "also stop the search after this wall time"),
}
# Settings that may differ on --resume (the rest must match the stored run).
RESUMABLE = {"budget", "workers", "device", "threads", "max_seconds", "final_seeds"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                argument_default=argparse.SUPPRESS)
    p.add_argument("--out", help=f"run directory to create (default {DEFAULT_OUT})")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR (its stored settings; "
                                                   "--budget may be raised)")
    for flag, (_, kind, default, text) in {**TASK_FLAGS, **RUN_FLAGS}.items():
        p.add_argument(flag, type=kind, help=f"{text} (default {default})" if default not in (None, "") else text)
    return p


# ----------------------------------------------------------------------------- settings

def settings_from_args(args: argparse.Namespace) -> tuple[dict, Path, bool]:
    """The run's settings (``task`` options and ``run`` settings), its directory and whether it resumes."""
    from gp_loss.runtime.run_dir import script_settings

    return script_settings(args, TASK_FLAGS, RUN_FLAGS, RESUMABLE, DEFAULT_OUT, KIND)


def _count(value, name: str, minimum: int) -> None:
    if value is not None and value < minimum:
        raise GpLossError(f"--{name.replace('_', '-')} must be at least {minimum}, got {value}")


def map_kind(run: dict) -> str:
    """How the trainings run: in worker processes with --workers above 1, else in this one."""
    return "multiprocessing" if run["workers"] > 1 else "serial"


def check_settings(settings: dict) -> dict:
    """Every setting checked, the data loaded once, before anything is created: the search's plan.

    ``options`` (the task options, a dict, ``aspect_bins`` from the layout), ``layout``, the bounds
    ``lower`` / ``upper`` of s, ``n_init`` and ``budget``.
    """
    from gp_loss.evolution.config import MAX_FINAL_SEEDS, MAX_TORCH_THREADS
    from gp_loss.hps import STRATEGIES
    from gp_loss.hps.design import check_size
    from gp_loss.hps.space import Box
    from gp_loss.runtime.device import check_device
    from gp_loss.runtime.parallel import Mapper
    from gp_loss.tasks.detection.assignment import UPPER_BOUNDS, BinLayout
    from gp_loss.tasks.detection.models import fpn_levels
    from gp_loss.tasks.detection.script_flags import check_data
    from gp_loss.tasks.detection.task import BASELINES, DetectionOptions

    task, run = settings["task"], settings["run"]
    if task["model"] not in UPPER_BOUNDS:
        raise GpLossError(f"--model must be one of {', '.join(UPPER_BOUNDS)}, got {task['model']!r}")
    options = DetectionOptions.from_dict(task)
    options.check()  # every task option, before any training
    layout = BinLayout.parse(run["bins"], fpn_levels(options.backbone))
    if run["loss"] not in BASELINES[options.model]:
        raise GpLossError(f"--loss must be one of {', '.join(BASELINES[options.model])}, got {run['loss']!r}")
    if run["strategy"] not in STRATEGIES:
        raise GpLossError(f"--strategy must be one of {', '.join(STRATEGIES)}, got {run['strategy']!r}")
    for name, minimum in (("budget", 1), ("n_init", 1), ("final_seeds", 1), ("workers", 1), ("threads", 1)):
        _count(run[name], name, minimum)
    if run["threads"] > MAX_TORCH_THREADS:
        raise GpLossError(f"--threads must be at most {MAX_TORCH_THREADS}, got {run['threads']}")
    if run["final_seeds"] > MAX_FINAL_SEEDS:
        raise GpLossError(f"--final-seeds must be at most {MAX_FINAL_SEEDS}, got {run['final_seeds']}")
    if not 0 <= run["seed"] <= 2**32 - 1:
        raise GpLossError(f"--seed must be in [0, 2**32 - 1], got {run['seed']}")
    if run["max_seconds"] is not None and not (run["max_seconds"] > 0 and math.isfinite(run["max_seconds"])):
        raise GpLossError(f"--max-seconds must be a positive number, got {run['max_seconds']}")
    check_device(run["device"])
    Mapper.check(map_kind(run), run["workers"], run["device"])  # as many workers as the machine holds
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


# ----------------------------------------------------------------------------- trainings (top level: they pickle)

def _task(options: dict, device: str, threads: int):
    """The detection task of ``options`` in this process (built once per configuration)."""
    from gp_loss.tasks.registry import process_task

    return process_task("detection", options, device, threads)


class ProxyObjective:
    """s (one positive count per bin) -> the validation metric of a proxy training with dynamic assignment.

    A training that stops on a non-finite loss or is too slow scores 0 (a bad s); one that raises is
    a failed point (the search records its reason and goes on).
    """

    def __init__(self, options: dict, loss: str, seed: int, device: str, threads: int):
        self.options, self.loss, self.seed, self.device, self.threads = options, loss, seed, device, threads

    def __call__(self, s: list[int]) -> float:
        out = _task({**self.options, "assignment": "dynamic", "positives": [int(v) for v in s]},
                    self.device, self.threads).proxy_fitness(self.loss, self.seed)
        if out.status == "error":
            raise RuntimeError(out.reason)
        return float(out.score)


def final_training(job: tuple) -> dict:
    """One final training: ``(options, loss, seed, device, threads)`` -> its metrics and status."""
    options, loss, seed, device, threads = job
    out = _task(options, device, threads).final_score(loss, seed)
    return {"seed": seed, "score": out.score, "status": out.status, "reason": out.reason,
            "metrics": out.metrics, "seconds": round(out.seconds, 2)}


# ----------------------------------------------------------------------------- run files

def write_history(out: Path, result, layout, metric: str, lower: list[int], upper: list[int], n_init: int) -> None:
    """history.csv, history.json, best.json and ap_over_iterations.png from the search's result."""
    names = layout.bin_names()
    best, rows = None, []
    for k, ((x, value), t) in enumerate(zip(result.history, result.times)):
        if value is not None and (best is None or value > best):
            best = value
        rows.append({"evaluation": k + 1, metric: value, f"best_{metric}": best, "seconds": round(t, 2),
                     "error": result.errors.get(k, ""), "positives": x})
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["evaluation", metric, f"best_{metric}", "seconds", "error"] + [f"s{j}" for j in range(len(names))])
    for r in rows:
        writer.writerow([r["evaluation"], "" if r[metric] is None else r[metric],
                         "" if r[f"best_{metric}"] is None else r[f"best_{metric}"], r["seconds"], r["error"]]
                        + r["positives"])
    write_text_atomic(out / "history.csv", text.getvalue())
    summary = {"layout": layout.notation(), "bins": names, "lower": lower, "upper": upper, "n_init": n_init,
               "metric": metric, "stopped": result.stopped, "seconds": round(result.seconds, 2)}
    write_text_atomic(out / "history.json", json.dumps({**summary, "evaluations": rows}, indent=1) + "\n")
    write_text_atomic(out / "best.json", json.dumps({
        "positives": result.best_x, metric: result.best_value, "layout": layout.notation(),
        "by_bin": None if result.best_x is None else dict(zip(names, result.best_x)),
        "evaluations": len(rows)}, indent=1) + "\n")
    plot_history(out / "ap_over_iterations.png", rows, metric, n_init)


def plot_history(path: Path, rows: list[dict], metric: str, n_init: int) -> None:
    """The paper's Fig. 2: the metric of each evaluation and the best so far, over the search's iterations."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
    xs = [r["evaluation"] for r in rows if r[metric] is not None]
    ax.plot(xs, [r[metric] for r in rows if r[metric] is not None], "o-", ms=3, lw=0.8, color="tab:blue",
            label=f"{metric} of each proxy training")
    ax.plot(xs, [r[f"best_{metric}"] for r in rows if r[metric] is not None], "-", lw=1.6, color="tab:red",
            label="best so far")
    ax.axvline(n_init + 0.5, color="grey", ls=":", lw=1, label="end of the initial design")
    ax.set_xlabel("iteration (proxy trainings)")
    ax.set_ylabel(metric)
    ax.set_title("HPS-Det search")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    write_bytes_atomic(path, buffer.getvalue())


def _per_seed(arm: dict) -> dict:
    """``{"seeds", "scores"}`` of one arm's final trainings (shape (n,) each), for the paired comparison."""
    return {"seeds": [t["seed"] for t in arm["trainings"]], "scores": [t["score"] for t in arm["trainings"]]}


def compare(out: Path, options: dict, run: dict, best: list[int], metric: str, mapper) -> dict:
    """Retrain the best s and the default assignment (same seeds, --final-steps), a line each; final.json.

    final.json's ``dynamic`` holds ``vs_reference``: its paired difference from the default assignment
    (``"reference"``), the 95% interval and the verdict (gp_loss.metrics.paired).

    Every training of the default assignment failing leaves nothing to compare against: a one-line
    error with the first reason, never a gain over zeros.
    """
    from gp_loss.metrics.paired import compare_rows
    from gp_loss.runtime.progress import Progress, map_reporting

    seeds = [run["seed"] + k for k in range(run["final_seeds"])]
    arms = {"dynamic": {**options, "assignment": "dynamic", "positives": best},
            "default": {**options, "assignment": "default", "positives": []}}
    jobs = [(name, (o, run["loss"], s, run["device"], run["threads"])) for name, o in arms.items() for s in seeds]
    with Progress(len(jobs), "final") as progress:
        def finished(index: int, r: dict) -> None:
            name, (_, _, seed, _, _) = jobs[index]
            outcome = f"{metric} {r['score']:.4f}" if r["status"] not in FAILED else \
                safe_line(f"failed ({r['status']}: {r['reason']})")
            progress.step()
            progress.line(f"final: seed {seeds.index(seed) + 1}/{len(seeds)} of the {name} assignment | "
                          f"{outcome} | {r['seconds']:.0f} s")

        results = map_reporting(mapper, final_training, [job for _, job in jobs], finished)
    report = {"metric": metric, "seeds": seeds, "final_steps": options["final_steps"]}
    for k, name in enumerate(arms):
        part = results[k * len(seeds):(k + 1) * len(seeds)]
        scores = [r["score"] for r in part]
        report[name] = {"mean": sum(scores) / len(scores), "trainings": part,
                        "failed": all(r["status"] in FAILED for r in part)}
    if report["default"]["failed"]:
        first = report["default"]["trainings"][0]
        raise GpLossError(safe_line(f"every final training of the default assignment failed (seed {first['seed']}: "
                                    f"{first['status']}: {first['reason']}): nothing to compare the searched s "
                                    f"with; check the data and the task settings"))
    report["dynamic"]["positives"] = best
    # A searched s whose every training failed has no score to take a gain from.
    report["gain"] = None if report["dynamic"]["failed"] else report["dynamic"]["mean"] - report["default"]["mean"]
    # Both arms trained on the same seeds: the paired difference and its interval say whether the gain
    # exceeds seed noise (a failed training scores 0, as in every final comparison).
    report["reference"] = "default"
    report["dynamic"]["vs_reference"] = {"baseline": "default", **compare_rows(
        _per_seed(report["dynamic"]), _per_seed(report["default"]))}
    write_text_atomic(out / "final.json", json.dumps(report, indent=1) + "\n")
    return report


# ----------------------------------------------------------------------------- main

def search(out: Path, plan: dict, run: dict, resume: bool, mapper):
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
                          strategy=run["strategy"], n_init=plan["n_init"], map=mapper,
                          max_seconds=run["max_seconds"], run_dir=out, resume=resume, progress=report)
    write_history(out, result, plan["layout"], metric, plan["lower"], plan["upper"], plan["n_init"])
    if result.best_x is None:
        raise GpLossError(safe_line(f"every proxy training failed (first: "
                                    f"{next(iter(result.errors.values()), '?')}); see {out / 'history.csv'}"))
    return result


def main(argv: list[str] | None = None) -> int:
    from gp_loss.metrics.paired import comparison_text
    from gp_loss.runtime.parallel import Mapper
    from gp_loss.runtime.run_dir import script_run

    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # usage error (2) or --help (0), already printed
        return stop.code if isinstance(stop.code, int) else 2
    out = None  # the run directory, once this process holds it
    try:
        settings, where, resume = settings_from_args(args)
        plan = check_settings(settings)  # everything, before the directory is touched
        options, layout, run = plan["options"], plan["layout"], settings["run"]
        metric = options["metric"]
        with script_run(where, resume, KIND) as run_dir:
            out = run_dir.path
            write_text_atomic(out / "config.json", json.dumps({**settings, "layout": layout.notation()},
                                                              indent=1) + "\n")
            print(f"HPS-Det: {options['model']} ({options['backbone']}), layout {layout.notation()} = "
                  f"{layout.size} bins, s in [1, {plan['upper'][0]}], budget {plan['budget']} proxy trainings "
                  f"({plan['n_init']} in the initial design), {options['proxy_steps']} steps each; run directory "
                  f"{safe_line(out)}", flush=True)
            with Mapper(map_kind(run), run["workers"], run["device"]) as mapper:
                started = time.perf_counter()
                result = search(out, plan, run, resume, mapper)
                print(f"search: {len(result.history)} proxy trainings in {time.perf_counter() - started:.0f} s "
                      f"({result.stopped}); best {metric} {result.best_value:.4f} with s = {result.best_x}; "
                      f"final comparison: {2 * run['final_seeds']} trainings of {options['final_steps']} steps",
                      flush=True)
                report = compare(out, options, run, result.best_x, metric, mapper)
    except GpLossError as err:
        print(safe_text(f"error: {err}"), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted: continue with --resume {safe_line(out)}" if out else "interrupted", file=sys.stderr)
        return 130
    except WorkerDied as err:
        print(safe_text(f"error: a worker process died (killed, or out of memory?): {str(err).rstrip('.')}. "
              f"Continue with --resume {out}"), file=sys.stderr)
        return 1
    d, b = report["dynamic"], report["default"]
    print(f"\n{metric} after {options['final_steps']} steps, seeds {report['seeds']}:")
    dynamic = "failed (every seed)" if d["failed"] else f"{d['mean']:.4f}"
    rows = [(f"dynamic assignment, s = {d['positives']}", dynamic),
            (f"default assignment ({options['model']})", f"{b['mean']:.4f}"),
            ("gain", "none (the searched s failed)" if report["gain"] is None else f"{report['gain']:+.4f}"),
            ("vs default, paired (×100, 95% CI)", safe_line(comparison_text(d["vs_reference"])))]
    width = max(len(label) for label, _ in rows) + 2
    for label, value in rows:
        print(f"  {(label + ':').ljust(width)}{value}")
    print(f"\nrun directory: {safe_line(out)} (best.json, final.json, history.csv, history.json, "
          f"ap_over_iterations.png, checkpoint.json)")
    return 0


if __name__ == "__main__":
    run_script(main)
