"""Fidelity of the proxy training: does a short training rank losses as the full one does?

The search scores every candidate by proxy training and keeps the best; a
proxy is only as good as the order it puts losses in. This benchmark takes
losses a search already evaluated (spread over its fitness range) and scores
each by

* the run's proxy: the validation metric after the run's proxy training with the
  run's seed, as recorded in ``evaluations.jsonl`` where the run trained the loss
  at full fidelity (a loss it trained only at a lower fidelity is trained again);
* proxies of other lengths (``lengths``, in the unit of the task's
  :attr:`~gp_loss.tasks.base.TaskInfo.proxy_option`: classification's
  ``proxy_epochs``, detection's and segmentation's ``proxy_steps``), trained here;
* the final protocol (the task's ``final_score``), mean over the first
  ``final_seeds`` of the run's final seeds;

and reports, for the run's proxy and for each length, how well the proxy score
ranks the losses as the final score does:

* Kendall's tau-b (Kendall, "The treatment of ties in ranking problems",
  Biometrika 1945) and Spearman's rank correlation;
* how many of the final top ``k`` the proxy's top ``k`` holds;
* the seconds per proxy training, and the ratio to the run's own length. The run's
  own seconds are those it recorded where its scores are reused: a ratio then
  compares the run's machine, and its load then, with this one's now.
"""
from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable
from pathlib import Path

from scipy.stats import kendalltau, spearmanr

from gp_loss.errors import GpLossError
from gp_loss.evolution.config import SearchConfig
from gp_loss.evolution.individual import genome_of, individual_from_formulas
from gp_loss.evolution.run_files import EVALUATIONS, read_stored_config
from gp_loss.evolution.worker import warm_up_optimizer
from gp_loss.runtime.device import check_device, resolve_device, set_deterministic
from gp_loss.runtime.run_dir import RunDir
from gp_loss.runtime.threads import set_torch_threads
from gp_loss.tasks import make_task, task_info, task_options
from gp_loss.tasks.base import FAILED_STATUSES

# The k of ``top5_overlap``, reported whatever ``top`` is (fewer where fewer losses were sampled).
TOP5 = 5
# Fewer losses than this have no ranking worth a correlation.
MIN_LOSSES = 3


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


def rank_agreement(proxy: list[float], final: list[float]) -> tuple[float, float]:
    """Kendall's tau-b and Spearman's rho between paired scores (one of each per loss).

    Both are 0 where either side is constant (all losses scored alike: no order to agree
    with) or the statistic is otherwise undefined, where scipy would give NaN.
    """
    if len(set(proxy)) < 2 or len(set(final)) < 2:
        return 0.0, 0.0
    tau = float(kendalltau(proxy, final, variant="b").statistic)
    rho = float(spearmanr(proxy, final).statistic)
    return (tau if math.isfinite(tau) else 0.0), (rho if math.isfinite(rho) else 0.0)


def scored_losses(run: RunDir) -> list[dict]:
    """One ``evaluations.jsonl`` record per distinct loss whose training measured a score, its furthest-trained.

    Successive halving trains a promoted loss again at each rung: keeping its
    highest fidelity spreads the sample over scores as comparable as the run has them.
    """
    furthest: dict[str, dict] = {}
    for r in run.read_jsonl(EVALUATIONS):
        fitness, fidelity = r.get("fitness"), r.get("fidelity", 1.0)
        if (r.get("status") is None or r.get("status") in FAILED_STATUSES or not isinstance(r.get("formulas"), dict)
                or not isinstance(fitness, (int, float)) or not math.isfinite(fitness)
                or not isinstance(fidelity, (int, float))):
            continue
        key = json.dumps(r["formulas"], sort_keys=True)
        if fidelity >= furthest.get(key, {}).get("fidelity", 0.0):
            furthest[key] = {**r, "fidelity": fidelity}
    return list(furthest.values())


def _row(length: int, current: bool, proxy: list[float], final: list[float], top: int, seconds: list[float],
         reused: int) -> dict:
    """The figures of one proxy length: its scores against the final ones, paired by loss."""
    tau, rho = rank_agreement(proxy, final)
    return {"length": length, "current": current, "kendall_tau": tau, "spearman_rho": rho,
            "top_overlap": top_overlap(proxy, final, min(top, len(final))),
            "top5_overlap": top_overlap(proxy, final, min(TOP5, len(final))),
            "seconds": statistics.fmean(seconds), "reused": reused, "proxy_scores": proxy}


def bench_proxy(run_path: str | Path, lengths: list[int] | None = None, sample: int = 20, top: int = 5,
                final_seeds: int | None = None, unit: str | None = None,
                progress: Callable[[str], None] | None = None) -> dict:
    """Rank agreement of the run's proxy, and of proxies of ``lengths``, with the final protocol.

    Args:
        run_path: the run directory of a search (its ``config.json`` and ``evaluations.jsonl``).
        lengths: proxy lengths to compare, in the task's unit (its ``proxy_option``); the run's own is
            always measured. ``None``: only the run's own.
        sample: losses scored, spread over the run's fitness range (all of them where the run has fewer).
        top: k of ``top_overlap``.
        final_seeds: the final score is the mean over the first this many of the run's final seeds
            (``None``: all of them).
        unit: the option ``lengths`` were given in, where the caller names one (``--epochs``:
            ``proxy_epochs``); a task whose proxy length is another option is an error.
        progress: called with one line after each training.

    Returns:
        The run's proxy's figures at the top level (``kendall_tau``, ``spearman_rho``, ``top5_overlap``,
        ``top_overlap``, ``seconds_per_proxy``), ``rows`` with those of every length measured (ascending;
        ``time_ratio`` to the run's), the scores behind them (``final_scores``; each row's
        ``proxy_scores``, in the order of ``formulas``), and ``note`` where the run had fewer losses
        than ``sample``.
    """
    run = RunDir(run_path)
    stored = read_stored_config(run)
    if stored is None:
        raise GpLossError(f"{run.path} holds no run (no config.json): give the --out directory of a search")
    config = SearchConfig.from_dict(stored)
    info = task_info(config.task)
    options = task_options(config.task, config.task_options)
    option = info.proxy_option
    if option is None or not hasattr(options, option):
        raise GpLossError(f"the {config.task} task names no option for the proxy's length to vary")
    if unit is not None and unit != option:
        raise GpLossError(f"--epochs sets {unit}, but the {config.task} task's proxy length is {option}: "
                          f"give --lengths in {option.removeprefix('proxy_')}")
    lengths = list(lengths or [])
    if sample < MIN_LOSSES or top < 1 or any(n < 1 for n in lengths):
        raise GpLossError(f"--sample must be at least {MIN_LOSSES}, --top at least 1 and every "
                          f"{'--epochs' if unit else '--lengths'} value at least 1")
    own = getattr(options, option)
    measured = sorted(set(lengths) | {own})
    for n in measured:  # the task's own limits, before anything trains
        task_options(config.task, {**config.task_options, option: n})
    seeds = config.retrain_seeds
    final_seeds = len(seeds) if final_seeds is None else final_seeds
    if not 1 <= final_seeds <= len(seeds):
        raise GpLossError(f"--final-seeds must be 1 to {len(seeds)} (the run's final seeds), got {final_seeds}")
    seeds = seeds[:final_seeds]
    records = scored_losses(run)
    if len(records) < MIN_LOSSES:
        raise GpLossError(f"{run.path} has {len(records)} distinct losses with a score in {EVALUATIONS}; "
                          f"need at least {MIN_LOSSES}")
    chosen = spread_sample(records, sample)
    note = None
    if len(records) < sample:
        note = (f"the run has {len(records)} distinct losses with a score, fewer than --sample {sample}: "
                f"all of them are used")
    layout = dict(config.branches)
    genomes = [genome_of(layout, individual_from_formulas(layout, r["formulas"])) for r in chosen]
    check_device(config.device)
    device = resolve_device(config.device)  # the run's own device, threads and kernels, as its workers trained
    set_deterministic(config.deterministic)
    set_torch_threads(config.torch_threads)
    warm_up_optimizer()  # as a worker does: torch's first optimizer step is not charged to a measured proxy
    say = progress or (lambda line: None)
    run_task = make_task(config.task, config.task_options, device)
    proxies = []  # (length, scores, seconds, how many scores the run recorded)
    for n in measured:
        task = run_task if n == own else make_task(config.task, {**config.task_options, option: n}, device)
        scores, seconds, reused = [], [], 0
        for i, (r, genome) in enumerate(zip(chosen, genomes), 1):
            if n == own and r["fidelity"] == 1.0:  # the run's own training of this loss
                scores.append(float(r["fitness"]))
                seconds.append(float(r.get("seconds") or 0.0))
                reused += 1
                continue
            outcome = task.proxy_fitness(genome, config.seed, config.eval_time_limit_s)
            scores.append(outcome.score)
            seconds.append(outcome.seconds)
            say(f"{option} {n}: loss {i}/{len(genomes)} scored {outcome.score:.4f} ({outcome.status}) "
                f"in {outcome.seconds:.1f} s")
        proxies.append((n, scores, seconds, reused))
    final = []
    for i, genome in enumerate(genomes, 1):
        outcomes = [run_task.final_score(genome, s) for s in seeds]
        final.append(statistics.fmean(o.score for o in outcomes))
        say(f"final: loss {i}/{len(genomes)} scored {final[-1]:.4f} (mean of {len(seeds)} seed(s)) in "
            f"{sum(o.seconds for o in outcomes):.1f} s")
    rows = [_row(n, n == own, scores, final, top, seconds, reused) for n, scores, seconds, reused in proxies]
    base = next(r for r in rows if r["current"])
    for r in rows:
        r["time_ratio"] = r["seconds"] / base["seconds"] if base["seconds"] > 0 else 0.0
    result = {"run": str(run.path), "task": config.task, "proxy_option": option, "proxy_length": own,
              "metric": info.metric_for(options), "final_split": info.final_split,
              "losses": len(chosen), "available_losses": len(records), "final_seeds": len(seeds),
              "top": min(top, len(final)),
              "kendall_tau": base["kendall_tau"], "spearman_rho": base["spearman_rho"],
              "top5_overlap": base["top5_overlap"], "top_overlap": base["top_overlap"],
              "seconds_per_proxy": base["seconds"], "reused": base["reused"],
              "rows": rows, "formulas": [r["formulas"] for r in chosen], "final_scores": final}
    if note is not None:
        result["note"] = note
    return result
