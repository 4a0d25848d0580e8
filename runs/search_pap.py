"""Search Parameterized AP Loss (Tao et al., NeurIPS 2021) for a detector: the 41 values of θ
(five piecewise-linear substitutions H1, H2, I1, I2, I3 and the regression gradient scale)
that maximise the validation AP of a short proxy training, then retrain the best θ against
Focal + GIoU and PAP-Loss with identity substitutions.

    python runs/search_pap.py --out out/pap                        # CPU scale (RetinaNet, digits, 64 px)
    python runs/search_pap.py --strategy surrogate --out out/pap_s  # the same budget, HPS-Det's surrogate
    python runs/search_pap.py --theta shared --out out/pap_shared   # one function for all five: 9 values
    python runs/search_pap.py --resume out/pap                     # continue an interrupted run
    python runs/search_pap.py --device cuda --workers 8 --backbone resnet50 --image-size 512 \\
        --canvases 4000 --proxy-steps 1500 --final-steps 6000 --top-k 100000 \\
        --rounds 40 --samples 8 --final-seeds 3 --out out/pap_gpu   # the paper's budget (GPU)
    python runs/search_pap.py --data train.json --val-data val.json --device cuda ...     # your COCO data

**Strategies** (the same number of proxy trainings, ``--rounds × --samples``, so the two
compare at one budget): ``ppo`` (default) is the paper's search (gp_loss.pap.ppo: a truncated
normal policy over θ in [0, 1]^41 started at the identity, ``--samples`` θ per round, a PPO
update of its mean after each round, reward = the proxy AP); ``surrogate`` searches the same
θ with HPS-Det's optimiser (gp_loss.hps.maximize, DYCORS on a GP surrogate) on the integer
grid k = 0..--grid per coordinate, θ = k / grid. Its initial design takes 2(d + 1) points:
with a budget under 84 only the first budget // 2 − 1 coordinates (in θ order) are
searched and the rest stay at the grid point nearest the identity (a smoke-run compromise;
the printed header says how many were free).

``--theta shared`` searches the appendix's "searched shared" variant instead: one
piecewise-linear function (8 values) used for all five substitutions, and the gradient
scale, 9 values in all; everything written afterwards holds the full 41-value θ.

Every proxy trains from the same seed, so AP differences come from θ. A training that ends
on a non-finite loss scores 0; one that raises is a failed point, its reason recorded (PPO
gives it reward 0; the surrogate leaves it out of its fit). PAP-Loss ranks the top
``--top-k`` logits of a batch (the paper: 1e5); the CPU default 3000 keeps a step affordable
on the small model.

The run directory holds config.json (the settings; --resume uses them), the optimiser's own
checkpoint.json (and results.json for ppo; history.json for surrogate), theta.json (the best θ,
PAPParameters.to_json; ``gp-loss evaluate --task detection --loss pap=DIR/theta.json``),
pap_loss.py (a standalone PyTorch module of the best loss), substitutions.png (its five
functions, the appendix's Figure 1) and final.json: the best θ, fl_giou and pap (identity)
retrained for --final-steps on --final-seeds seeds, AP mean ± std, and the paired difference of the
searched θ and of pap from fl_giou (its 95% interval and verdict). Each proxy and final training
prints one line as it ends (a progress bar too when stderr is a terminal). While it runs, the
directory is locked: a second process on it is refused, naming the first. A user error is one line
and exit status 2, and leaves nothing behind.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gp_loss.errors import GpLossError  # noqa: E402
from gp_loss.evolution.script import run_script  # noqa: E402
from gp_loss.runtime.atomic import write_text_atomic  # noqa: E402
from gp_loss.runtime.parallel import WorkerDied  # noqa: E402
from gp_loss.runtime.terminal import safe_line, safe_text  # noqa: E402
from gp_loss.tasks.base import FAILED_STATUSES as FAILED  # noqa: E402
from gp_loss.tasks.detection.script_flags import DATA_AND_SCHEDULE_FLAGS  # noqa: E402

DEFAULT_OUT = "out/pap"
KIND = "pap"  # gp_loss.runtime.run_dir.RUN_KINDS
STRATEGIES = ("ppo", "surrogate")
# flag -> (setting, type, default, help). Task settings are DetectionOptions fields; the defaults size a CPU
# run of a few minutes on 2 cores (see the docstring for the paper's GPU settings).
TASK_FLAGS = {
    "--model": ("model", str, "retinanet", "retinanet (default), fcos or fasterrcnn"),
    "--backbone": ("backbone", str, "small", "small (default, CPU scale), resnet18, resnet34 or resnet50"),
    **DATA_AND_SCHEDULE_FLAGS,
    "--proxy-steps": ("proxy_steps", int, 20, "SGD steps of a proxy training (the search's AP)"),
    "--final-steps": ("final_steps", int, 60, "SGD steps of the final comparison"),
    "--metric": ("metric", str, "AP", "the objective: AP (default), AP50, AP75, APs, APm or APl"),
}
RUN_FLAGS = {
    "--strategy": ("strategy", str, "ppo", "ppo (default, the paper's) or surrogate (HPS-Det's optimiser)"),
    "--rounds": ("rounds", int, 3, "search rounds (the paper: 40); budget = rounds x samples"),
    "--samples": ("samples", int, 4, "θ sampled per round (the paper: 8; ppo: at least 2)"),
    "--theta": ("theta", str, "separate", "separate (default: 41 values, a function each) or shared (9 values: "
                                         "one function for all five, the appendix's 'searched shared')"),
    "--grid": ("grid", int, 20, "surrogate: grid steps per coordinate, θ = k / grid"),
    "--top-k": ("top_k", int, 3000, "PAP-Loss candidates per ranking (the paper: 100000)"),
    "--seed": ("seed", int, 0, "seed of the search and of every training"),
    "--final-seeds": ("final_seeds", int, 3, "seeds of the final comparison (seed, seed+1, ...)"),
    "--workers": ("workers", int, 1, "proxy trainings at once (processes)"),
    "--device": ("device", str, "auto", "auto (CUDA when present), cpu, cuda or cuda:N"),
    "--threads": ("threads", int, 2, "torch threads per training process (at most 256)"),
}
# Settings that may differ on --resume (the rest must match the stored run).
RESUMABLE = {"workers", "device", "threads", "final_seeds"}
THETA_MODES = ("separate", "shared")
# θ drawn per round: each is a proxy training, and the round's draws are one tensor (a mistyped
# count of 1e9 asks for hundreds of GB); the paper draws 8.
MAX_SAMPLES = 10_000


def searched_size(run: dict) -> int:
    """How many values the optimiser searches: 41 (separate functions) or 9 (one shared function)."""
    from gp_loss.pap.substitutions import SHARED_THETA_SIZE, THETA_SIZE

    return SHARED_THETA_SIZE if run["theta"] == "shared" else THETA_SIZE


def identity_point(run: dict) -> list[float]:
    """The identity substitutions (gradient scale 1) in the optimiser's space."""
    from gp_loss.pap.substitutions import IDENTITY_FUNCTION_THETA, IDENTITY_GRAD_SCALE_THETA

    functions = 1 if run["theta"] == "shared" else 5
    return list(IDENTITY_FUNCTION_THETA) * functions + [IDENTITY_GRAD_SCALE_THETA]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                argument_default=argparse.SUPPRESS)
    p.add_argument("--out", help=f"run directory to create (default {DEFAULT_OUT})")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR (its stored settings)")
    for flag, (_, kind, default, text) in {**TASK_FLAGS, **RUN_FLAGS}.items():
        p.add_argument(flag, type=kind, help=f"{text} (default {default})" if default not in (None, "") else text)
    return p


# ----------------------------------------------------------------------------- settings

def settings_from_args(args: argparse.Namespace) -> tuple[dict, Path, bool]:
    """The run's settings (``task`` options and ``run`` settings), its directory and whether it resumes."""
    from gp_loss.runtime.run_dir import script_settings

    return script_settings(args, TASK_FLAGS, RUN_FLAGS, RESUMABLE, DEFAULT_OUT, KIND)


def map_kind(run: dict) -> str:
    """How the trainings run: in worker processes with --workers above 1, else in this one."""
    return "multiprocessing" if run["workers"] > 1 else "serial"


def check_settings(settings: dict) -> dict:
    """Checked task options (a dict): every setting checked and the data loaded once, before anything is
    created."""
    from gp_loss.evolution.config import MAX_FINAL_SEEDS, MAX_TORCH_THREADS
    from gp_loss.pap import PPOConfig
    from gp_loss.runtime.device import check_device
    from gp_loss.runtime.parallel import Mapper
    from gp_loss.tasks.detection.script_flags import check_data
    from gp_loss.tasks.detection.task import DetectionOptions

    task, run = settings["task"], settings["run"]
    options = DetectionOptions.from_dict(task)
    options.check()
    if run["strategy"] not in STRATEGIES:
        raise GpLossError(f"--strategy must be one of {', '.join(STRATEGIES)}, got {run['strategy']!r}")
    if run["theta"] not in THETA_MODES:
        raise GpLossError(f"--theta must be one of {', '.join(THETA_MODES)}, got {run['theta']!r}")
    for name, minimum in (("rounds", 1), ("samples", 1), ("grid", 1), ("top_k", 1), ("final_seeds", 1),
                          ("workers", 1), ("threads", 1)):
        if run[name] < minimum:
            raise GpLossError(f"--{name.replace('_', '-')} must be at least {minimum}, got {run[name]}")
    if run["threads"] > MAX_TORCH_THREADS:
        raise GpLossError(f"--threads must be at most {MAX_TORCH_THREADS}, got {run['threads']}")
    if run["final_seeds"] > MAX_FINAL_SEEDS:
        raise GpLossError(f"--final-seeds must be at most {MAX_FINAL_SEEDS}, got {run['final_seeds']}")
    if run["samples"] > MAX_SAMPLES:
        raise GpLossError(f"--samples must be at most {MAX_SAMPLES}, got {run['samples']}")
    if not 0 <= run["seed"] <= 2**32 - 1:
        raise GpLossError(f"--seed must be in [0, 2**32 - 1], got {run['seed']}")
    if run["strategy"] == "ppo":
        if run["samples"] < 2:  # one sample's advantage is always 0: PPO learns nothing from it
            raise GpLossError(f"--strategy ppo needs --samples of at least 2 (a round's rewards are compared "
                              f"with their mean), got {run['samples']}")
        PPOConfig(rounds=run["rounds"], samples=run["samples"], seed=run["seed"])
    else:
        if run["rounds"] * run["samples"] < 2:
            raise GpLossError("--strategy surrogate needs a budget (--rounds x --samples) of at least 2 proxy "
                              "trainings")
        free = surrogate_layout(run)[0]
        n_init, points = min(2 * (free + 1), run["rounds"] * run["samples"]), (run["grid"] + 1) ** free
        if n_init > points:
            raise GpLossError(f"--grid {run['grid']} leaves {points} grid points for the {free} free coordinate(s), "
                              f"fewer than the {n_init} of the surrogate's initial design: raise --grid")
    check_device(run["device"])
    Mapper.check(map_kind(run), run["workers"], run["device"])  # as many workers as the machine holds
    check_data(options)
    return dict(task)


# ----------------------------------------------------------------------------- trainings (top level: they pickle)

def _task(options: dict, device: str, threads: int):
    """The detection task of ``options`` in this process (built once per configuration)."""
    from gp_loss.tasks.registry import process_task

    return process_task("detection", options, device, threads)


def _loss(spec: str | list, top_k: int):
    """A loss: ``"fl_giou"`` (a baseline name), ``"pap"`` (identity substitutions) or θ (41 numbers)."""
    from gp_loss.pap import PAPParameters
    from gp_loss.tasks.detection.task import DetectionLoss

    if isinstance(spec, str) and spec != "pap":
        return spec
    params = PAPParameters.identity() if spec == "pap" else PAPParameters.from_theta(spec)
    return DetectionLoss(None, pap=params, pap_block_h1=True, pap_top_k=top_k)


class ProxyObjective:
    """A point -> the validation metric of a proxy training with PAP-Loss(θ) (0 for a non-finite one; one
    that raises is a failed point: the optimiser records its reason).

    ``grid`` (surrogate): the point is k, integers 0..grid on the ``free`` coordinates, θ = k / grid, the
    other coordinates at ``fixed``; without it the point is θ itself. ``shared``: the point has 9 values
    (one function for all five, then the gradient scale), expanded to the full 41 by :meth:`theta`.
    """

    def __init__(self, options: dict, top_k: int, seed: int, device: str, threads: int,
                 grid: int | None = None, fixed: list[float] | None = None, shared: bool = False):
        self.options, self.top_k, self.seed, self.device, self.threads = options, top_k, seed, device, threads
        self.grid, self.fixed, self.shared = grid, fixed, shared

    def theta(self, x) -> list[float]:
        """The full 41-value θ of the optimiser's point ``x``."""
        from gp_loss.pap import PAPParameters

        if self.grid is None:
            values = [float(v) for v in x]
        else:
            values = list(self.fixed)
            for j, k in enumerate(x):
                values[j] = int(k) / self.grid
        return list(PAPParameters.from_theta(values, shared=True).theta) if self.shared else values

    def __call__(self, x) -> float:
        out = _task(self.options, self.device, self.threads).proxy_fitness(_loss(self.theta(x), self.top_k), self.seed)
        if out.status == "error":
            raise RuntimeError(out.reason)
        return float(out.score) if math.isfinite(out.score) else 0.0


def final_training(job: tuple) -> dict:
    """One final training: ``(options, loss spec, top_k, seed, device, threads)`` -> its metrics and status."""
    options, spec, top_k, seed, device, threads = job
    out = _task(options, device, threads).final_score(_loss(spec, top_k), seed)
    return {"seed": seed, "score": out.score, "status": out.status, "reason": out.reason,
            "metrics": out.metrics, "seconds": round(out.seconds, 2)}


# ----------------------------------------------------------------------------- the searches

def proxy_progress(run: dict, metric: str):
    """The search's progress on screen: a bar, and a line per proxy training (the optimisers' ``progress``)."""
    from gp_loss.runtime.progress import Progress

    progress = Progress(run["rounds"] * run["samples"], "search", unit="proxy")

    def report(r: dict) -> None:
        progress.at(r["done"])
        if "x" not in r:
            return
        where = f" (round {r['round'] + 1}/{run['rounds']})" if "round" in r else ""
        outcome = f"{metric} {r['value']:.4f}" if r["value"] is not None else safe_line(f"failed: {r['error']}")
        best = "none yet" if r["best_value"] is None else f"{r['best_value']:.4f}"
        progress.line(f"eval {r['done']}/{r['budget']}{where} | {outcome} | best {best} | {r['seconds']:.0f} s")

    return progress, report


def search_ppo(objective: ProxyObjective, run: dict, out: Path, resume: bool, mapper,
               metric: str) -> tuple[list[float], float, int]:
    from gp_loss.pap import PPOConfig, ppo_maximize

    config = PPOConfig(rounds=run["rounds"], samples=run["samples"], seed=run["seed"])
    progress, report = proxy_progress(run, metric)
    with progress:
        result = ppo_maximize(objective, searched_size(run), config, initial=identity_point(run), mapper=mapper,
                              run_dir=out, resume=resume, progress=report)
    if result.best_theta is None:
        first = next((h["error"] for h in result.history if h["error"]), "?")
        raise GpLossError(safe_line(f"every proxy training failed (first: {first}); see {out / 'results.json'}"))
    return objective.theta(result.best_theta), float(result.best_reward), len(result.history)


def surrogate_layout(run: dict) -> tuple[int, list[float], list[int]]:
    """(free coordinates, the optimiser's point with every coordinate at the grid value nearest the
    identity, those grid values) for the surrogate's budget."""
    grid = run["grid"]
    budget = run["rounds"] * run["samples"]
    free = min(searched_size(run), max(1, budget // 2 - 1))  # an initial design of 2(free + 1) <= budget points
    ks = [min(grid, max(0, round(v * grid))) for v in identity_point(run)]
    return free, [k / grid for k in ks], ks


def search_surrogate(objective: ProxyObjective, run: dict, out: Path, resume: bool, mapper, metric: str):
    from gp_loss.hps import maximize

    budget = run["rounds"] * run["samples"]
    free = surrogate_layout(run)[0]
    lower, upper = [0] * free, [run["grid"]] * free
    n_init = min(2 * (free + 1), budget)
    progress, report = proxy_progress(run, metric)
    with progress:
        result = maximize(objective, lower, upper, budget=budget, seed=run["seed"], n_init=n_init, map=mapper,
                          run_dir=out, resume=resume, progress=report)
    history = [{"k": x, "theta": objective.theta(x), "AP": v, "seconds": round(t, 2),
                "error": result.errors.get(i, "")}
               for i, ((x, v), t) in enumerate(zip(result.history, result.times))]
    write_text_atomic(out / "history.json", json.dumps({"free": free, "grid": run["grid"], "n_init": n_init,
                                                        "stopped": result.stopped, "evaluations": history},
                                                       indent=1) + "\n")
    if result.best_x is None:
        raise GpLossError(safe_line(f"every proxy training failed (first: "
                                    f"{next(iter(result.errors.values()), '?')}); see {out / 'history.json'}"))
    return objective.theta(result.best_x), float(result.best_value), len(result.history)


# ----------------------------------------------------------------------------- the comparison

LABELS = {"searched": "the searched θ", "fl_giou": "fl_giou", "pap": "pap (identity)"}
REFERENCES = ("fl_giou", "pap")  # what the searched θ is compared with
PAIRED_REFERENCE = "fl_giou"  # the baseline every other loss's paired difference is taken from


def compare(out: Path, options: dict, run: dict, best: list[float], proxy_best: float, mapper) -> dict:
    """Retrain the best θ, fl_giou and pap (identity) on the same seeds for --final-steps, a line each;
    final.json.

    Every loss but fl_giou (``"reference"``) holds ``vs_reference``: its paired difference from fl_giou
    on the same seeds, the 95% interval and the verdict (gp_loss.metrics.paired).

    Every training of both references failing leaves nothing to compare against: a one-line error with
    the first reason, never a table of zeros.
    """
    from gp_loss.metrics.paired import add_verdicts
    from gp_loss.runtime.progress import Progress, map_reporting

    seeds = [run["seed"] + k for k in range(run["final_seeds"])]
    specs = {"searched": best, "fl_giou": "fl_giou", "pap": "pap"}
    jobs = [(name, (options, spec, run["top_k"], s, run["device"], run["threads"]))
            for name, spec in specs.items() for s in seeds]
    metric = options["metric"]
    with Progress(len(jobs), "final") as progress:
        def finished(index: int, r: dict) -> None:
            name = jobs[index][0]
            outcome = f"{metric} {r['score']:.4f}" if r["status"] not in FAILED else \
                safe_line(f"failed ({r['status']}: {r['reason']})")
            progress.step()
            progress.line(f"final: seed {seeds.index(r['seed']) + 1}/{len(seeds)} of {LABELS[name]} | {outcome} | "
                          f"{r['seconds']:.0f} s")

        results = map_reporting(mapper, final_training, [job for _, job in jobs], finished)
    report = {"metric": metric, "seeds": seeds, "final_steps": options["final_steps"],
              "strategy": run["strategy"], "proxy_best": proxy_best, "theta": best, "losses": {}}
    for k, name in enumerate(specs):
        part = results[k * len(seeds):(k + 1) * len(seeds)]
        scores = [r["score"] for r in part]
        report["losses"][name] = {"mean": statistics.fmean(scores),
                                  "std": statistics.stdev(scores) if len(scores) > 1 else 0.0,
                                  "failed": all(r["status"] in FAILED for r in part),
                                  "trainings": part}
    if all(report["losses"][name]["failed"] for name in REFERENCES):
        first = report["losses"][REFERENCES[0]]["trainings"][0]
        raise GpLossError(safe_line(f"every final training of fl_giou and pap failed (fl_giou, seed {first['seed']}: "
                                    f"{first['status']}: {first['reason']}): nothing to compare the searched θ "
                                    f"with; check the data and the task settings"))
    # Every loss trained on the same seeds: seed s of one is paired with seed s of fl_giou (a failed
    # training scores 0, as in every final comparison).
    rows = [{"name": name, "seeds": [t["seed"] for t in row["trainings"]],
             "scores": [t["score"] for t in row["trainings"]]} for name, row in report["losses"].items()]
    add_verdicts(rows, PAIRED_REFERENCE)
    report["reference"] = PAIRED_REFERENCE
    for row in rows:
        if "vs_reference" in row:
            report["losses"][row["name"]]["vs_reference"] = row["vs_reference"]
    write_text_atomic(out / "final.json", json.dumps(report, indent=1) + "\n")
    return report


def write_exports(out: Path, best: list[float]) -> None:
    """theta.json, pap_loss.py and substitutions.png of the best θ."""
    from gp_loss.pap import PAPParameters
    from gp_loss.pap.export_torch import export_pap_module
    from gp_loss.pap.plot import plot_substitutions

    params = PAPParameters.from_theta(best)
    write_text_atomic(out / "theta.json", params.to_json() + "\n")
    write_text_atomic(out / "pap_loss.py", export_pap_module(params))
    plot_substitutions(params, out / "substitutions.png", title="searched PAP-Loss substitutions "
                                                                f"(gradient scale {params.grad_scale:.3g})")


def stored_comparison(out: Path, best: list[float], seeds: list[int]) -> dict | None:
    """final.json of a finished run, if it compared this θ on these seeds (a resume then retrains nothing)."""
    try:
        report = json.loads((out / "final.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(report, dict) or report.get("theta") != best or report.get("seeds") != seeds:
        return None
    return report


# ----------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    from gp_loss.metrics.paired import comparison_text, read_comparison
    from gp_loss.runtime.parallel import Mapper
    from gp_loss.runtime.run_dir import script_run

    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # usage error (2) or --help (0), already printed
        return stop.code if isinstance(stop.code, int) else 2
    out = None  # the run directory, once this process holds it
    try:
        settings, where, resume = settings_from_args(args)
        options = check_settings(settings)  # everything, before the directory is touched
        run = settings["run"]
        budget = run["rounds"] * run["samples"]
        shared, size = run["theta"] == "shared", searched_size(run)
        what = f"θ shared by the five functions ({size} values)" if shared else f"θ ({size} values)"
        if run["strategy"] == "ppo":
            objective = ProxyObjective(options, run["top_k"], run["seed"], run["device"], run["threads"],
                                       shared=shared)
            how = f"PPO on {what}, {run['rounds']} rounds x {run['samples']} samples"
        else:
            free, fixed, _ = surrogate_layout(run)
            objective = ProxyObjective(options, run["top_k"], run["seed"], run["device"], run["threads"],
                                       grid=run["grid"], fixed=fixed, shared=shared)
            how = (f"surrogate (HPS-Det's DYCORS) on {what}, k = 0..{run['grid']}, θ = k/{run['grid']}, "
                   f"{free} of {size} coordinates free")
        with script_run(where, resume, KIND) as run_dir:
            out = run_dir.path
            write_text_atomic(out / "config.json", json.dumps(settings, indent=1) + "\n")
            print(f"PAP-Loss search: {options['model']} ({options['backbone']}, {options['image_size']} px), "
                  f"{how}: {budget} proxy trainings of {options['proxy_steps']} steps; run directory {safe_line(out)}",
                  flush=True)
            with Mapper(map_kind(run), run["workers"], run["device"]) as mapper:
                started = time.perf_counter()
                search = search_ppo if run["strategy"] == "ppo" else search_surrogate
                best, proxy_best, evaluated = search(objective, run, out, resume, mapper, options["metric"])
                print(f"search: {evaluated} proxy trainings in {time.perf_counter() - started:.0f} s this session; "
                      f"best proxy {options['metric']} {proxy_best:.4f}", flush=True)
                write_exports(out, best)
                seeds = [run["seed"] + k for k in range(run["final_seeds"])]
                report = stored_comparison(out, best, seeds) if resume else None
                if report is None:
                    print(f"final comparison: {3 * len(seeds)} trainings of {options['final_steps']} steps "
                          f"(the searched θ, fl_giou, pap; seeds {seeds})", flush=True)
                    report = compare(out, options, run, best, proxy_best, mapper)
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
    metric = report["metric"]
    print(f"\n{metric} after {report['final_steps']} steps, seeds {report['seeds']} (mean ± std; paired "
          f"difference from fl_giou ×100, 95% CI):")
    labels = {"searched": f"PAP-Loss, searched θ ({run['strategy']})", "fl_giou": "Focal + GIoU (fl_giou)",
              "pap": "PAP-Loss, identity substitutions (pap)"}
    width = max(len(v) for v in labels.values()) + 2
    for name, label in labels.items():
        row = report["losses"][name]
        value = "failed (every seed)" if row.get("failed") else f"{row['mean']:.4f} ± {row['std']:.4f}"
        # a final.json that --resume kept may hold no verdict: the row is then shown without one
        compared = read_comparison(row.get("vs_reference"))
        verdict = safe_line(comparison_text(compared)) if compared else \
            "reference" if name == report.get("reference") else ""
        print(f"  {(label + ':').ljust(width)}{value:<19}  {verdict}".rstrip())
    own = "results.json, checkpoint.json" if run["strategy"] == "ppo" else "history.json, checkpoint.json"
    print(f"\nrun directory: {safe_line(out)} (theta.json, pap_loss.py, substitutions.png, final.json, {own})")
    return 0


if __name__ == "__main__":
    run_script(main)
