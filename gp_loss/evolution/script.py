"""Command-line options shared by the ``runs/search_*.py`` scripts.

Every :class:`SearchConfig` field can be set from a YAML/JSON file
(``--config FILE``) and the common ones by flag; flags win over the file.
With ``--resume DIR`` the stored configuration is used and any option given
again must agree with it (a budget may be raised).
"""
from __future__ import annotations

import argparse
import json
from fractions import Fraction
from pathlib import Path
from typing import Callable

from gp_loss.errors import GpLossError
from gp_loss.evolution.config import SearchConfig
from gp_loss.evolution.run_files import read_stored_config
from gp_loss.runtime.run_dir import RunDir, check_kind
from gp_loss.runtime.parallel import MAPS
# run_script: the runs/ scripts import it from here
from gp_loss.runtime.script import Resumable, run_script, script_status  # noqa: F401
from gp_loss.runtime.terminal import safe_text

def fraction(text: str) -> float:
    """A number from a flag, as a decimal (``0.25``) or a ratio of integers (``1/3``)."""
    try:
        return float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError, OverflowError):
        raise argparse.ArgumentTypeError(f"expected a number such as 0.25 or 1/3, got {text!r}") from None


def fractions(text: str) -> list[float]:
    """Comma-separated :func:`fraction` values: ``0.25,0.5,1`` or ``1/9,1/3,1``."""
    return [fraction(part) for part in text.split(",")]


# flag -> (config field, type, help)
FLAGS = {
    "--seed": ("seed", int, "seed of everything random (default 0)"),
    "--scheme": ("scheme", str, "zero (AutoLoss-Zero aging evolution) or cse (CSE-Autoloss from --start)"),
    "--evaluations": ("max_evaluations", int, "budget: proxy trainings"),
    "--seconds": ("max_seconds", float, "budget: wall seconds (stops at the end of a generation)"),
    "--population": ("population", int, "K: initial / surviving population"),
    "--max-population": ("max_population", int, "P: aging population kept (zero scheme)"),
    "--tournament": ("tournament_fraction", float, "T: tournament size as a fraction of the population"),
    "--init-depth": ("init_depth", int, "D: depth of random genomes"),
    "--offspring": ("offspring_per_generation", int, "children per generation"),
    "--final-seeds": ("final_seeds", int, "seeds of the final retraining"),
    "--final-top": ("final_top", int, "best losses retrained at the end"),
    "--refine": ("refine", int, "after the search, tune the numeric literals of each top formula with N proxy "
                                "evaluations (HPS-Det's surrogate search, a Gaussian process with an RBF "
                                "kernel); 0: off"),
    "--selection-seeds": ("selection_seeds", int, "the hall of fame's best 2 x --final-top are trained for the "
                                                  "final schedule on the validation split with N seeds, and the "
                                                  "best by mean become top1, top2, ... (default 2; 0: the hall "
                                                  "of fame's order)"),
    "--range-bound": ("range_bound", float, "reject losses whose per-sample value or gradient exceeds this "
                                            "(default 1e4) at sample or confident predictions, fp32 or bf16"),
    "--warm-start": ("warm_start", str, "baselines: the initial population holds the task's baselines that fit the "
                                        "searched branches (DiscoPOP's warm start), random genomes the rest; none: "
                                        "AutoLoss-Zero's search from scratch"),
    "--fidelities": ("fidelities", fractions, "successive halving: ascending fractions of the proxy's length "
                                              "ending at 1, e.g. 1/9,1/3,1; each generation's children train at "
                                              "the first, the best --promote of each rung at the next. 1: one "
                                              "fidelity. The budget counts a training at fraction f as f"),
    "--promote": ("promote", fraction, "fraction of a rung that moves on to the next fidelity (default 1/3)"),
    "--device": ("device", str, "where proxy training runs: auto (default: CUDA when present), cpu, cuda "
                                "(every GPU; worker i on GPU i mod n) or cuda:N"),
}


def build_parser(description: str, task_flags: dict[str, tuple[str, type, str]]) -> argparse.ArgumentParser:
    """The script's parser: run options, ``FLAGS`` and the task's own ``task_flags``."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
                                argument_default=argparse.SUPPRESS)
    p.add_argument("--out", help="run directory to create")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR")
    p.add_argument("--config", type=Path, metavar="FILE", help="YAML or JSON with SearchConfig fields")
    p.add_argument("--workers", type=int, help="jobs at once: processes for --map multiprocessing, Ray tasks for "
                                               "--map ray (default 1; on a joined Ray cluster, its CPUs)")
    p.add_argument("--workers-per-gpu", type=int, metavar="K",
                   help="K workers per GPU of --device, each training its own proxies with 1/K of the GPU's "
                        "memory (sets --workers to K times the number of GPUs; under --map ray each job asks "
                        "Ray for 1/K of a GPU)")
    p.add_argument("--deterministic", action="store_true",
                   help="deterministic torch kernels (torch.use_deterministic_algorithms; slower on CUDA)")
    p.add_argument("--map", choices=MAPS, help="auto (default): scoop under `python -m scoop`, ray with "
                                               "--ray-address, multiprocessing if --workers > 1, else serial")
    p.add_argument("--ray-address", metavar="HOST:PORT",
                   help="run on the Ray cluster whose head is at HOST:PORT (`ray start --head --port PORT`); "
                        "--map ray without it starts a local Ray of --workers CPUs, or joins RAY_ADDRESS")
    p.add_argument("--require-workers", action="store_true",
                   help="stop (exit 2, before any training) if fewer workers answer than were started, e.g. a "
                        "SCOOP host down or refusing SSH; without it that is one warning line and the search "
                        "runs on the workers that answered")
    p.add_argument("--start", action="append", metavar="BRANCH=FORMULA",
                   help="start / fixed formula of a branch (repeatable)")
    p.add_argument("--search", action="append", metavar="BRANCH", help="branch to search (repeatable; default all)")
    p.add_argument("--simulate", action="store_true", help="add the model-optimisation simulation filter")
    p.add_argument("--search-in-turn", action=argparse.BooleanOptionalAction,
                   help="cse scheme: search the branches one after the other (the budget split evenly), each "
                        "with the others fixed at the best found so far, as CSE-Autoloss does for detectors")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    for flag, (_, type_, help_) in {**FLAGS, **task_flags}.items():
        p.add_argument(flag, type=type_, help=help_)
    return p


def _load_file(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise GpLossError(f"cannot read --config {path}: {err.strerror or err}") from None
    except UnicodeDecodeError as err:
        raise GpLossError(f"--config {path} is not UTF-8 text ({err.reason} at byte {err.start})") from None
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml
            data = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
    except Exception as err:  # yaml and json raise different types (and RecursionError when deeply nested)
        detail = " ".join(str(err).split())  # one line: YAML's messages span several
        raise GpLossError(f"--config {path} is not valid {path.suffix.lstrip('.').upper() or 'JSON'}: "
                          f"{detail[:300]}") from None
    if not isinstance(data, dict):
        raise GpLossError(f"--config {path} must hold a mapping of configuration fields")
    return data


Defaults = SearchConfig | Callable[[dict], SearchConfig]  # (or: the fields given -> the defaults)


def config_from_args(args: argparse.Namespace, task_flags: dict, defaults: Defaults,
                     default_out: str) -> tuple[SearchConfig, str, bool]:
    """(configuration, run directory, resume?) from parsed arguments.

    ``defaults`` may depend on what is given (file and flags), e.g. a detector's branches on
    its ``model`` option: then it is called with the given fields, ``task_options`` included.
    """
    given = vars(args)
    for flag in ("out", "resume"):
        if flag in given and not str(given[flag]).strip():
            raise GpLossError(f"--{flag} is empty: give a run directory, e.g. --{flag} out/search")
    resume = "resume" in given
    if resume and "out" in given and Path(given["out"]) != Path(given["resume"]):
        raise GpLossError("give either --out DIR (new run) or --resume DIR, not both")
    out = str(given.get("resume") or given.get("out") or default_out)
    overrides: dict = {}
    if "config" in given:
        overrides.update(_load_file(given["config"]))
    task_options = overrides.pop("task_options", None)
    if task_options is None:
        task_options = {}
    if not isinstance(task_options, dict):
        raise GpLossError(f"task_options in --config {given['config']} must be a mapping of option names "
                          f"to values (e.g. task_options: {{proxy_epochs: 5}}), got {task_options!r}")
    task_options = dict(task_options)
    for flag, (field, _, _) in FLAGS.items():
        key = flag.lstrip("-").replace("-", "_")
        if key in given:
            overrides[field] = given[key]
    for flag, (field, _, _) in task_flags.items():
        key = flag.lstrip("-").replace("-", "_")
        if key in given:
            task_options[field] = given[key]
    if "start" in given:
        start = {}
        for spec in given["start"]:
            name, sep, formula = spec.partition("=")
            if not sep:
                raise GpLossError(f"--start expects BRANCH=FORMULA, got {spec!r}")
            start[name.strip()] = formula.strip()
        overrides["start"] = start
    if "search" in given:
        overrides["search"] = list(given["search"])
    if given.get("simulate"):
        overrides["simulate"] = True
    if "search_in_turn" in given:
        overrides["search_in_turn"] = given["search_in_turn"]
    if given.get("deterministic"):
        overrides["deterministic"] = True
    if resume:
        check_kind(out, "search")  # an HPS-Det or PAP-Loss run's config.json is not a SearchConfig
        base = read_stored_config(RunDir(out))
        if base is None:
            raise GpLossError(f"nothing to resume in {out}: it has no config.json")
    else:
        given_fields = {**overrides, "task_options": task_options}
        base = (defaults(given_fields) if callable(defaults) else defaults).to_dict()
    base["task_options"] = {**base.get("task_options", {}), **task_options}
    base.update(overrides)
    return SearchConfig.from_dict(base), out, resume


def main(description: str, defaults: Defaults, default_out: str,
         task_flags: dict[str, tuple[str, type, str]], argv: list[str] | None = None) -> int:
    """Parse, search, print the best formulas beside the baselines; the exit status (:func:`script_status`)."""
    from gp_loss.evolution.run_search import final_table, run_search

    def body(place: Resumable) -> int:
        args = build_parser(description, task_flags).parse_args(argv)
        config, out, resume = config_from_args(args, task_flags, defaults, default_out)
        place.out = out
        result = run_search(config, out, resume=resume, workers=getattr(args, "workers", None),
                            workers_per_gpu=getattr(args, "workers_per_gpu", None),
                            ray_address=getattr(args, "ray_address", None), map_kind=getattr(args, "map", "auto"),
                            progress=False if getattr(args, "no_progress", False) else None,
                            require_workers=getattr(args, "require_workers", False))
        print()
        print(final_table(result))
        print(safe_text(f"\nrun directory: {out} (hall_of_fame.py, final.json, fitness.png; `gp-loss report {out}`)"))
        return 0

    return script_status(body)
