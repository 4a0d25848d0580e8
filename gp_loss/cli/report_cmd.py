"""``gp-loss report RUN_DIR``: best formulas (with LaTeX), fitness against baselines, funnel, plot.

``--html`` writes the run's page instead (:mod:`gp_loss.report`): one self-contained file.
The run directory of an HPS-Det or PAP-Loss run (``runs/hps_det.py``, ``runs/search_pap.py``)
is reported as what it is: its history of proxy trainings, best point and final comparison
(:mod:`gp_loss.report.script_runs` tells the kinds apart). Every text read from the run
directory is printed through :func:`gp_loss.runtime.terminal.safe_text`.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from gp_loss.errors import GpLossError
from gp_loss.runtime.terminal import safe_text


def register(sub) -> None:
    p = sub.add_parser("report", help="summarise a search's run directory",
                       description="Print the hall of fame with LaTeX, validation fitness against the "
                                   "baselines, the final test comparison, the filter funnel and the plot path; "
                                   "or, with --html, write all of it as one self-contained page with the "
                                   "found losses' curves against the baselines. An HPS-Det or PAP-Loss run "
                                   "(runs/hps_det.py, runs/search_pap.py) shows its history of proxy "
                                   "trainings, its best point and its final comparison.")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--top", type=int, default=5, help="hall-of-fame entries to show (at least 1; default 5)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--html", action="store_true",
                   help="write the report as one offline HTML page (default RUN_DIR/report.html)")
    p.add_argument("--out", type=Path, default=None, metavar="FILE", help="with --html: the page to write")
    p.set_defaults(run=run)


def say(text: object = "", file=None) -> None:
    """Print ``text`` with every control character from a run file shown as a visible escape."""
    print(safe_text(text), file=file if file is not None else sys.stdout)


def _html(args: argparse.Namespace) -> int:
    from gp_loss.report.collect import collect
    from gp_loss.report.page import build_page, write_html

    run = collect(args.run_dir)  # one line and exit 2 when nothing can be shown
    target = write_html(build_page(run, args.top), args.out if args.out is not None else run.path / "report.html")
    lacking = len(run.problems) + len(run.warnings)
    say(f"wrote {target} ({target.stat().st_size / 1024:.0f} KB)"
        + (f"; it lists {lacking} missing or damaged file(s)" if lacking else ""))
    return 0


def run(args: argparse.Namespace) -> int:
    from gp_loss.report.script_runs import SEARCH, report_kind

    if args.top < 1:
        raise GpLossError(f"--top must be at least 1, got {args.top}")
    if args.out is not None and not args.html:
        raise GpLossError("--out is the page that --html writes: add --html, or leave --out out")
    if args.html and args.json:
        raise GpLossError("--html and --json are two forms of the report: choose one")
    if args.html:
        return _html(args)
    if not args.run_dir.is_dir():
        raise GpLossError(f"{args.run_dir} is not a run directory")
    kind = report_kind(args.run_dir)
    return _search(args) if kind == SEARCH else _script(args, kind)


# -- an evolutionary search ---------------------------------------------------------------------
def _search(args: argparse.Namespace) -> int:
    from gp_loss.evolution.hall_of_fame import load_hall_of_fame
    from gp_loss.evolution.run_files import HALL_OF_FAME_JSON, PLOT
    from gp_loss.evolution.run_search import final_table
    from gp_loss.report.collect import read_baselines, read_evaluations, read_final, read_funnel
    from gp_loss.report.units import metric_label, metric_value
    from gp_loss.runtime.checkpoint import load_checkpoint
    from gp_loss.runtime.run_dir import RunDir

    rd = RunDir(args.run_dir)
    rows = load_hall_of_fame(rd.path)[:args.top]
    data = rd.read_json(HALL_OF_FAME_JSON)
    try:
        baselines = read_baselines(rd)
        final = read_final(rd)
    except GpLossError as err:  # the page shows a run whatever one of its files holds
        raise GpLossError(f"{err}; `gp-loss report --html` shows the rest of the run") from None
    plot = rd.file(PLOT)
    state, warnings = load_checkpoint(rd.path, read_only=True)  # a report never moves or writes a file
    state = state if isinstance(state, dict) else None
    funnel, why = read_funnel(state)
    if why:
        warnings.append(why)
    _, damaged = read_evaluations(rd)
    if damaged:
        warnings.append(damaged)
    if args.json:
        for w in warnings:
            say(f"warning: {w}", file=sys.stderr)
        report = {"hall_of_fame": rows, "baselines": baselines, "final": final,
                  "funnel": funnel.to_dict() if funnel else None,
                  "evaluations": state.get("evaluations", 0) if state else 0, "plot": str(plot)}
        _print_json(report)
        return 0
    if state:
        say(f"run {rd.path}: {state.get('evaluations', 0)} evaluations, "
            f"{state.get('generation', 0)} generations, {state.get('reused', 0)} reused")
    else:
        say(f"run {rd.path}: no readable checkpoint")
    val_metric = data.get("metric") if isinstance(data, dict) and isinstance(data.get("metric"), str) else \
        "validation fitness"
    say(f"\nhall of fame, {metric_label(val_metric)}:")
    from gp_loss.report.formulas import Formulas
    formulas = Formulas()
    shown = []
    for row in rows:
        for name, formula in row["formulas"].items():
            say(f"  #{row['rank']} {metric_value(row['fitness'])}  {name} = {formula}")
            f = formulas.get(row["kinds"].get(name), formula)
            shown.append(f)
            say(f"      LaTeX: {f.latex if f.latex is not None else row['latex'][name]}")  # simplified (SymPy)
    _legend(shown)
    if baselines:
        say(f"baselines, {metric_label(val_metric)}: "
            + ", ".join(f"{n} {metric_value(v)}" for n, v in baselines.items()))
    if final:
        say(f"\nfinal comparison, {metric_label(final['metric'])}:\n" + final_table(final))
    if funnel:
        say("\nfilter funnel (all candidates bred; in a reason, … is a measured value that differs between "
            "the candidates counted together):\n" + funnel.table().replace("#", "…"))
    if plot.exists():
        say(f"\nplot: {plot}")
    for w in warnings:
        say(f"warning: {w}")
    return 0


def _legend(formulas) -> None:
    from gp_loss.report.legend import operator_legend

    entries = operator_legend(formulas)
    if entries:
        say("  operators drawn by name in the LaTeX:")
        for entry in entries:
            say(f"    {entry.text()}")


# -- an HPS-Det or PAP-Loss run -----------------------------------------------------------------
def _script(args: argparse.Namespace, kind: str) -> int:
    from gp_loss.report.script_runs import collect_script_run, describe, point_text, verdict_text
    from gp_loss.report.units import metric_gain, metric_label, metric_value

    run = collect_script_run(args.run_dir, kind)  # one line and exit 2 when nothing can be shown
    lacking = run.problems + run.warnings
    if args.json:
        for w in lacking:
            say(f"warning: {w}", file=sys.stderr)
        _print_json(run.to_dict())
        return 0
    say(f"{run.title} in {run.path}")
    if run.config:
        say(f"  {describe(run)}")
    if run.trials:
        say(f"\nhistory, {metric_label(run.metric)} of each proxy training and the best so far "
            f"(from {run.history_file}):")
        best = None
        for t in run.trials:
            if t.value is not None and (best is None or t.value > best):
                best = t.value
            value = metric_value(t.value) if t.value is not None else "failed"
            say(f"  {t.number:>4}  {value:>7}  {metric_value(best):>7}  {run.point_name} = {point_text(t.point)}"
                + (f"  ({t.error})" if t.error else ""))
    if run.best_point is not None or run.best_value is not None:
        say(f"\nbest point: {run.best_name} = {point_text(run.best_point, limit=12 if run.best_details else 50)}, "
            f"proxy {metric_label(run.metric)} {metric_value(run.best_value)}")
        for name, value in run.best_details:
            say(f"  {name}: {value}")
    if run.final:
        seeds = ", ".join(str(s) for s in run.final_seeds) or "?"
        paired = any(r.vs_reference is not None for r in run.final)
        say(f"\nfinal comparison, {metric_label(run.final_metric or run.metric)} after {run.final_steps} steps "
            f"on seeds {seeds} (mean ± std" + ("; the paired difference, 95% CI" if paired else "") + "):")
        gain = f"gain over {run.gain_over}"
        width = max([len(r.label) for r in run.final] + [len(gain)]) + 2
        for r in run.final:
            verdict = verdict_text(run, r)  # the paired difference from the reference, where final.json has it
            say(f"  {(r.label + ':').ljust(width)}{metric_value(r.mean)} ± {metric_value(r.std)}"
                + (f"  {verdict}" if verdict else "") + (f"  ({'; '.join(r.failed)})" if r.failed else ""))
        if run.gain is not None:
            say(f"  {(gain + ':').ljust(width)}{metric_gain(run.gain)}")
    for path in run.pictures.values():
        say(f"\nplot: {path}")
    for w in lacking:
        say(f"warning: {w}")
    return 0


def _print_json(data) -> None:
    """``data`` as JSON on standard output: ASCII only, so every control character and bidi override is a
    ``\\uXXXX`` escape (DEL, the one JSON leaves raw, too)."""
    print(json.dumps(_finite(data), indent=2, allow_nan=False, ensure_ascii=True).replace("\x7f", "\\u007f"))


def _finite(value):
    """``value`` with every NaN or infinite number as ``None``: JSON has no NaN (run files may be edited)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
