"""An HPS-Det search's trainings (:mod:`gp_loss.tasks.detection.hps_search`), what it writes, and its
final comparison.

:class:`ProxyObjective` scores an s by a proxy training; :func:`write_history` writes history.csv,
history.json, best.json and ap_over_iterations.png from the search's result; :func:`compare`
retrains the best s and the detector's default assignment on the same seeds and writes final.json.
The trainings are top-level functions and classes of this module: worker processes receive them by
reference.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from gp_loss.errors import GpLossError
from gp_loss.runtime.atomic import write_bytes_atomic, write_text_atomic
from gp_loss.runtime.terminal import safe_line
from gp_loss.tasks.base import FAILED_STATUSES as FAILED


# ----------------------------------------------------------------------------- trainings (top level: they pickle)

def _task(options: dict, device: str, threads: int):
    """The detection task of ``options`` in this process (built once per configuration)."""
    from gp_loss.tasks.registry import process_task

    return process_task("detection", options, device, threads)


class ProxyObjective:
    """s (one positive count per bin) -> the validation metric of a proxy training with dynamic assignment.

    A training that stops on a non-finite loss or is too slow scores 0 (a bad s); one that raises is
    a failed point (the search records its reason and goes on).
    """

    def __init__(self, options: dict, loss: str, seed: int, device: str, threads: int):
        self.options, self.loss, self.seed, self.device, self.threads = options, loss, seed, device, threads

    def __call__(self, s: list[int]) -> float:
        out = _task({**self.options, "assignment": "dynamic", "positives": [int(v) for v in s]},
                    self.device, self.threads).proxy_fitness(self.loss, self.seed)
        if out.status == "error":
            raise RuntimeError(out.reason)
        return float(out.score)


def final_training(job: tuple) -> dict:
    """One final training: ``(options, loss, seed, device, threads)`` -> its metrics and status."""
    options, loss, seed, device, threads = job
    out = _task(options, device, threads).final_score(loss, seed)
    return {"seed": seed, "score": out.score, "status": out.status, "reason": out.reason,
            "metrics": out.metrics, "seconds": round(out.seconds, 2)}


# ----------------------------------------------------------------------------- run files

def write_history(out: Path, result, layout, metric: str, lower: list[int], upper: list[int], n_init: int) -> None:
    """history.csv, history.json, best.json and ap_over_iterations.png from the search's result."""
    names = layout.bin_names()
    best, rows = None, []
    for k, ((x, value), t) in enumerate(zip(result.history, result.times)):
        if value is not None and (best is None or value > best):
            best = value
        rows.append({"evaluation": k + 1, metric: value, f"best_{metric}": best, "seconds": round(t, 2),
                     "error": result.errors.get(k, ""), "positives": x})
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["evaluation", metric, f"best_{metric}", "seconds", "error"] + [f"s{j}" for j in range(len(names))])
    for r in rows:
        writer.writerow([r["evaluation"], "" if r[metric] is None else r[metric],
                         "" if r[f"best_{metric}"] is None else r[f"best_{metric}"], r["seconds"], r["error"]]
                        + r["positives"])
    write_text_atomic(out / "history.csv", text.getvalue())
    summary = {"layout": layout.notation(), "bins": names, "lower": lower, "upper": upper, "n_init": n_init,
               "metric": metric, "stopped": result.stopped, "seconds": round(result.seconds, 2)}
    write_text_atomic(out / "history.json", json.dumps({**summary, "evaluations": rows}, indent=1) + "\n")
    write_text_atomic(out / "best.json", json.dumps({
        "positives": result.best_x, metric: result.best_value, "layout": layout.notation(),
        "by_bin": None if result.best_x is None else dict(zip(names, result.best_x)),
        "evaluations": len(rows)}, indent=1) + "\n")
    plot_history(out / "ap_over_iterations.png", rows, metric, n_init)


def plot_history(path: Path, rows: list[dict], metric: str, n_init: int) -> None:
    """The paper's Fig. 2: the metric of each evaluation and the best so far, over the search's iterations."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
    xs = [r["evaluation"] for r in rows if r[metric] is not None]
    ax.plot(xs, [r[metric] for r in rows if r[metric] is not None], "o-", ms=3, lw=0.8, color="tab:blue",
            label=f"{metric} of each proxy training")
    ax.plot(xs, [r[f"best_{metric}"] for r in rows if r[metric] is not None], "-", lw=1.6, color="tab:red",
            label="best so far")
    ax.axvline(n_init + 0.5, color="grey", ls=":", lw=1, label="end of the initial design")
    ax.set_xlabel("iteration (proxy trainings)")
    ax.set_ylabel(metric)
    ax.set_title("HPS-Det search")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    write_bytes_atomic(path, buffer.getvalue())


# ----------------------------------------------------------------------------- the comparison

def _per_seed(arm: dict) -> dict:
    """``{"seeds", "scores"}`` of one arm's final trainings (shape (n,) each), for the paired comparison."""
    return {"seeds": [t["seed"] for t in arm["trainings"]], "scores": [t["score"] for t in arm["trainings"]]}


def compare(out: Path, options: dict, run: dict, best: list[int], metric: str, backend) -> dict:
    """Retrain the best s and the default assignment (same seeds, --final-steps), a line each; final.json.

    final.json's ``dynamic`` holds ``vs_reference``: its paired difference from the default assignment
    (``"reference"``), the 95% interval and the verdict (gp_loss.metrics.paired).

    Every training of the default assignment failing leaves nothing to compare against: a one-line
    error with the first reason, never a gain over zeros.
    """
    from gp_loss.metrics.paired import compare_rows
    from gp_loss.runtime.progress import Progress, map_reporting

    seeds = [run["seed"] + k for k in range(run["final_seeds"])]
    arms = {"dynamic": {**options, "assignment": "dynamic", "positives": best},
            "default": {**options, "assignment": "default", "positives": []}}
    jobs = [(name, (o, run["loss"], s, run["device"], run["threads"])) for name, o in arms.items() for s in seeds]
    with Progress(len(jobs), "final") as progress:
        def finished(index: int, r: dict) -> None:
            name, (_, _, seed, _, _) = jobs[index]
            outcome = f"{metric} {r['score']:.4f}" if r["status"] not in FAILED else \
                safe_line(f"failed ({r['status']}: {r['reason']})")
            progress.step()
            progress.line(f"final: seed {seeds.index(seed) + 1}/{len(seeds)} of the {name} assignment | "
                          f"{outcome} | {r['seconds']:.0f} s")

        results = map_reporting(backend, final_training, [job for _, job in jobs], finished)
    report = {"metric": metric, "seeds": seeds, "final_steps": options["final_steps"]}
    for k, name in enumerate(arms):
        part = results[k * len(seeds):(k + 1) * len(seeds)]
        scores = [r["score"] for r in part]
        report[name] = {"mean": sum(scores) / len(scores), "trainings": part,
                        "failed": all(r["status"] in FAILED for r in part)}
    if report["default"]["failed"]:
        first = report["default"]["trainings"][0]
        raise GpLossError(safe_line(f"every final training of the default assignment failed (seed {first['seed']}: "
                                    f"{first['status']}: {first['reason']}): nothing to compare the searched s "
                                    f"with; check the data and the task settings"))
    report["dynamic"]["positives"] = best
    # A searched s whose every training failed has no score to take a gain from.
    report["gain"] = None if report["dynamic"]["failed"] else report["dynamic"]["mean"] - report["default"]["mean"]
    # Both arms trained on the same seeds: the paired difference and its interval say whether the gain
    # exceeds seed noise (a failed training scores 0, as in every final comparison).
    report["reference"] = "default"
    report["dynamic"]["vs_reference"] = {"baseline": "default", **compare_rows(
        _per_seed(report["dynamic"]), _per_seed(report["default"]))}
    write_text_atomic(out / "final.json", json.dumps(report, indent=1) + "\n")
    return report


def comparison_table(report: dict, model: str) -> str:
    """The final comparison as printed: each assignment's mean, the gain and the paired verdict."""
    from gp_loss.metrics.paired import comparison_text

    d, b = report["dynamic"], report["default"]
    dynamic = "failed (every seed)" if d["failed"] else f"{d['mean']:.4f}"
    rows = [(f"dynamic assignment, s = {d['positives']}", dynamic),
            (f"default assignment ({model})", f"{b['mean']:.4f}"),
            ("gain", "none (the searched s failed)" if report["gain"] is None else f"{report['gain']:+.4f}"),
            ("vs default, paired (×100, 95% CI)", safe_line(comparison_text(d["vs_reference"])))]
    width = max(len(label) for label, _ in rows) + 2
    lines = [f"{report['metric']} after {report['final_steps']} steps, seeds {report['seeds']}:"]
    lines += [f"  {(label + ':').ljust(width)}{value}" for label, value in rows]
    return "\n".join(lines)
