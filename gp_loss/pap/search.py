"""Search Parameterized AP Loss (Tao et al., NeurIPS 2021) for a detector: the 41 values of θ
(five piecewise-linear substitutions H1, H2, I1, I2, I3 and the regression gradient scale)
that maximise the validation AP of a short proxy training, then retrain the best θ against
Focal + GIoU and PAP-Loss with identity substitutions.

    python runs/search_pap.py --out out/pap                        # CPU scale (RetinaNet, digits, 64 px)
    python runs/search_pap.py --strategy surrogate --out out/pap_s  # the same budget, HPS-Det's surrogate
    python runs/search_pap.py --theta shared --out out/pap_shared   # one function for all five: 9 values
    python runs/search_pap.py --resume out/pap                     # continue an interrupted run
    python runs/search_pap.py --map ray --workers 4 --out out/pap_ray  # on Ray (--ray-address HOST:PORT: a cluster)
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
on the small model. With ``--workers`` above 1 the trainings run in that many worker processes
(``--map``: multiprocessing by default, Ray, or SCOOP under ``python -m scoop``).

The run directory holds config.json (the settings; --resume uses them), the optimiser's own
checkpoint.json (and results.json for ppo; history.json for surrogate), theta.json (the best θ,
PAPParameters.to_json; ``gp-loss evaluate --task detection --loss pap=DIR/theta.json``),
pap_loss.py (a standalone PyTorch module of the best loss), substitutions.png (its five
functions, the appendix's Figure 1) and final.json: the best θ, fl_giou and pap (identity)
retrained for --final-steps on --final-seeds seeds, AP mean ± std, and the paired difference of the
searched θ and of pap from fl_giou (its 95% interval and verdict). Resuming a finished run retrains
nothing. Each proxy and final training prints one line as it ends (a progress bar too when stderr
is a terminal). While it runs, the directory is locked: a second process on it is refused, naming
the first. A user error is one line and exit status 2, and leaves nothing behind.

``--help`` prints every flag; the code is gp_loss/pap/search.py.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from gp_loss.errors import GpLossError
from gp_loss.pap.search_compare import comparison_table, compare, stored_comparison, write_exports
from gp_loss.pap.search_proxy import SEARCHES, objective_for, surrogate_layout
from gp_loss.runtime.atomic import write_text_atomic
from gp_loss.runtime.parallel import BACKEND_FLAGS, RESUMABLE_BACKEND_SETTINGS
from gp_loss.runtime.script import Resumable, script_parser, script_status
from gp_loss.runtime.terminal import safe_line
from gp_loss.tasks.detection.script_flags import DATA_AND_SCHEDULE_FLAGS

DEFAULT_OUT = "out/pap"
KIND = "pap"  # gp_loss.runtime.run_dir.RUN_KINDS
STRATEGIES = tuple(SEARCHES)
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
    **BACKEND_FLAGS,
    "--device": ("device", str, "auto", "auto (CUDA when present), cpu, cuda or cuda:N"),
    "--threads": ("threads", int, 2, "torch threads per training process (at most 256)"),
}
# Settings that may differ on --resume (the rest must match the stored run).
RESUMABLE = {"workers", "device", "threads", "final_seeds"} | RESUMABLE_BACKEND_SETTINGS
THETA_MODES = ("separate", "shared")
# θ drawn per round: each is a proxy training, and the round's draws are one tensor (a mistyped
# count of 1e9 asks for hundreds of GB); the paper draws 8.
MAX_SAMPLES = 10_000


def build_parser() -> argparse.ArgumentParser:
    """The command line: --out, --resume and the task and run flags."""
    return script_parser(__doc__, DEFAULT_OUT, {**TASK_FLAGS, **RUN_FLAGS})


def settings_from_args(args: argparse.Namespace) -> tuple[dict, Path, bool]:
    """The run's settings (``task`` options and ``run`` settings), its directory and whether it resumes."""
    from gp_loss.runtime.run_dir import script_settings

    return script_settings(args, TASK_FLAGS, RUN_FLAGS, RESUMABLE, DEFAULT_OUT, KIND)


def check_settings(settings: dict) -> dict:
    """Checked task options (a dict): every setting checked and the data loaded once, before anything is
    created."""
    from gp_loss.evolution.config import check_run_settings
    from gp_loss.pap import PPOConfig
    from gp_loss.runtime.device import check_device
    from gp_loss.runtime.parallel import check_backend_for
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
    check_run_settings(run)
    if run["samples"] > MAX_SAMPLES:
        raise GpLossError(f"--samples must be at most {MAX_SAMPLES}, got {run['samples']}")
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
    check_backend_for(run)  # as many workers as the machine holds
    check_data(options)
    return dict(task)


def main(argv: list[str] | None = None) -> int:
    """Search θ, export the best, compare it with fl_giou and pap; the exit status (:func:`script_status`)."""
    return script_status(lambda place: _run(place, argv))


def _run(place: Resumable, argv: list[str] | None) -> int:
    from gp_loss.runtime.parallel import open_backend_for
    from gp_loss.runtime.run_dir import script_run

    settings, where, resume = settings_from_args(build_parser().parse_args(argv))
    options = check_settings(settings)  # everything, before the directory is touched
    run = settings["run"]
    objective, how = objective_for(options, run)
    with script_run(where, resume, KIND) as run_dir:
        out = place.out = run_dir.path
        write_text_atomic(out / "config.json", json.dumps(settings, indent=1) + "\n")
        print(f"PAP-Loss search: {options['model']} ({options['backbone']}, {options['image_size']} px), "
              f"{how}: {run['rounds'] * run['samples']} proxy trainings of {options['proxy_steps']} steps; "
              f"run directory {safe_line(out)}", flush=True)
        with open_backend_for(run) as backend:
            started = time.perf_counter()
            best, proxy_best, evaluated = SEARCHES[run["strategy"]](objective, run, out, resume, backend,
                                                                    options["metric"])
            print(f"search: {evaluated} proxy trainings in {time.perf_counter() - started:.0f} s this session; "
                  f"best proxy {options['metric']} {proxy_best:.4f}", flush=True)
            write_exports(out, best)
            seeds = [run["seed"] + k for k in range(run["final_seeds"])]
            report = stored_comparison(out, best, seeds) if resume else None
            if report is None:
                print(f"final comparison: {3 * len(seeds)} trainings of {options['final_steps']} steps "
                      f"(the searched θ, fl_giou, pap; seeds {seeds})", flush=True)
                report = compare(out, options, run, best, proxy_best, backend)
    print("\n" + comparison_table(report, run["strategy"]))
    own = "results.json, checkpoint.json" if run["strategy"] == "ppo" else "history.json, checkpoint.json"
    print(f"\nrun directory: {safe_line(out)} (theta.json, pap_loss.py, substitutions.png, final.json, {own})")
    return 0

