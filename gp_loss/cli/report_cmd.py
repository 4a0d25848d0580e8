"""``gp-loss report RUN_DIR``: best formulas (with LaTeX), fitness against baselines, funnel, plot."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

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
    p.add_argument("--top", type=int, default=5, help="hall-of-fame entries to show (default 5)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    rd = RunDir(args.run_dir)
    rows = load_hall_of_fame(rd.path)[:max(args.top, 0)]
    baselines = rd.read_json(BASELINES) or {}
    final = rd.read_json(FINAL)
    plot = rd.file(PLOT)
    state, warnings = load_checkpoint(rd.path)
    funnel = Funnel.from_dict(state["funnel"]) if state else None
    if args.json:
        print(json.dumps({"hall_of_fame": rows, "baselines": baselines, "final": final,
                          "funnel": funnel.to_dict() if funnel else None,
                          "evaluations": state["evaluations"] if state else 0,
                          "plot": str(plot)}, indent=2))
        return 0
    print(f"run {rd.path}: {state['evaluations'] if state else 0} evaluations, "
          f"{state['generation'] if state else 0} generations, {state['reused'] if state else 0} reused")
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
