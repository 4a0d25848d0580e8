"""Run a search end to end: run directory, resume, the evolution loop, the final retraining."""
from __future__ import annotations

import statistics
import sys

from gp_loss.errors import GpLossError
from gp_loss.evolution import jobs
from gp_loss.evolution.algorithms import SCHEMES
from gp_loss.evolution.config import SearchConfig, config_diff
from gp_loss.evolution.individual import formulas_of
from gp_loss.evolution.jobs import TrainJob
from gp_loss.evolution.recorder import Recorder
from gp_loss.evolution.run_files import CONFIG, read_stored_config
from gp_loss.evolution.search import Search
from gp_loss.runtime.checkpoint import load_checkpoint
from gp_loss.runtime.parallel import Mapper
from gp_loss.runtime.run_dir import RunDir


def open_run(config: SearchConfig, run: RunDir, resume: bool) -> tuple[dict | None, list[str]]:
    """Check the run directory against ``resume``; return the checkpoint state (or None) and warnings."""
    run.prepare()
    if not resume:
        if run.exists(CONFIG):
            raise GpLossError(f"{run.path} already holds a run: continue it with --resume {run.path}, "
                              f"or choose another --out")
        run.write_json(CONFIG, config.to_dict())
        return None, []
    stored = read_stored_config(run)
    if stored is None:
        raise GpLossError(f"nothing to resume in {run.path}: it has no config.json")
    diff = config_diff(stored, config.to_dict())
    if diff:
        raise GpLossError(f"cannot resume {run.path} with a different configuration:\n  " + "\n  ".join(diff)
                          + "\n(only max_evaluations and max_seconds may change on resume)")
    run.write_json(CONFIG, config.to_dict())
    return load_checkpoint(run.path)


def restore(search: Search, recorder: Recorder, state: dict | None) -> None:
    """Load the checkpoint and line up evaluations.jsonl with it.

    Lines past the checkpoint are evaluations of the generation that was
    interrupted: they are kept aside and reused when that generation is bred
    again (same seeds, same children), so finished training is not redone.
    """
    records = recorder.read_evaluations()
    if state is None:
        recorder.rewrite_evaluations([])
        search.recovered = {r["slot"]: r for r in records if r.get("generation") == 0}
        return
    search.load_state(state)
    recorder.resumed(search)
    kept, extra = records[:search.evaluation_lines], records[search.evaluation_lines:]
    recorder.rewrite_evaluations(kept)
    search.recovered = {r["slot"]: r for r in extra if r.get("generation") == search.generation}


def final_evaluation(search: Search) -> dict:
    """Retrain the best ``final_top`` losses and the baselines with ``final_seeds`` seeds; test metric."""
    cfg = search.config
    info = search.task_info
    entries = [(f"top{rank}", formulas_of(search.layout, ind), ind.fitness.values[0])
               for rank, ind in enumerate(list(search.hall_of_fame)[:cfg.final_top], 1)]
    entries += [(name, info.baselines[name], search.baseline_fitness.get(name)) for name in search.baseline_names()]
    seeds = cfg.retrain_seeds
    job_list = [TrainJob(config=search.config_dict, formulas=formulas, seed=seed, final=True)
                for _, formulas, _ in entries for seed in seeds]
    outcomes = list(search.toolbox.map(jobs.evaluate, job_list))
    rows = []
    for i, (name, formulas, proxy) in enumerate(entries):
        scores = [o.score for o in outcomes[i * len(seeds):(i + 1) * len(seeds)]]
        rows.append({"name": name, "baseline": not name.startswith("top"), "formulas": formulas,
                     "proxy_fitness": proxy, "seeds": seeds, "scores": scores,
                     "mean": statistics.fmean(scores), "std": statistics.pstdev(scores)})
    return {"metric": f"test {info.metric}", "evaluations": search.evaluations, "rows": rows}


def final_table(result: dict) -> str:
    """The final comparison as text: one row per loss, mean ± std over seeds."""
    lines = [f"{'loss':<22}{result['metric']:>22}  formula"]
    for r in result["rows"]:
        formula = " ".join(f"{n}={f}" for n, f in r["formulas"].items())
        lines.append(f"{r['name']:<22}{100 * r['mean']:>15.2f} ± {100 * r['std']:.2f}  {formula}")
    return "\n".join(lines)


def run_search(config: SearchConfig, out: str, resume: bool = False, workers: int = 1,
               map_kind: str = "auto", progress: bool | None = None) -> dict:
    """Search, retrain the best, and return ``final.json``'s content. Writes everything under ``out``."""
    config.check()
    run = RunDir(out)
    state, warnings = open_run(config, run, resume)
    for w in warnings:
        print(f"gp-loss: warning: {w}", file=sys.stderr)
    with Mapper(map_kind, workers) as mapper:
        recorder = Recorder(run, config, progress=progress)
        search = Search(config, mapper, recorder)
        restore(search, recorder, state)
        print(f"search {config.task} ({config.scheme} scheme, seed {config.seed}) -> {run.path} "
              f"[{mapper.kind} map, {mapper.workers} worker(s)]"
              + (f", resumed at generation {search.generation}" if state else ""))
        search.prepare_workers()
        search.evaluate_baselines()
        recorder.baselines(search.baseline_fitness)
        search.start_clock()
        recorder.start_clock()
        SCHEMES[config.scheme](search)
        recorder.close()
        recorder.write_results(search)
        result = recorder.read_final()
        if result is None or result.get("evaluations") != search.evaluations:
            result = final_evaluation(search)  # a resumed run that searched further retrains
            recorder.final(result)
        mapper.close()
    return result
