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
--final-seeds, with their AP. A user error is one line and exit status 2.
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
from gp_loss.tasks.detection.script_flags import DATA_AND_SCHEDULE_FLAGS  # noqa: E402

DEFAULT_OUT = "out/hps_det"
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
    "--threads": ("threads", int, 2, "torch threads per training process"),
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

    return script_settings(args, TASK_FLAGS, RUN_FLAGS, RESUMABLE, DEFAULT_OUT)


def _count(value, name: str, minimum: int) -> None:
    if value is not None and value < minimum:
        raise GpLossError(f"--{name.replace('_', '-')} must be at least {minimum}, got {value}")


def check_settings(settings: dict) -> tuple[dict, "BinLayout", list[int]]:
    """Checked task options (a dict, with ``assignment`` dynamic), the layout and the upper bounds."""
    from gp_loss.hps import STRATEGIES
    from gp_loss.runtime.device import check_device
    from gp_loss.tasks.detection.assignment import UPPER_BOUNDS, BinLayout
    from gp_loss.tasks.detection.models import fpn_levels
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
    if run["max_seconds"] is not None and not (run["max_seconds"] > 0 and math.isfinite(run["max_seconds"])):
        raise GpLossError(f"--max-seconds must be a positive number, got {run['max_seconds']}")
    check_device(run["device"])
    upper = [UPPER_BOUNDS[options.model]] * layout.size
    replace(options, assignment="dynamic", positives=upper, aspect_bins=layout.aspect_bins).check()
    return dict(task, aspect_bins=layout.aspect_bins), layout, upper


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


def compare(out: Path, options: dict, run: dict, best: list[int], metric: str, mapper) -> dict:
    """Retrain the best s and the default assignment (same seeds, --final-steps); final.json."""
    seeds = [run["seed"] + k for k in range(run["final_seeds"])]
    dynamic = {**options, "assignment": "dynamic", "positives": best}
    default = {**options, "assignment": "default", "positives": []}
    jobs = [(o, run["loss"], s, run["device"], run["threads"]) for o in (dynamic, default) for s in seeds]
    results = list(mapper(final_training, jobs))
    report = {"metric": metric, "seeds": seeds, "final_steps": options["final_steps"]}
    for name, part in (("dynamic", results[:len(seeds)]), ("default", results[len(seeds):])):
        scores = [r["score"] for r in part]
        report[name] = {"mean": sum(scores) / len(scores), "trainings": part}
    report["dynamic"]["positives"] = best
    report["gain"] = report["dynamic"]["mean"] - report["default"]["mean"]
    write_text_atomic(out / "final.json", json.dumps(report, indent=1) + "\n")
    return report


# ----------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    from gp_loss.hps import maximize
    from gp_loss.hps.design import check_size
    from gp_loss.hps.space import Box
    from gp_loss.runtime.parallel import Mapper

    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # usage error (2) or --help (0), already printed
        return stop.code if isinstance(stop.code, int) else 2
    out = None
    try:
        settings, out, resume = settings_from_args(args)
        options, layout, upper = check_settings(settings)
        run = settings["run"]
        lower = [1] * layout.size
        n_init = run["n_init"] if run["n_init"] is not None else min(2 * (layout.size + 1), math.prod(upper))
        budget = run["budget"] if run["budget"] is not None else n_init + 10
        check_size(Box.from_bounds(lower, upper), n_init)
        if budget < n_init:
            raise GpLossError(f"--budget {budget} is smaller than the initial design of {n_init} points (--n-init)")
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "config.json", json.dumps({**settings, "layout": layout.notation()}, indent=1) + "\n")
        metric = options["metric"]
        print(f"HPS-Det: {options['model']} ({options['backbone']}), layout {layout.notation()} = {layout.size} "
              f"bins, s in [1, {upper[0]}], budget {budget} proxy trainings ({n_init} in the initial design), "
              f"{options['proxy_steps']} steps each; run directory {out}", flush=True)
        objective = ProxyObjective(options, run["loss"], run["seed"], run["device"], run["threads"])
        with Mapper("multiprocessing" if run["workers"] > 1 else "serial", run["workers"]) as mapper:
            started = time.perf_counter()
            result = maximize(objective, lower, upper, budget=budget, seed=run["seed"], strategy=run["strategy"],
                              n_init=n_init, map=mapper, max_seconds=run["max_seconds"], run_dir=out, resume=resume)
            write_history(out, result, layout, metric, lower, upper, n_init)
            if result.best_x is None:
                raise GpLossError(f"every proxy training failed (first: {next(iter(result.errors.values()), '?')}); "
                                  f"see {out / 'history.csv'}")
            print(f"search: {len(result.history)} proxy trainings in {time.perf_counter() - started:.0f} s "
                  f"({result.stopped}); best {metric} {result.best_value:.4f} with s = {result.best_x}", flush=True)
            report = compare(out, options, run, result.best_x, metric, mapper)
    except GpLossError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted: continue with --resume {out}" if out else "interrupted", file=sys.stderr)
        return 130
    except WorkerDied as err:
        print(f"error: a worker process died (killed, or out of memory?): {str(err).rstrip('.')}. "
              f"Continue with --resume {out}", file=sys.stderr)
        return 1
    d, b = report["dynamic"], report["default"]
    print(f"\n{metric} after {options['final_steps']} steps, seeds {report['seeds']}:")
    rows = [(f"dynamic assignment, s = {d['positives']}", f"{d['mean']:.4f}"),
            (f"default assignment ({options['model']})", f"{b['mean']:.4f}"), ("gain", f"{report['gain']:+.4f}")]
    width = max(len(label) for label, _ in rows) + 2
    for label, value in rows:
        print(f"  {(label + ':').ljust(width)}{value}")
    print(f"\nrun directory: {out} (best.json, final.json, history.csv, history.json, ap_over_iterations.png, "
          f"checkpoint.json)")
    return 0


if __name__ == "__main__":
    run_script(main)
