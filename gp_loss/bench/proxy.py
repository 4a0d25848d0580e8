"""Fidelity of the proxy training: does a short training rank losses as the full one does?

The search scores every candidate by proxy training and keeps the best; a
proxy is only as good as the order it puts losses in. This benchmark takes
losses a search already evaluated (spread over its fitness range), scores
each with several proxy lengths (validation metric, the run's seed) and with
the final protocol (test metric, ``final_epochs``, mean over the run's final
seeds), and reports for each proxy length:

* Spearman's rank correlation between proxy score and final score;
* how many of the final top ``k`` the proxy's top ``k`` holds;
* the seconds per proxy evaluation, and the ratio to the run's own setting.
"""
from __future__ import annotations

import json

import statistics
from pathlib import Path

from scipy.stats import spearmanr

from gp_loss.errors import GpLossError
from gp_loss.evolution.config import SearchConfig
from gp_loss.evolution.individual import genome_of, individual_from_formulas
from gp_loss.evolution.run_files import EVALUATIONS, read_stored_config
from gp_loss.runtime.run_dir import RunDir
from gp_loss.runtime.device import check_device, resolve_device
from gp_loss.tasks import make_task, task_options


def spread_sample(records: list[dict], size: int) -> list[dict]:
    """``size`` records evenly spaced over the fitness order (all of them if fewer)."""
    ranked = sorted(records, key=lambda r: r["fitness"])
    if len(ranked) <= size:
        return ranked
    picks = sorted({round(i * (len(ranked) - 1) / (size - 1)) for i in range(size)})
    return [ranked[i] for i in picks]


def top_overlap(a: list[float], b: list[float], k: int) -> int:
    """How many of the ``k`` best by ``a`` are among the ``k`` best by ``b``."""
    best_a = set(sorted(range(len(a)), key=lambda i: -a[i])[:k])
    best_b = set(sorted(range(len(b)), key=lambda i: -b[i])[:k])
    return len(best_a & best_b)


def bench_proxy(run_path: str | Path, epochs: list[int], sample: int = 40, top: int = 5) -> dict:
    """Score ``sample`` of the run's losses with each proxy length in ``epochs`` and the final protocol."""
    run = RunDir(run_path)
    stored = read_stored_config(run)
    if stored is None:
        raise GpLossError(f"{run.path} holds no run (no config.json): give the --out directory of a search")
    config = SearchConfig.from_dict(stored)
    check_device(config.device)
    device = resolve_device(config.device)  # the run's own device, as its workers trained
    options = task_options(config.task, config.task_options)
    if not hasattr(options, "proxy_epochs"):
        raise GpLossError(f"the {config.task} task has no proxy_epochs option to vary")
    # One record per loss, its furthest-trained (successive halving trains a promoted loss again):
    # the spread over the fitness range is then over comparable scores as far as the run has them.
    furthest: dict[str, dict] = {}
    for r in run.read_jsonl(EVALUATIONS):
        key = json.dumps(r.get("formulas"), sort_keys=True)
        if r.get("status") == "ok" and r.get("fidelity", 1.0) >= furthest.get(key, {}).get("fidelity", 0.0):
            furthest[key] = r
    records = list(furthest.values())
    if len(records) < 3:
        raise GpLossError(f"{run.path} has {len(records)} successful evaluations; need at least 3")
    if sample < 3 or top < 1 or any(e < 1 for e in epochs):
        raise GpLossError("--sample must be at least 3, --top at least 1 and every --epochs value at least 1")
    chosen = spread_sample(records, sample)
    layout = dict(config.branches)
    genomes = [genome_of(layout, individual_from_formulas(layout, r["formulas"])) for r in chosen]
    final_task = make_task(config.task, config.task_options, device)
    seeds = config.retrain_seeds
    final = [statistics.fmean(final_task.final_score(g, s).score for s in seeds) for g in genomes]
    current = options.proxy_epochs
    rows = []
    for e in sorted(set(epochs) | {current}):
        task = make_task(config.task, {**config.task_options, "proxy_epochs": e}, device)
        outcomes = [task.proxy_fitness(g, config.seed, config.eval_time_limit_s) for g in genomes]
        scores = [o.score for o in outcomes]
        rho = spearmanr(scores, final).statistic if len(set(scores)) > 1 else 0.0
        rows.append({"proxy_epochs": e, "current": e == current, "spearman": float(rho),
                     "top_overlap": top_overlap(scores, final, min(top, len(final))),
                     "seconds": statistics.fmean(o.seconds for o in outcomes)})
    base = next(r["seconds"] for r in rows if r["current"])
    for r in rows:
        r["time_ratio"] = r["seconds"] / base if base else 0.0
    return {"run": str(run.path), "task": config.task, "losses": len(chosen), "top": min(top, len(final)),
            "final_seeds": len(seeds), "rows": rows}
