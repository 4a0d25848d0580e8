"""Speed of the search with N workers against the serial run, and the engine's overhead.

Runs ``runs/search_classification.py`` (or another script) as a user does:
serially, and under ``python -m scoop -n N`` (or ``--workers N``), each into a
fresh run directory with the same seed and budget, then reads the logbooks.

* evaluations per minute of the search phase, and the ratio parallel / serial;
* overhead = 1 − (proxy-training seconds) / (wall seconds × workers): the share
  of the machine's time not spent training (selection, breeding through the
  filters, bookkeeping, idle workers);
* whether both runs produced the same hall of fame (they must).
"""
from __future__ import annotations

import csv
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from gp_loss.evolution.run_files import EVALUATIONS, HALL_OF_FAME_JSON, LOGBOOK
from gp_loss.runtime.parallel import BACKENDS
from gp_loss.runtime.run_dir import RunDir

ROOT = Path(__file__).resolve().parents[2]


def _read_run(out: Path) -> dict:
    with open(out / LOGBOOK, newline="") as f:
        rows = list(csv.DictReader(f))
    last = rows[-1]
    wall, train, breed = float(last["wall_s"]), float(last["train_s"]), float(last["breed_s"])
    evaluations = int(last["evaluations"])
    hof = json.loads((out / HALL_OF_FAME_JSON).read_text())["hall_of_fame"]
    peaks = [r["peak_memory_mib"] for r in RunDir(out).read_jsonl(EVALUATIONS)
             if isinstance(r.get("peak_memory_mib"), (int, float))]
    return {"evaluations": evaluations, "wall_s": wall, "train_s": train, "breed_s": breed,
            "evaluations_per_minute": 60 * evaluations / wall if wall else 0.0,
            "hall_of_fame": [r["formulas"] for r in hof],
            # the largest of the proxy trainings' peaks (each worker's own; see TrainOutcome)
            "peak_memory_mib": max(peaks) if peaks else None}


def bench_search(evaluations: int, workers: int = 2, backend: str = "scoop",
                 script: str = "runs/search_classification.py", extra: list[str] | None = None,
                 repeats: int = 1) -> dict:
    """Run the search serially and with ``workers`` on ``backend`` (a ``--map`` name); compare.

    With ``repeats`` > 1 the serial and parallel runs alternate, and the
    speed-up reported is the median of the pairs: on a shared machine the
    speed of both drifts by several percent within minutes, and a pair run
    back to back sees about the same machine.
    """
    common = ["--evaluations", str(evaluations), "--final-top", "1", "--final-seeds", "1",
              "--no-progress", *(extra or [])]
    pairs = []
    with tempfile.TemporaryDirectory(prefix="gp-loss-bench-") as tmp:
        for i in range(repeats):
            pair = {label: _run(label, Path(tmp) / f"{label}-{i}", workers, script, common)
                    for label in ("serial", backend)}
            pair["speedup"] = pair[backend]["evaluations_per_minute"] / pair["serial"]["evaluations_per_minute"]
            pairs.append(pair)
    speedups = [p["speedup"] for p in pairs]
    return {"evaluations": evaluations, "workers": workers, "backend": backend,
            "runs": {label: pairs[-1][label] for label in ("serial", backend)}, "pairs": pairs,
            "speedups": speedups, "speedup": statistics.median(speedups),
            "same_hall_of_fame": all(p["serial"]["hall_of_fame"] == p[backend]["hall_of_fame"] for p in pairs)}


def run_script(cmd: list[str], out: Path) -> dict:
    """Run a search command (from the repository root) that writes into ``out``; its figures and hall of fame."""
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    return _read_run(out)


def _run(label: str, out: Path, workers: int, script: str, common: list[str]) -> dict:
    """One search as a user starts it on the backend ``label`` (a ``--map`` name), read from its logbook."""
    backend = BACKENDS[label]
    cmd = backend.launch_command(sys.executable, script, workers) + ["--out", str(out)]
    run = run_script(cmd + common, out)
    n = workers if backend.needs_pickle else 1
    run["workers"] = n
    run["overhead"] = 1 - run["train_s"] / (run["wall_s"] * n) if run["wall_s"] else 0.0
    return run
