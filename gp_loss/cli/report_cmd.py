"""``gp-loss report RUN_DIR``: best formulas (with LaTeX), fitness against baselines, funnel, plot.

``--html`` writes the run's page instead (:mod:`gp_loss.report`): one self-contained file.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from gp_loss.errors import GpLossError
from gp_loss.evolution.hall_of_fame import load_hall_of_fame
from gp_loss.evolution.run_files import PLOT
from gp_loss.evolution.run_search import final_table
from gp_loss.filters.funnel import Funnel
from gp_loss.report.collect import read_baselines, read_final
from gp_loss.runtime.checkpoint import load_checkpoint
from gp_loss.runtime.run_dir import RunDir


def register(sub) -> None:
    p = sub.add_parser("report", help="summarise a search's run directory",
                       description="Print the hall of fame with LaTeX, validation fitness against the "
                                   "baselines, the final test comparison, the filter funnel and the plot path; "
                                   "or, with --html, write all of it as one self-contained page with the "
                                   "found losses' curves against the baselines.")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--top", type=int, default=5, help="hall-of-fame entries to show (at least 1; default 5)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--html", action="store_true",
                   help="write the report as one offline HTML page (default RUN_DIR/report.html)")
    p.add_argument("--out", type=Path, default=None, metavar="FILE", help="with --html: the page to write")
    p.set_defaults(run=run)


def _html(args: argparse.Namespace) -> int:
    from gp_loss.report.collect import collect
    from gp_loss.report.page import build_page, write_html

    run = collect(args.run_dir)  # one line and exit 2 when nothing can be shown
    target = write_html(build_page(run, args.top), args.out if args.out is not None else run.path / "report.html")
    lacking = len(run.problems) + len(run.warnings)
    print(f"wrote {target} ({target.stat().st_size / 1024:.0f} KB)"
          + (f"; it lists {lacking} missing or damaged file(s)" if lacking else ""))
    return 0


def run(args: argparse.Namespace) -> int:
    if args.top < 1:
        raise GpLossError(f"--top must be at least 1, got {args.top}")
    if args.out is not None and not args.html:
        raise GpLossError("--out is the page that --html writes: add --html, or leave --out out")
    if args.html and args.json:
        raise GpLossError("--html and --json are two forms of the report: choose one")
    if args.html:
        return _html(args)
    rd = RunDir(args.run_dir)
    rows = load_hall_of_fame(rd.path)[:args.top]
    baselines = read_baselines(rd)
    final = read_final(rd)
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
    from gp_loss.report.formulas import Formulas
    formulas = Formulas()
    for row in rows:
        for name, formula in row["formulas"].items():
            print(f"  #{row['rank']} {row['fitness']:.4f}  {name} = {formula}")
            latex = formulas.get(row["kinds"].get(name), formula).latex  # simplified (SymPy)
            print(f"      LaTeX: {latex if latex is not None else row['latex'][name]}")
    if baselines:
        print("baselines (validation fitness): " + ", ".join(f"{n} {v:.4f}" for n, v in baselines.items()))
    if final:
        print("\n" + final_table(final))
    if funnel:
        print("\nfilter funnel (all candidates bred; in a reason, … is a measured value that differs between "
              "the candidates counted together):\n" + funnel.table().replace("#", "…"))
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
