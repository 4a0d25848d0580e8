"""Read a run directory for a report, file by file, saying what is missing or damaged.

The directory of an HPS-Det or PAP-Loss run is read by :mod:`gp_loss.report.script_runs`
(:func:`collect` tells which program wrote it); everything else here is an evolutionary search's.

:func:`collect` never raises for one bad file: each file that is absent or not
what gp-loss writes adds a line to :attr:`RunFiles.problems` and its section is
left out. Only a path that is not a directory, or a directory none of whose
files can be read, is a :class:`~gp_loss.errors.GpLossError`. Nothing is written
and no file is moved (the checkpoint is read in its read-only mode).
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from gp_loss.errors import GpLossError
from gp_loss.evolution.run_files import (BASELINES, CONFIG, EVALUATIONS, FINAL, HALL_OF_FAME_JSON, LOGBOOK, MACHINE,
                                         read_stored_config)
from gp_loss.filters.funnel import Funnel
from gp_loss.runtime.checkpoint import load_checkpoint
from gp_loss.runtime.run_dir import RunDir

if TYPE_CHECKING:
    from gp_loss.report.script_runs import ScriptRun


def number(v) -> bool:
    """A finite or infinite int/float, not a bool."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def finite(v) -> bool:
    return number(v) and math.isfinite(v)


def read_baselines(rd: RunDir) -> dict:
    """``baselines.json`` as name -> fitness; :class:`GpLossError` when it has another shape."""
    data = rd.read_json(BASELINES)
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(k, str) and (v is None or number(v))
                                             for k, v in data.items()):
        raise GpLossError(f"{rd.file(BASELINES)} is not understood as a mapping of baseline name to fitness; "
                          f"it is left as it is")
    return {k: v for k, v in data.items() if v is not None}


def read_final(rd: RunDir) -> dict | None:
    """``final.json``; :class:`GpLossError` when it has another shape."""
    data = rd.read_json(FINAL)
    if data is None:
        return None
    rows = data.get("rows") if isinstance(data, dict) else None
    ok = isinstance(data, dict) and isinstance(data.get("metric"), str) and isinstance(rows, list) and all(
        isinstance(r, dict) and isinstance(r.get("name"), str) and number(r.get("mean")) and number(r.get("std"))
        and isinstance(r.get("formulas"), dict) for r in rows)
    if not ok:
        raise GpLossError(f"{rd.file(FINAL)} is not understood as a search's final comparison (metric, and rows "
                          f"of name, formulas, mean, std); it is left as it is")
    return data


def read_funnel(state: dict | None) -> tuple[Funnel | None, str | None]:
    """The checkpoint's filter funnel, or ``None`` and why not."""
    if not state:
        return None, None
    try:
        funnel = Funnel.from_dict(state["funnel"])
        for s in funnel.stages.values():  # (a hand-edited file may hold anything)
            if not all(number(v) for v in (s.entered, s.rejected, s.seconds)) or not all(
                    isinstance(r, str) and number(c) for r, c in s.reasons.items()) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in s.examples.items()):
                raise ValueError("not numbers")
        if not number(funnel.candidates) or not number(funnel.passed):
            raise ValueError("not numbers")
        return funnel, None
    except (KeyError, TypeError, ValueError, AttributeError):
        return None, "the checkpoint holds no readable filter funnel; not shown"


@dataclass
class RunFiles:
    """What a run directory holds, as far as it could be read."""

    path: Path
    config: dict | None = None
    state: dict | None = None  # the newest good checkpoint's state
    hall_of_fame: list[dict] = field(default_factory=list)
    baselines: dict[str, float] = field(default_factory=dict)
    final: dict | None = None
    machine: dict | None = None  # machine.json: host, platform, devices, workers
    evaluations: list[dict] = field(default_factory=list)
    logbook: list[dict] = field(default_factory=list)
    funnel: Funnel | None = None
    script: "ScriptRun | None" = None  # an HPS-Det or PAP-Loss run (gp_loss.report.script_runs): no search files
    problems: list[str] = field(default_factory=list)  # a file missing or damaged: what the page lacks
    warnings: list[str] = field(default_factory=list)  # e.g. a corrupt checkpoint with a good previous one

    @property
    def anything(self) -> bool:
        return bool(self.config or self.state or self.hall_of_fame or self.baselines or self.final
                    or self.evaluations or self.logbook or self.script)

    @property
    def layout(self) -> dict[str, str]:
        """Branch name -> kind name, from the hall of fame, else the configuration."""
        for row in self.hall_of_fame:
            return {n: k for n, k in row["kinds"].items() if isinstance(k, str)}
        branches = (self.config or {}).get("branches")
        if isinstance(branches, dict):
            return {n: k for n, k in branches.items() if isinstance(n, str) and isinstance(k, str)}
        return {}


def _evaluation_ok(r: dict) -> bool:
    return number(r.get("evaluation")) and number(r.get("fitness"))


def read_evaluations(rd: RunDir) -> tuple[list[dict], str | None]:
    """The evaluation records of ``evaluations.jsonl`` and, where some lines are damaged or not
    evaluation records, the line saying how many were left out (both reports show it)."""
    lines = rd.read_jsonl_lines(EVALUATIONS)
    good = [line.record for line in lines if line.sound and _evaluation_ok(line.record)]
    bad = len(lines) - len(good)
    why = (f"{rd.file(EVALUATIONS)}: {bad} of {len(lines)} line(s) damaged or not an evaluation record; "
           f"left out of the report (the file is left as it is)") if bad else None
    return good, why


def collect(path: str | Path) -> RunFiles:
    """Read every file of the run directory ``path`` that a report shows, whichever program wrote it."""
    from gp_loss.evolution.hall_of_fame import check_hall_of_fame
    from gp_loss.report.script_runs import SEARCH, collect_script_run, report_kind

    rd = RunDir(path)
    if not rd.path.is_dir():
        raise GpLossError(f"{rd.path} is not a run directory")
    kind = report_kind(rd.path)
    if kind != SEARCH:
        script = collect_script_run(rd.path, kind)
        return RunFiles(rd.path, config=script.config, script=script, problems=script.problems,
                        warnings=script.warnings)
    out = RunFiles(rd.path)

    def attempt(name: str, read, missing: str):
        if not rd.file(name).exists():
            out.problems.append(f"{name} is missing: {missing}")
            return None
        try:
            return read()
        except GpLossError as err:
            out.problems.append(str(err))
            return None

    out.config = attempt(CONFIG, lambda: read_stored_config(rd), "no configuration or budget shown")
    hof = attempt(HALL_OF_FAME_JSON, lambda: check_hall_of_fame(rd.read_json(HALL_OF_FAME_JSON),
                                                                rd.file(HALL_OF_FAME_JSON)),
                  "the run has not finished a generation; no hall of fame or loss curves of found losses")
    out.hall_of_fame = hof or []
    out.baselines = attempt(BASELINES, lambda: read_baselines(rd), "no baseline fitness shown") or {}
    out.final = attempt(FINAL, lambda: read_final(rd),
                        "the final retraining has not run; no test metric shown")
    try:  # optional (runs before it was recorded have none); a damaged one is only noted
        machine = rd.read_json(MACHINE)
    except GpLossError as err:
        out.problems.append(f"{err}; the machine is not shown")
        machine = None
    out.machine = machine if isinstance(machine, dict) else None

    def evaluations():
        good, why = read_evaluations(rd)
        if why:
            out.problems.append(why)
        return good
    out.evaluations = attempt(EVALUATIONS, evaluations, "no fitness over time or training outcomes") or []

    def logbook():
        try:
            with open(rd.file(LOGBOOK), newline="", encoding="utf-8") as f:
                return [dict(row) for row in csv.DictReader(f)]
        except (OSError, UnicodeDecodeError, csv.Error) as err:
            raise GpLossError(f"{rd.file(LOGBOOK)} is not readable CSV ({err})") from None
    out.logbook = attempt(LOGBOOK, logbook, "no per-generation timings") or []

    try:
        state, warnings = load_checkpoint(rd.path, read_only=True)
    except (GpLossError, OSError) as err:
        state, warnings = None, [str(err)]
    if state is not None and not isinstance(state, dict):
        state, warnings = None, warnings + ["the checkpoint's state is not a mapping; not used"]
    if state is None:
        out.problems.append("no readable checkpoint (checkpoint.json, checkpoint.prev.json): no filter funnel, "
                            "wall time or generation count")
    out.state = state
    out.warnings += warnings
    out.funnel, why = read_funnel(state)
    if why:
        out.problems.append(why)
    if not out.anything:
        raise GpLossError(f"nothing to report in {rd.path}: it holds no readable run file ({CONFIG}, "
                          f"{HALL_OF_FAME_JSON}, {EVALUATIONS}, {BASELINES}, {FINAL}, {LOGBOOK}, checkpoint.json)")
    return out
