"""Run a search end to end: run directory, resume, the evolution loop, the final retraining."""
from __future__ import annotations

import json
import math
import statistics
import sys

from gp_loss.errors import GpLossError
from gp_loss.evolution import jobs
from gp_loss.evolution.algorithms import SCHEMES
from gp_loss.evolution.config import SearchConfig, config_diff, with_added_fields
from gp_loss.evolution.jobs import TrainJob
from gp_loss.evolution.recorder import Recorder
from gp_loss.evolution.final_choice import Entry, choose_final_top, top_entries
from gp_loss.evolution.refine import refine_top
from gp_loss.evolution.run_files import CONFIG, EVALUATIONS, MACHINE, read_stored_config
from gp_loss.evolution.search import Search, evaluation_place
from gp_loss.metrics import mean_defined
from gp_loss.metrics.paired import (add_verdicts, comparison_text, read_comparison, reference_name,
                                    verdict_summary)
from gp_loss.runtime.checkpoint import load_checkpoint
from gp_loss.runtime.device import machine_facts
from gp_loss.runtime.backend import Backend
from gp_loss.runtime.parallel import check_backend, open_backend
from gp_loss.runtime.progress import Progress, map_reporting
from gp_loss.runtime.terminal import safe_line, safe_text
from gp_loss.runtime.run_dir import JsonlLine, RunDir, check_kind, claim_new_run, jsonl_digest


# What a search writes before its first training, besides config.json (and an empty evaluations.jsonl).
UNSTARTED_FILES = frozenset({MACHINE, "checkpoint.json", "checkpoint.prev.json"})


def open_run(config: SearchConfig, run: RunDir, resume: bool) -> tuple[dict | None, list[str]]:
    """Check the run directory against ``resume``; return the checkpoint state (or None) and warnings.

    A new run needs a directory without another run's files. A resumed run must
    have the configuration its checkpoint was made under (a budget may change):
    the checkpoint holds it, so an edited ``config.json`` is caught as surely as
    a flag that disagrees. The caller holds the directory's lock.
    """
    if not resume:
        if claim_new_run(run, "search", UNSTARTED_FILES):
            # A run that stopped before its first training (a worker that would not start, data that
            # failed to load): it holds no result, so the same --out starts it anew with new settings.
            print(safe_line(f"gp-loss: note: {run.path} holds a run that stopped before its first training; "
                            f"starting it anew"), file=sys.stderr)
        run.write_json(CONFIG, config.to_dict())
        return None, []
    check_kind(run.path, "search")  # an HPS-Det or PAP run is never read as a search's
    stored = read_stored_config(run)
    if stored is None:
        raise GpLossError(f"nothing to resume in {run.path}: it has no config.json")
    state, warnings = load_checkpoint(run.path)
    if state is not None and isinstance(state.get("config"), dict):
        made_under, source = with_added_fields(state["config"]), "its checkpoint"
    else:  # no checkpoint yet (or one another version wrote: Search.load_state refuses it)
        made_under, source = stored, "config.json"
    diff = config_diff(made_under, config.to_dict())
    if diff:
        raise GpLossError(f"cannot resume {run.path}: its configuration ({source}) differs from this one "
                          f"(old -> new):\n  " + "\n  ".join(diff)
                          + "\n(only max_evaluations and max_seconds may change on resume)")
    run.write_json(CONFIG, config.to_dict())
    return state, warnings


def restore(search: Search, recorder: Recorder, state: dict | None) -> None:
    """Load the checkpoint and line ``evaluations.jsonl`` up with it, or refuse.

    The lines the checkpoint covers must be exactly those it was saved with
    (their SHA-256 is in it). Lines past them are evaluations of the
    generation that was interrupted: they stay in the file and are reused
    when that generation is bred again (same seeds, same children), so
    finished training is neither redone nor lost, however often the run is
    interrupted. A damaged line (cut short by a kill), a duplicate or a
    record of another generation is copied to the set-aside file with a
    warning before it leaves ``evaluations.jsonl``, never dropped silently.
    """
    lines = recorder.evaluation_lines()
    if state is None:
        if lines:
            raise GpLossError(f"{recorder.run.file(EVALUATIONS)} has {len(lines)} line(s) but the run has no "
                              f"checkpoint that covers them: start a new run with another --out")
        recorder.checkpoint(search)  # from now on every resume has a checkpoint to check against
        return
    search.load_state(state)
    covered = search.evaluation_lines
    head = lines[:covered]
    damaged = [line.number for line in head if not line.sound]
    if (len(head) < covered or damaged
            or jsonl_digest([line.text for line in head]).hexdigest() != state.get("evaluations_sha256")):
        where = (f"line {damaged[0]} is damaged" if damaged else
                 f"it has {len(head)} of them" if len(head) < covered else "they were changed")
        raise GpLossError(f"{recorder.run.file(EVALUATIONS)} does not hold the {covered} evaluation record(s) "
                          f"the checkpoint was saved with ({where}), so the run cannot continue exactly: "
                          f"restore the file or start a new run with another --out")
    recovered: dict[tuple[int, int], JsonlLine] = {}
    aside: list[tuple[JsonlLine, str]] = []
    for line in lines[covered:]:
        record = line.record
        key = _record_key(record, search.fidelities)
        if not line.complete:
            aside.append((line, "cut short (the run was interrupted while writing it)"))
        elif record is None:
            aside.append((line, "not a JSON record"))
        elif record.get("generation") != search.generation or not isinstance(record.get("slot"), int):
            aside.append((line, f"not an evaluation of generation {search.generation}, the one the "
                                f"checkpoint continues"))
        elif key is None:
            aside.append((line, f"its fidelity {record.get('fidelity')!r} is not one of this run's "
                                f"({', '.join(f'{f:g}' for f in search.fidelities)})"))
        elif key in recovered:
            aside.append((line, f"a second record of {evaluation_place(key)}"))
        elif recovered and key < max(recovered):
            aside.append((line, f"{evaluation_place(key)} recorded after {evaluation_place(max(recovered))}"))
        else:
            missing = [k for k in ("formulas", "fitness", "seconds", "evaluation") if k not in record]
            # Reused as they stand (a training's score and time): an edited value must not reach the search.
            bad = [k for k, low in (("fitness", -math.inf), ("seconds", 0.0))
                   if k in record and not _number_at_least(record[k], low)]
            if missing:
                aside.append((line, f"lacks {', '.join(missing)}"))
            elif bad:
                aside.append((line, f"unusable {', '.join(bad)} (a finite number is needed; seconds 0 or more)"))
            else:
                recovered[key] = line
    recorder.resume_evaluations(head, list(recovered.values()), aside)
    recorder.resumed(search)
    search.recovered = recovered


def _record_key(record: dict | None, fidelities: list[float]) -> tuple[int, int] | None:
    """``(rung, slot)`` of an evaluation record: the rung is its fidelity's place among ``fidelities``
    (``None`` if it has none of them)."""
    if not isinstance(record, dict):
        return None
    fidelity = record.get("fidelity")
    if isinstance(fidelity, bool) or not isinstance(fidelity, (int, float)) or fidelity not in fidelities:
        return None
    return fidelities.index(fidelity), record.get("slot")


def _number_at_least(value: object, low: float) -> bool:
    """``value`` is a finite int or float (not a bool) of at least ``low``."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and value >= low)


def final_evaluation(search: Search, found: list[Entry] | None = None, extra: list[Entry] | None = None,
                     selection: dict | None = None) -> dict:
    """Retrain the ``found`` losses (default: the hall of fame's best ``final_top``), the ``extra`` ones (the
    refined formulas, named ``top<rank>_refined``) and the baselines with ``final_seeds`` seeds; test metric.
    ``selection``: how ``found`` was chosen (:func:`choose_final_top`), kept in the result."""
    cfg = search.config
    info = search.task_info
    entries = (top_entries(search) if found is None else list(found)) + list(extra or [])
    texts = search.baseline_texts()
    entries += [(name, texts[name], search.baseline_fitness.get(name)) for name in search.baseline_names()]
    seeds = cfg.retrain_seeds
    same = {json.dumps(texts[n], sort_keys=True): n for n in search.baseline_names()}
    # A found loss that is a baseline's formulas trains exactly as that baseline: it shares its trainings.
    trained_as = [same.get(json.dumps(formulas, sort_keys=True), name) if name.startswith("top") else name
                  for name, formulas, _ in entries]
    trained = [(name, formulas) for (name, formulas, _), own in zip(entries, trained_as) if own == name]
    job_list = [TrainJob(config=search.config_dict, formulas=formulas, seed=seed, final=True,
                         baseline=None if name.startswith("top") else name)
                for name, formulas in trained for seed in seeds]
    names = [name for name, _ in trained for _ in seeds]
    with Progress(len(job_list), "final retraining", enabled=search.recorder.progress_enabled) as progress:
        shared = [f"{name} is {own}" for (name, _, _), own in zip(entries, trained_as) if own != name]
        progress.line(f"final retraining: {len(trained)} loss(es) x {len(seeds)} seed(s) = {len(job_list)} "
                      f"trainings on the {info.final_split} split"
                      + (f" ({'; '.join(shared)}: the same trainings)" if shared else ""))

        def finished(index: int, outcome) -> None:
            progress.step()
            status = "" if outcome.status == "ok" else f" ({outcome.status})"
            progress.line(safe_line(f"final {progress.done}/{len(job_list)} | {names[index]} seed "
                                    f"{job_list[index].seed}: {search.metric} {100 * outcome.score:.2f}{status} "
                                    f"| {progress.seconds():.0f} s"))

        outcomes = map_reporting(search.mapper, jobs.evaluate, job_list, finished)
    if all(o.failed for o in outcomes):
        name, first = names[0], outcomes[0]
        raise GpLossError(f"every training of the final retraining failed ({name}: {first.status}"
                          + (f": {first.reason}" if first.reason else "") + "): no result to report. Check the "
                          f"data and the task options (`gp-loss evaluate --task {search.config.task} --loss "
                          f"{name}` with the same options trains one alone), then --resume {search.recorder.run.path}")
    rows = []
    position = {name: k for k, (name, _) in enumerate(trained)}
    for (name, formulas, proxy), own in zip(entries, trained_as):
        k = position[own]
        mine = outcomes[k * len(seeds):(k + 1) * len(seeds)]
        scores = [o.score for o in mine]
        row = {"name": name, "baseline": not name.startswith("top"), "formulas": formulas,
               "proxy_fitness": proxy, "seeds": seeds, "scores": scores,
               "mean": statistics.fmean(scores), "std": statistics.pstdev(scores)}
        failed = {str(seed): o.status + (f": {o.reason}" if o.reason else "") for seed, o in zip(seeds, mine)
                  if o.failed}
        if failed:  # its score on those seeds is the task's failure score, not a measurement
            row["failed"] = failed
        if not row["baseline"] and json.dumps(formulas, sort_keys=True) in same:
            row["same_as"] = same[json.dumps(formulas, sort_keys=True)]  # a baseline the search kept as its best
        if mine[0].metrics:  # every metric the task measured (e.g. AP50), mean over the seeds where defined
            row["metrics"] = {m: mean_defined([o.metrics.get(m) for o in mine]) for m in mine[0].metrics}
        rows.append(row)
    result = {"metric": f"{info.final_split} {search.metric}", "evaluations": search.evaluations, "rows": rows}
    if selection is not None:
        result["selection"] = selection
        chosen = {json.dumps(c["formulas"], sort_keys=True): c for c in selection["candidates"]}
        for row in rows:  # where each found loss stood in the hall of fame, and its validation score there
            c = chosen.get(json.dumps(row["formulas"], sort_keys=True))
            if c is not None and not row["baseline"]:
                row["hall_of_fame_rank"], row["selection_mean"] = c["hall_of_fame_rank"], c["mean"]
    # Every loss trained on the same seeds: each is judged against one baseline by its paired interval.
    reference = reference_name(info.reference_baseline, search.baseline_names())
    if reference is not None:
        result["reference"] = reference
        add_verdicts(rows, reference)
        result["summary"] = verdict_summary(rows, result["metric"])
    note = search.load_dependence()
    if note:
        result["load_dependence"] = note
    return result


def final_table(result: dict) -> str:
    """The final comparison as text: one row per loss, mean ± std over seeds, the paired difference from the
    reference baseline with its 95% interval and verdict (where final.json holds them), the task's other
    metrics; then the summary sentence."""
    reference = result.get("reference") if isinstance(result.get("reference"), str) else None
    compared = [read_comparison(r.get("vs_reference")) for r in result["rows"]]
    texts = [safe_line(comparison_text(c)) if c else "reference" if r["name"] == reference else ""
             for r, c in zip(result["rows"], compared)]
    label = f"vs {reference} (paired, 95% CI)" if reference else "paired difference (95% CI)"
    width = max(len(t) for t in [label, *texts]) if any(texts) else 0  # no column for a run without verdicts
    lines = [f"{'loss':<22}{result['metric']:>22}  " + (f"{label:<{width}}  " if width else "") + "formula"]
    for r, text in zip(result["rows"], texts):
        formula = " ".join(f"{n}={f}" for n, f in r["formulas"].items())
        if isinstance(r.get("same_as"), str):  # the search kept a baseline as one of its best
            formula = f"(= {r['same_as']}) {formula}"
        others = ", ".join(f"{m} {100 * v:.1f}" for m, v in r.get("metrics", {}).items() if v is not None)
        failed = r.get("failed", {})
        note = f"[failed on {len(failed)} of {len(r['scores'])} seeds: {next(iter(failed.values()))}]  " if failed else ""
        lines.append(f"{r['name']:<22}{100 * r['mean']:>15.2f} ± {100 * r['std']:.2f}  "
                     + (f"{text:<{width}}  " if width else "") + (f"[{others}]  " if others else "") + note + formula)
    if isinstance(result.get("summary"), str) and result["summary"]:
        lines.append(safe_line(result["summary"]))
    if result.get("load_dependence"):
        lines.append(f"warning: {result['load_dependence']}")
    return safe_text("\n".join(lines))


def run_search(config: SearchConfig, out: str, resume: bool = False, workers: int | None = 1,
               map_kind: str = "auto", progress: bool | None = None, require_workers: bool = False, *,
               workers_per_gpu: int | None = None, ray_address: str | None = None) -> dict:
    """Search, retrain the best, and return ``final.json``'s content. Writes everything under ``out``.

    ``require_workers``: stop with a :class:`GpLossError` before any training if fewer
    workers answer the warm-up than the map has (a SCOOP host down), instead of a warning.
    ``map_kind``, ``workers``, ``workers_per_gpu``, ``ray_address``: the parallel backend
    (:func:`gp_loss.runtime.parallel.open_backend`).
    """
    config.check()
    backend = dict(kind=map_kind, workers=workers, device=config.device, workers_per_gpu=workers_per_gpu,
                   address=ray_address)
    check_backend(**backend)  # every setting is checked before anything is written
    run = RunDir(out)
    # Started before the run directory is written: a cluster that cannot be joined leaves nothing behind.
    with open_backend(**backend) as mapper:
        run.prepare()
        with run.lock():
            result = _run_locked(config, run, resume, mapper, progress, require_workers)
            mapper.close()  # the workers are done before the run directory is unlocked
    return result


def _run_locked(config: SearchConfig, run: RunDir, resume: bool, mapper: Backend,
                progress: bool | None, require_workers: bool = False) -> dict:
    state, warnings = open_run(config, run, resume)
    for w in warnings:
        print(safe_line(f"gp-loss: warning: {w}"), file=sys.stderr)
    recorder = Recorder(run, config, progress=progress)
    search = Search(config, mapper, recorder)
    restore(search, recorder, state)
    print(safe_line(f"search {config.task} ({config.scheme} scheme, seed {config.seed}) -> {run.path} "
                    f"[{mapper.name} map, {mapper.workers} worker(s)]"
                    + (f", resumed at generation {search.generation}" if state else "")))
    search.prepare_workers(require=require_workers)
    search.evaluate_baselines()
    recorder.baselines(search.baseline_fitness)
    search.start_clock()
    recorder.start_clock()
    SCHEMES[config.scheme](search)
    recorder.close()
    recorder.write_results(search)
    # Where it ran (the origin and every worker's host and device): beside the results, not in them,
    # so final.json is the same with 1 worker or N.
    run.write_json(MACHINE, {**machine_facts(), "workers": [f"{w.host}: {w.device}" for w in search.workers]})
    result = recorder.read_final()
    if result is None or result.get("evaluations") != search.evaluations:
        # A resumed run that searched further refines and retrains; one whose final.json is current
        # redoes neither (an interrupted refinement resumes from its checkpoints, adding nothing done).
        found, selection = choose_final_top(search)
        extra = refine_top(search, found, run) if config.refine > 0 else []
        result = final_evaluation(search, found, extra, selection)
        recorder.final(result)
    return result
