"""Which kind of run a directory holds, and the run directories of the two hyper-parameter searches.

Three programs write run directories. An evolutionary search (``gp-loss``'s
search scripts) writes a flat ``config.json``, ``evaluations.jsonl`` and a hall
of fame. ``runs/hps_det.py`` (HPS-Det: Liu et al., "Dynamic Sample Assignment
with Hyper-Parameter Search for Object Detection", 2022) and
``runs/search_pap.py`` (Parameterized AP Loss: Tao et al., NeurIPS 2021) write a
``config.json`` of ``{"task": ..., "run": ...}``, their optimiser's
``checkpoint.json``, a history of proxy trainings, their best point and a
``final.json`` of their own shape. :func:`report_kind` tells the three apart (by
:func:`gp_loss.runtime.run_dir.run_kind`); :func:`collect_script_run` reads the two
scripts' files.

As :func:`gp_loss.report.collect.collect` does, reading never raises for one bad
file: a file that is absent or not understood adds a line to
:attr:`ScriptRun.problems` (and is left as it is), and its section is left out.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

from gp_loss.errors import GpLossError
from gp_loss.metrics.paired import comparison_text, read_comparison
from gp_loss.report.collect import finite, number
from gp_loss.runtime.checkpoint import load_checkpoint
from gp_loss.runtime.run_dir import RunDir

SEARCH = "search"  # an evolutionary search (gp_loss.evolution)
HPS_DET = "hps-det"  # runs/hps_det.py
PAP = "pap"  # runs/search_pap.py

TITLES = {HPS_DET: "HPS-Det search (runs/hps_det.py)", PAP: "PAP-Loss search (runs/search_pap.py)"}

# The files each script writes (the writer code: gp_loss/tasks/detection/hps_results.py's write_history and
# compare; gp_loss/pap/search_proxy.py's search_ppo and search_surrogate, search_compare.py's compare and
# write_exports).
CONFIG = "config.json"
FINAL = "final.json"
HPS_HISTORY = "history.json"
HPS_BEST = "best.json"
HPS_PLOT = "ap_over_iterations.png"
PAP_RESULTS = "results.json"  # --strategy ppo
PAP_HISTORY = "history.json"  # --strategy surrogate
PAP_THETA = "theta.json"
PAP_PLOT = "substitutions.png"

PICTURE_BYTES = 2 * 1024 * 1024  # a larger picture is named, not put into the page


def report_kind(path: str | Path) -> str:
    """:data:`SEARCH`, :data:`HPS_DET` or :data:`PAP`: how to report the run directory ``path``.

    The kind is :func:`gp_loss.runtime.run_dir.run_kind`'s (the one place that tells them apart,
    which the scripts' ``--resume`` uses too); a directory that shows no kind is reported as a
    search, whose report then says which of its files are missing.
    """
    from gp_loss.runtime.run_dir import run_kind

    return run_kind(path) or SEARCH


@dataclass
class Trial:
    """One proxy training of the search: its number, the metric (``None``: it failed) and what it tried."""

    number: int
    value: float | None
    point: list
    error: str = ""
    at_s: float | None = None  # wall seconds into the search when it finished


@dataclass
class FinalRow:
    """One loss or assignment of the final comparison: mean ± std over its seeds, and its paired difference
    from the reference (``vs_reference``: ``{"baseline", "delta", "ci95", "verdict"}``, ``None`` for the
    reference itself and in a final.json that holds no verdicts)."""

    name: str
    label: str
    mean: float | None
    std: float | None
    scores: list = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # "seed 1: non-finite (reason)"
    vs_reference: dict | None = None


@dataclass
class ScriptRun:
    """What an HPS-Det or PAP-Loss run directory holds, as far as it could be read."""

    kind: str
    path: Path
    config: dict | None = None
    metric: str = "AP"
    trials: list[Trial] = field(default_factory=list)
    history_file: str | None = None
    budget: int | None = None
    stopped: str | None = None
    point_name: str = "point"  # what one trial's point is: "s", "θ" or "k"
    best_name: str = "point"  # what the best point is: "s" (HPS-Det) or the full "θ" (PAP-Loss)
    best_point: list | None = None
    best_value: float | None = None
    best_details: list[tuple[str, str]] = field(default_factory=list)  # (name, value) rows of the best point
    final: list[FinalRow] = field(default_factory=list)
    final_metric: str | None = None
    final_seeds: list = field(default_factory=list)
    final_steps: object = None
    reference: str | None = None  # the row the others' paired differences are taken from (final.json's)
    gain: float | None = None
    pictures: dict[str, Path] = field(default_factory=dict)  # caption -> PNG in the run directory
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def title(self) -> str:
        return TITLES[self.kind]

    @property
    def gain_over(self) -> str:
        """What the gain is measured against (the script's own comparison)."""
        return "the default assignment" if self.kind == HPS_DET else "Focal + GIoU (fl_giou)"

    @property
    def task(self) -> dict:
        return (self.config or {}).get("task") or {}

    @property
    def settings(self) -> dict:
        return (self.config or {}).get("run") or {}

    @property
    def anything(self) -> bool:
        return bool(self.config or self.trials or self.best_point is not None or self.final)

    def to_dict(self) -> dict:
        """The report as JSON-able data (``gp-loss report --json``)."""
        return {"kind": self.kind, "run_dir": str(self.path), "metric": self.metric, "budget": self.budget,
                "stopped": self.stopped, "history_file": self.history_file,
                "history": [vars(t) for t in self.trials],
                "best": {self.best_name: self.best_point, self.metric: self.best_value,
                         "details": dict(self.best_details)},
                "final": {"metric": self.final_metric, "seeds": self.final_seeds, "steps": self.final_steps,
                          "rows": [vars(r) for r in self.final], "gain": self.gain,
                          "reference": self.reference},
                "pictures": {k: str(v) for k, v in self.pictures.items()},
                "problems": self.problems, "warnings": self.warnings}


class _NotUnderstood(Exception):
    """A file that is not what the script writes (raised inside a reader, reported as a problem)."""


def _check(condition: bool, what: str) -> None:
    if not condition:
        raise _NotUnderstood(what)


def _value(v) -> float | None:
    """A metric value from a file: a number, or ``None`` for a failed training (``null`` or ``""``)."""
    if v is None or v == "":
        return None
    _check(number(v), f"a metric value {v!r} is not a number")
    return float(v)


def _points(values, what: str) -> list:
    _check(isinstance(values, list) and all(number(v) for v in values), f"{what} is not a list of numbers")
    return list(values)


def collect_script_run(path: str | Path, kind: str) -> ScriptRun:
    """Read the run directory ``path`` of ``kind`` (:data:`HPS_DET` or :data:`PAP`) for a report."""
    rd = RunDir(path)
    out = ScriptRun(kind, rd.path)

    def attempt(name: str, read, missing: str | None, what: str) -> bool:
        """Run ``read(data)`` on the JSON file ``name``; say why not where it cannot."""
        if not rd.exists(name):
            if missing:
                out.problems.append(f"{name} is missing: {missing}")
            return False
        try:
            data = rd.read_json(name)
            read(data)
            return True
        except GpLossError as err:
            out.problems.append(f"{err}; not shown, and the file is left as it is")
        except (_NotUnderstood, KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
            reason = str(err) if isinstance(err, _NotUnderstood) else f"{type(err).__name__}: {err}"
            out.problems.append(f"{rd.file(name)} is not understood as {what} ({reason}); not shown, and the "
                                f"file is left as it is")
        return False

    def config(data) -> None:
        _check(isinstance(data, dict) and isinstance(data.get("task"), dict) and isinstance(data.get("run"), dict),
               'expected {"task": {...}, "run": {...}}')
        out.config = data
        if isinstance(data["task"].get("metric"), str):
            out.metric = data["task"]["metric"]
    attempt(CONFIG, config, "no settings shown", "the script's settings")

    state, warnings = _checkpoint(rd)
    out.warnings += warnings
    if kind == HPS_DET:
        _read_hps(rd, out, attempt, state)
    else:
        _read_pap(rd, out, attempt, state)
    if out.trials and out.best_value is None:  # no best file yet: the best so far from the history
        good = [t for t in out.trials if finite(t.value)]
        if good:
            best = max(good, key=lambda t: t.value)
            out.best_point, out.best_value, out.best_name = best.point, best.value, out.point_name
    for caption, name in (("the metric over the search's iterations (written by the script)", HPS_PLOT),
                          ("the searched substitutions (written by the script)", PAP_PLOT)):
        if rd.file(name).is_file():
            out.pictures[caption] = rd.file(name)
    if not out.anything:
        raise GpLossError(f"nothing to report in {rd.path}: it holds no readable file of the {TITLES[kind]} "
                          f"({CONFIG}, {FINAL}, its history or checkpoint.json)")
    return out


def _checkpoint(rd: RunDir) -> tuple[dict | None, list[str]]:
    try:
        state, warnings = load_checkpoint(rd.path, read_only=True)  # never moves or writes a file
    except (GpLossError, OSError) as err:
        return None, [str(err)]
    return (state if isinstance(state, dict) else None), warnings


def _why_no_history(rd: RunDir, name: str) -> str:
    """Why the history file ``name`` was not read: the search is still on, or the file is gone or damaged."""
    if rd.exists(name):
        return f"{name} is not understood"
    return f"{name} is missing" if rd.exists(FINAL) else "the search has not ended"


def _from_checkpoint(out: ScriptRun, rd: RunDir, state: dict | None, read, name: str) -> None:
    """The history from the optimiser's checkpoint, where the history file ``name`` could not be read
    (a search still running writes its history file only at its end)."""
    why = _why_no_history(rd, name)
    if state is None:
        out.problems.append(f"no history of proxy trainings: {why}, and no readable checkpoint.json")
        return
    try:
        read(state)
        out.history_file = f"checkpoint.json; {why}"
        if number(state.get("budget")):
            out.budget = int(state["budget"])
    except (_NotUnderstood, KeyError, TypeError, ValueError, AttributeError, IndexError):
        out.trials = []
        out.problems.append(f"no history of proxy trainings: {why}, and checkpoint.json's is not understood")


def _hps_records(out: ScriptRun, state: dict) -> None:
    """gp_loss.hps.maximize's checkpoint: ``records`` of ``x``, ``value``, ``error``, ``t`` in arrival order."""
    out.trials = [Trial(k, _value(r["value"]), _points(r["x"], "a point"), str(r.get("error") or ""),
                        float(r["t"]) if finite(r.get("t")) else None)
                  for k, r in enumerate(state["records"], 1)]


def _final_rows(data: dict, names: dict[str, str], rows_of) -> list[FinalRow]:
    rows = []
    for name, label in names.items():
        part = rows_of(data)[name]
        trainings = part.get("trainings") or []
        _check(isinstance(trainings, list) and all(isinstance(t, dict) for t in trainings),
               f"{name}'s trainings are not a list of records")
        scores = [t.get("score") for t in trainings]
        mean = _value(part.get("mean"))
        std = _value(part["std"]) if "std" in part else (
            statistics.stdev(scores) if len(scores) > 1 and all(finite(s) for s in scores) else
            0.0 if len(scores) == 1 and finite(scores[0]) else None)
        failed = [f"seed {t.get('seed')}: {t.get('status')}" + (f" ({t.get('reason')})" if t.get("reason") else "")
                  for t in trainings if t.get("status") != "ok"]
        rows.append(FinalRow(name, label, mean, std, scores, failed, read_comparison(part.get("vs_reference"))))
    return rows


def _final_common(out: ScriptRun, data: dict) -> None:
    _check(isinstance(data, dict), "expected a mapping")
    out.final_metric = data.get("metric") if isinstance(data.get("metric"), str) else out.metric
    out.final_seeds = data.get("seeds") if isinstance(data.get("seeds"), list) else []
    out.final_steps = data.get("final_steps")
    out.reference = data.get("reference") if isinstance(data.get("reference"), str) else None


def _read_hps(rd: RunDir, out: ScriptRun, attempt, state: dict | None) -> None:
    out.point_name = out.best_name = "s"
    if number(out.settings.get("budget")):
        out.budget = int(out.settings["budget"])

    def history(data) -> None:
        _check(isinstance(data, dict) and isinstance(data.get("evaluations"), list), 'expected {"evaluations": [...]}')
        metric = data.get("metric") if isinstance(data.get("metric"), str) else out.metric
        out.metric = metric
        out.trials = [Trial(int(r["evaluation"]), _value(r.get(metric)), _points(r["positives"], "positives"),
                            str(r.get("error") or ""), float(r["seconds"]) if finite(r.get("seconds")) else None)
                      for r in data["evaluations"]]
        out.stopped = data.get("stopped") if isinstance(data.get("stopped"), str) else None
        out.history_file = HPS_HISTORY
    if not attempt(HPS_HISTORY, history, None, "HPS-Det's history"):
        _from_checkpoint(out, rd, state, lambda s: _hps_records(out, s), HPS_HISTORY)

    def best(data) -> None:
        _check(isinstance(data, dict), "expected a mapping")
        value = _value(data.get(out.metric))
        out.best_point = _points(data["positives"], "positives") if data.get("positives") is not None else None
        out.best_value = value
        if isinstance(data.get("layout"), str):
            out.best_details.append(("layout", data["layout"]))
        if isinstance(data.get("by_bin"), dict):
            out.best_details += [(str(k), str(v)) for k, v in data["by_bin"].items()]
    attempt(HPS_BEST, best, "the search has not ended; the best so far is taken from the history",
            "HPS-Det's best point")

    def final(data) -> None:
        _final_common(out, data)
        _check(isinstance(data.get("dynamic"), dict) and isinstance(data.get("default"), dict),
               'expected the "dynamic" and "default" assignments\' results')
        model = out.task.get("model", "the detector")
        positives = data["dynamic"].get("positives")
        out.final = _final_rows(data, {"dynamic": f"dynamic assignment, s = {positives}",
                                       "default": f"default assignment ({model})"}, lambda d: d)
        out.gain = _value(data.get("gain"))
    attempt(FINAL, final, "the final comparison has not run", "HPS-Det's final comparison (dynamic against "
                                                              "default assignment)")


def _read_pap(rd: RunDir, out: ScriptRun, attempt, state: dict | None) -> None:
    strategy = out.settings.get("strategy")
    out.best_name = "θ"
    rounds, samples = out.settings.get("rounds"), out.settings.get("samples")
    if number(rounds) and number(samples):
        out.budget = int(rounds) * int(samples)

    def ppo_history(entries) -> None:
        out.point_name = "θ"
        out.trials = [Trial(k, _value(h["reward"]) if h.get("status") == "ok" else None,
                            _points(h["theta"], "a θ"), str(h.get("error") or ""))
                      for k, h in enumerate(entries, 1)]

    def results(data) -> None:
        _check(isinstance(data, dict) and isinstance(data.get("history"), list), 'expected {"history": [...]}')
        ppo_history(data["history"])
        out.stopped = data.get("stopped") if isinstance(data.get("stopped"), str) else None
        out.history_file = PAP_RESULTS

    def surrogate(data) -> None:
        _check(isinstance(data, dict) and isinstance(data.get("evaluations"), list), 'expected {"evaluations": [...]}')
        out.point_name = "k"
        out.trials = [Trial(k, _value(r.get("AP")), _points(r["k"], "a grid point"), str(r.get("error") or ""),
                            float(r["seconds"]) if finite(r.get("seconds")) else None)
                      for k, r in enumerate(data["evaluations"], 1)]
        out.stopped = data.get("stopped") if isinstance(data.get("stopped"), str) else None
        out.history_file = PAP_HISTORY

    if strategy == "surrogate" or (strategy is None and rd.exists(PAP_HISTORY)):
        if not attempt(PAP_HISTORY, surrogate, None, "the surrogate search's history"):
            out.point_name = "k"
            _from_checkpoint(out, rd, state, lambda s: _hps_records(out, s), PAP_HISTORY)
    elif not attempt(PAP_RESULTS, results, None, "the PPO search's results"):
        _from_checkpoint(out, rd, state, lambda s: ppo_history(s["history"]), PAP_RESULTS)

    def theta(data) -> None:
        _check(isinstance(data, dict) and isinstance(data.get("theta"), list), 'expected {"theta": [...], ...}')
        values = _points(data["theta"], "theta")
        order = data.get("theta_order") if isinstance(data.get("theta_order"), list) else []
        functions = [str(n) for n in order if n != "grad_scale"]
        per = 8
        for j, name in enumerate(functions):
            block = values[j * per:(j + 1) * per]
            if block:
                out.best_details.append((name, ", ".join(f"{v:.3f}" for v in block)))
        if number(data.get("grad_scale")):
            out.best_details.append(("gradient scale", f"{data['grad_scale']:.4g}"))
        out.best_point = values
    attempt(PAP_THETA, theta, "the search has not ended; the best so far is taken from the history",
            "PAP-Loss parameters")

    def final(data) -> None:
        _final_common(out, data)
        _check(isinstance(data.get("losses"), dict), 'expected "losses"')
        labels = {"searched": f"PAP-Loss, searched θ ({data.get('strategy', strategy)})",
                  "fl_giou": "Focal + GIoU (fl_giou)", "pap": "PAP-Loss, identity substitutions (pap)"}
        labels.update({n: n for n in data["losses"] if n not in labels})
        out.final = _final_rows(data, {n: labels[n] for n in data["losses"]}, lambda d: d["losses"])
        if number(data.get("proxy_best")) and out.best_value is None:
            out.best_value = float(data["proxy_best"])
        searched = {r.name: r.mean for r in out.final}
        if finite(searched.get("searched")) and finite(searched.get("fl_giou")):
            out.gain = searched["searched"] - searched["fl_giou"]
    attempt(FINAL, final, "the final comparison has not run", "the PAP-Loss final comparison")
    if out.best_value is None and out.trials:
        good = [t.value for t in out.trials if finite(t.value)]
        out.best_value = max(good) if good else None


def verdict_text(run: ScriptRun, row: FinalRow) -> str:
    """``row``'s paired difference from the reference, ×100, with its 95% interval and verdict (``+1.23
    [+0.40, +2.06] better than default``); ``reference`` for the reference's own row; empty where the
    final.json holds no verdict."""
    if row.vs_reference is not None:
        return comparison_text(row.vs_reference)
    return "reference" if row.name == run.reference else ""


def point_text(point: list | None, limit: int = 6) -> str:
    """A point for one line: integers as they are, fractions to 3 digits, a long one cut after ``limit``."""
    if point is None:
        return "–"
    shown = [str(v) if isinstance(v, int) else f"{v:.3f}" for v in point[:limit]]
    more = f", … ({len(point)} values)" if len(point) > limit else ""
    return "[" + ", ".join(shown) + more + "]"


def describe(run: ScriptRun) -> str:
    """One line of what the search was: model, strategy, budget, how far it got."""
    task, settings = run.task, run.settings
    parts = [f"{task.get('model', '?')} ({task.get('backbone', '?')}, {task.get('image_size', '?')} px)"]
    if run.kind == HPS_DET:
        parts.append(f"layout {run.config.get('layout', settings.get('bins', '?')) if run.config else '?'}")
    else:
        parts.append(f"θ {settings.get('theta', '?')}")
    parts.append(f"{settings.get('strategy', '?')} strategy")
    done = f"{len(run.trials)} of {run.budget if run.budget is not None else '?'} proxy trainings"
    if task.get("proxy_steps") is not None:
        done += f" of {task['proxy_steps']} steps"
    if run.stopped:
        done += f" (stopped: {run.stopped})"
    return ", ".join(parts) + "; " + done
