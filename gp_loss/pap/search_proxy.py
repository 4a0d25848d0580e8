"""The PAP-Loss search's space, its trainings and its two optimisers (:mod:`gp_loss.pap.search`).

The optimiser searches θ (41 values, a function each) or, with ``--theta shared``, 9 values (one
function for all five substitutions, then the gradient scale); :class:`ProxyObjective` maps its point
to the full θ and scores it by a proxy training. :func:`search_ppo` is the paper's search (Tao et al.,
"Searching Parameterized AP Loss for Object Detection", NeurIPS 2021); :func:`search_surrogate`
searches the same θ with HPS-Det's optimiser on an integer grid. The trainings are top-level
functions and classes of this module: worker processes receive them by reference.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from gp_loss.errors import GpLossError
from gp_loss.runtime.atomic import write_text_atomic
from gp_loss.runtime.terminal import safe_line


def searched_size(run: dict) -> int:
    """How many values the optimiser searches: 41 (separate functions) or 9 (one shared function)."""
    from gp_loss.pap.substitutions import SHARED_THETA_SIZE, THETA_SIZE

    return SHARED_THETA_SIZE if run["theta"] == "shared" else THETA_SIZE


def identity_point(run: dict) -> list[float]:
    """The identity substitutions (gradient scale 1) in the optimiser's space."""
    from gp_loss.pap.substitutions import IDENTITY_FUNCTION_THETA, IDENTITY_GRAD_SCALE_THETA

    functions = 1 if run["theta"] == "shared" else 5
    return list(IDENTITY_FUNCTION_THETA) * functions + [IDENTITY_GRAD_SCALE_THETA]


def surrogate_layout(run: dict) -> tuple[int, list[float], list[int]]:
    """(free coordinates, the optimiser's point with every coordinate at the grid value nearest the
    identity, those grid values) for the surrogate's budget."""
    grid = run["grid"]
    budget = run["rounds"] * run["samples"]
    free = min(searched_size(run), max(1, budget // 2 - 1))  # an initial design of 2(free + 1) <= budget points
    ks = [min(grid, max(0, round(v * grid))) for v in identity_point(run)]
    return free, [k / grid for k in ks], ks


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


def objective_for(options: dict, run: dict) -> tuple[ProxyObjective, str]:
    """The run's objective and how the search is described in its header line."""
    shared, size = run["theta"] == "shared", searched_size(run)
    what = f"θ shared by the five functions ({size} values)" if shared else f"θ ({size} values)"
    if run["strategy"] == "ppo":
        objective = ProxyObjective(options, run["top_k"], run["seed"], run["device"], run["threads"], shared=shared)
        return objective, f"PPO on {what}, {run['rounds']} rounds x {run['samples']} samples"
    free, fixed, _ = surrogate_layout(run)
    objective = ProxyObjective(options, run["top_k"], run["seed"], run["device"], run["threads"],
                               grid=run["grid"], fixed=fixed, shared=shared)
    return objective, (f"surrogate (HPS-Det's DYCORS) on {what}, k = 0..{run['grid']}, θ = k/{run['grid']}, "
                       f"{free} of {size} coordinates free")


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


def search_ppo(objective: ProxyObjective, run: dict, out: Path, resume: bool, backend,
               metric: str) -> tuple[list[float], float, int]:
    """PPO over the searched values (gp_loss.pap.ppo): (the best θ, its proxy metric, trainings run)."""
    from gp_loss.pap import PPOConfig, ppo_maximize

    config = PPOConfig(rounds=run["rounds"], samples=run["samples"], seed=run["seed"])
    progress, report = proxy_progress(run, metric)
    with progress:
        result = ppo_maximize(objective, searched_size(run), config, initial=identity_point(run), mapper=backend,
                              run_dir=out, resume=resume, progress=report)
    if result.best_theta is None:
        first = next((h["error"] for h in result.history if h["error"]), "?")
        raise GpLossError(safe_line(f"every proxy training failed (first: {first}); see {out / 'results.json'}"))
    return objective.theta(result.best_theta), float(result.best_reward), len(result.history)


def search_surrogate(objective: ProxyObjective, run: dict, out: Path, resume: bool, backend,
                     metric: str) -> tuple[list[float], float, int]:
    """HPS-Det's optimiser on the grid (gp_loss.hps.maximize); history.json. Returns as :func:`search_ppo`."""
    from gp_loss.hps import maximize

    budget = run["rounds"] * run["samples"]
    free = surrogate_layout(run)[0]
    lower, upper = [0] * free, [run["grid"]] * free
    n_init = min(2 * (free + 1), budget)
    progress, report = proxy_progress(run, metric)
    with progress:
        result = maximize(objective, lower, upper, budget=budget, seed=run["seed"], n_init=n_init, map=backend,
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


SEARCHES = {"ppo": search_ppo, "surrogate": search_surrogate}  # --strategy -> the search
