"""Readers of a search's run files, shared by the evolution tests (imported, not collected)."""
import csv

from gp_loss.runtime.run_dir import RunDir


def read_json(path):
    """The JSON file at ``path`` (a run file), or ``None``."""
    return RunDir(path.parent).read_json(path.name)


def records(run):
    """The records of ``run``'s evaluations.jsonl."""
    return RunDir(run).read_jsonl("evaluations.jsonl")


def without_seconds(rows):
    """Records without their wall time and peak memory, which no two runs share."""
    return [{k: v for k, v in r.items() if k not in ("seconds", "peak_memory_mib")} for r in rows]


def logbook(run):
    """The rows of ``run``'s logbook.csv."""
    with open(run / "logbook.csv", newline="") as f:
        return list(csv.DictReader(f))
