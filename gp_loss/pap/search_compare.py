"""The PAP-Loss search's final comparison and exports (:mod:`gp_loss.pap.search`).

The best θ, Focal + GIoU (``fl_giou``) and PAP-Loss with identity substitutions (``pap``) are
retrained on the same seeds; each loss but ``fl_giou`` gets its paired difference from ``fl_giou``
(gp_loss.metrics.paired). final.json holds the comparison; theta.json, pap_loss.py and
substitutions.png the best θ.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path

from gp_loss.errors import GpLossError
from gp_loss.pap.search_proxy import final_training
from gp_loss.runtime.atomic import write_text_atomic
from gp_loss.runtime.terminal import safe_line
from gp_loss.tasks.base import FAILED_STATUSES as FAILED

LABELS = {"searched": "the searched θ", "fl_giou": "fl_giou", "pap": "pap (identity)"}
REFERENCES = ("fl_giou", "pap")  # what the searched θ is compared with
PAIRED_REFERENCE = "fl_giou"  # the baseline every other loss's paired difference is taken from


def compare(out: Path, options: dict, run: dict, best: list[float], proxy_best: float, backend) -> dict:
    """Retrain the best θ, fl_giou and pap (identity) on the same seeds for --final-steps, a line each;
    final.json.

    Every loss but fl_giou (``"reference"``) holds ``vs_reference``: its paired difference from fl_giou
    on the same seeds, the 95% interval and the verdict (gp_loss.metrics.paired).

    Every training of both references failing leaves nothing to compare against: a one-line error with
    the first reason, never a table of zeros.
    """
    from gp_loss.metrics.paired import add_verdicts
    from gp_loss.runtime.progress import Progress, map_reporting

    seeds = [run["seed"] + k for k in range(run["final_seeds"])]
    specs = {"searched": best, "fl_giou": "fl_giou", "pap": "pap"}
    jobs = [(name, (options, spec, run["top_k"], s, run["device"], run["threads"]))
            for name, spec in specs.items() for s in seeds]
    metric = options["metric"]
    with Progress(len(jobs), "final") as progress:
        def finished(index: int, r: dict) -> None:
            name = jobs[index][0]
            outcome = f"{metric} {r['score']:.4f}" if r["status"] not in FAILED else \
                safe_line(f"failed ({r['status']}: {r['reason']})")
            progress.step()
            progress.line(f"final: seed {seeds.index(r['seed']) + 1}/{len(seeds)} of {LABELS[name]} | {outcome} | "
                          f"{r['seconds']:.0f} s")

        results = map_reporting(backend, final_training, [job for _, job in jobs], finished)
    report = {"metric": metric, "seeds": seeds, "final_steps": options["final_steps"],
              "strategy": run["strategy"], "proxy_best": proxy_best, "theta": best, "losses": {}}
    for k, name in enumerate(specs):
        part = results[k * len(seeds):(k + 1) * len(seeds)]
        scores = [r["score"] for r in part]
        report["losses"][name] = {"mean": statistics.fmean(scores),
                                  "std": statistics.stdev(scores) if len(scores) > 1 else 0.0,
                                  "failed": all(r["status"] in FAILED for r in part),
                                  "trainings": part}
    if all(report["losses"][name]["failed"] for name in REFERENCES):
        first = report["losses"][REFERENCES[0]]["trainings"][0]
        raise GpLossError(safe_line(f"every final training of fl_giou and pap failed (fl_giou, seed {first['seed']}: "
                                    f"{first['status']}: {first['reason']}): nothing to compare the searched θ "
                                    f"with; check the data and the task settings"))
    # Every loss trained on the same seeds: seed s of one is paired with seed s of fl_giou (a failed
    # training scores 0, as in every final comparison).
    rows = [{"name": name, "seeds": [t["seed"] for t in row["trainings"]],
             "scores": [t["score"] for t in row["trainings"]]} for name, row in report["losses"].items()]
    add_verdicts(rows, PAIRED_REFERENCE)
    report["reference"] = PAIRED_REFERENCE
    for row in rows:
        if "vs_reference" in row:
            report["losses"][row["name"]]["vs_reference"] = row["vs_reference"]
    write_text_atomic(out / "final.json", json.dumps(report, indent=1) + "\n")
    return report


def stored_comparison(out: Path, best: list[float], seeds: list[int]) -> dict | None:
    """final.json of a finished run, if it compared this θ on these seeds (a resume then retrains nothing)."""
    try:
        report = json.loads((out / "final.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(report, dict) or report.get("theta") != best or report.get("seeds") != seeds:
        return None
    return report


def comparison_table(report: dict, strategy: str) -> str:
    """The final comparison as printed: a line per loss, its mean ± std and its verdict against fl_giou."""
    from gp_loss.metrics.paired import comparison_text, read_comparison

    lines = [f"{report['metric']} after {report['final_steps']} steps, seeds {report['seeds']} (mean ± std; paired "
             f"difference from fl_giou ×100, 95% CI):"]
    labels = {"searched": f"PAP-Loss, searched θ ({strategy})", "fl_giou": "Focal + GIoU (fl_giou)",
              "pap": "PAP-Loss, identity substitutions (pap)"}
    width = max(len(v) for v in labels.values()) + 2
    for name, label in labels.items():
        row = report["losses"][name]
        value = "failed (every seed)" if row.get("failed") else f"{row['mean']:.4f} ± {row['std']:.4f}"
        # a final.json that --resume kept may hold no verdict: the row is then shown without one
        compared = read_comparison(row.get("vs_reference"))
        verdict = safe_line(comparison_text(compared)) if compared else \
            "reference" if name == report.get("reference") else ""
        lines.append(f"  {(label + ':').ljust(width)}{value:<19}  {verdict}".rstrip())
    return "\n".join(lines)


def write_exports(out: Path, best: list[float]) -> None:
    """theta.json, pap_loss.py and substitutions.png of the best θ."""
    from gp_loss.pap import PAPParameters
    from gp_loss.pap.export_torch import export_pap_module
    from gp_loss.pap.plot import plot_substitutions

    params = PAPParameters.from_theta(best)
    write_text_atomic(out / "theta.json", params.to_json() + "\n")
    write_text_atomic(out / "pap_loss.py", export_pap_module(params))
    plot_substitutions(params, out / "substitutions.png", title="searched PAP-Loss substitutions "
                                                                f"(gradient scale {params.grad_scale:.3g})")
