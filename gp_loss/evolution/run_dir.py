"""The files of a run directory (``--out DIR``).

* ``config.json``: the resolved :class:`SearchConfig`;
* ``evaluations.jsonl``: one line per proxy training, appended as it finishes;
* ``logbook.csv``: DEAP Logbook, one row per generation;
* ``hall_of_fame.json`` (formula text) and ``hall_of_fame.py`` (PyTorch export);
* ``baselines.json``: the baselines' proxy fitness; ``final.json``: test metric of
  the best losses and the baselines retrained with several seeds;
* ``fitness.png``: fitness over evaluations;
* ``checkpoint.json`` (+ ``checkpoint.prev.json``), see :mod:`.checkpoint`.
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

from gp_loss.errors import GpLossError
from gp_loss.io import write_text_atomic


class RunDir:
    """Paths and writers of one run directory."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.config = self.path / "config.json"
        self.evaluations = self.path / "evaluations.jsonl"
        self.logbook = self.path / "logbook.csv"
        self.hall_of_fame_json = self.path / "hall_of_fame.json"
        self.hall_of_fame_py = self.path / "hall_of_fame.py"
        self.baselines = self.path / "baselines.json"
        self.final = self.path / "final.json"
        self.plot = self.path / "fitness.png"

    def prepare(self) -> None:
        """Create the directory and prove it is writable (a clear error before any work)."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / ".write_test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as err:
            raise GpLossError(f"output directory {self.path} is not writable: {err.strerror or err}; "
                              f"choose another --out") from None

    def has_run(self) -> bool:
        return self.config.exists()

    def read_json(self, path: Path) -> dict | list | None:
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise GpLossError(f"{path} is not readable JSON ({err})") from None

    def write_json(self, path: Path, data) -> None:
        write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")

    # -- evaluations.jsonl -------------------------------------------------------
    def append_evaluation(self, record: dict) -> None:
        """Append one line and flush it to disk (a kill loses only what is in flight)."""
        with open(self.evaluations, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def read_evaluations(self) -> list[dict]:
        """All complete lines; a line cut short by a kill is ignored."""
        if not self.evaluations.exists():
            return []
        records = []
        for line in self.evaluations.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return records

    def rewrite_evaluations(self, records: list[dict]) -> None:
        write_text_atomic(self.evaluations, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))

    # -- logbook.csv ---------------------------------------------------------------
    def write_logbook(self, rows: list[dict]) -> None:
        if not rows:
            return
        columns = list(rows[0])
        for r in rows:
            columns += [k for k in r if k not in columns]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
        write_text_atomic(self.logbook, buf.getvalue())
