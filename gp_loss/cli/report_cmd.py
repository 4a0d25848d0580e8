"""``gp-loss report RUN_DIR``: best formulas (with LaTeX), fitness against baselines, funnel, plot."""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from gp_loss.errors import GpLossError
from gp_loss.evolution.hall_of_fame import load_hall_of_fame
from gp_loss.evolution.run_files import BASELINES, FINAL, PLOT
from gp_loss.evolution.run_search import final_table
from gp_loss.filters.funnel import Funnel
from gp_loss.runtime.checkpoint import load_checkpoint
from gp_loss.runtime.run_dir import RunDir


def register(sub) -> None:
    p = sub.add_parser("report", help="summarise a search's run directory",
                       description="Print the hall of fame with LaTeX, validation fitness against the "
                                   "baselines, the final test comparison, the filter funnel and the plot path.")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--top", type=int, default=5, help="hall-of-fame entries to show (at least 1; default 5)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(run=run)


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _baselines(rd: RunDir) -> dict:
    """``baselines.json`` as name -> fitness; :class:`GpLossError` when it has another shape."""
    data = rd.read_json(BASELINES)
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(k, str) and (v is None or _number(v))
                                             for k, v in data.items()):
        raise GpLossError(f"{rd.file(BASELINES)} is not a mapping of baseline name to fitness: "
                          f"restore it, or remove it to report without the baselines")
    return {k: v for k, v in data.items() if v is not None}


def _final(rd: RunDir) -> dict | None:
    """``final.json``; :class:`GpLossError` when it has another shape."""
    data = rd.read_json(FINAL)
    if data is None:
        return None
    rows = data.get("rows") if isinstance(data, dict) else None
    ok = isinstance(data, dict) and isinstance(data.get("metric"), str) and isinstance(rows, list) and all(
        isinstance(r, dict) and isinstance(r.get("name"), str) and _number(r.get("mean")) and _number(r.get("std"))
        and isinstance(r.get("formulas"), dict) for r in rows)
    if not ok:
        raise GpLossError(f"{rd.file(FINAL)} is not a final comparison (metric, and rows of name, formulas, "
                          f"mean, std): restore it, or remove it to report without the final table")
    return data


def run(args: argparse.Namespace) -> int:
    if args.top < 1:
        raise GpLossError(f"--top must be at least 1, got {args.top}")
    rd = RunDir(args.run_dir)
    rows = load_hall_of_fame(rd.path)[:args.top]
    baselines = _baselines(rd)
    final = _final(rd)
    plot = rd.file(PLOT)
    state, warnings = load_checkpoint(rd.path, read_only=True)  # a report never moves or writes a file
    funnel = None
    if state:
        try:
            funnel = Funnel.from_dict(state["funnel"])
        except (KeyError, TypeError, ValueError, AttributeError):
            warnings.append("the checkpoint holds no readable filter funnel; not shown")
    if args.json:
        for w in warnings:
            print(f"warning: {w}", file=sys.stderr)
        report = {"hall_of_fame": rows, "baselines": baselines, "final": final,
                  "funnel": funnel.to_dict() if funnel else None,
                  "evaluations": state.get("evaluations", 0) if state else 0, "plot": str(plot)}
        print(json.dumps(_finite(report), indent=2, allow_nan=False))
        return 0
    if state:
        print(f"run {rd.path}: {state.get('evaluations', 0)} evaluations, "
              f"{state.get('generation', 0)} generations, {state.get('reused', 0)} reused")
    else:
        print(f"run {rd.path}: no readable checkpoint")
    print("\nhall of fame (validation fitness):")
    for row in rows:
        for name, formula in row["formulas"].items():
            print(f"  #{row['rank']} {row['fitness']:.4f}  {name} = {formula}")
            print(f"      LaTeX: {row['latex'][name]}")
    if baselines:
        print("baselines (validation fitness): " + ", ".join(f"{n} {v:.4f}" for n, v in baselines.items()))
    if final:
        print("\n" + final_table(final))
    if funnel:
        print("\nfilter funnel (all candidates bred):\n" + funnel.table())
    if plot.exists():
        print(f"\nplot: {plot}")
    for w in warnings:
        print(f"warning: {w}")
    return 0


def _finite(value):
    """``value`` with every NaN or infinite number as ``None``: JSON has no NaN (run files may be edited)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
