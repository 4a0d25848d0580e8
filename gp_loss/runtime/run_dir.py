"""A run directory (``--out DIR``): the files of one run, read and written safely.

Whole files (JSON, CSV, text) are replaced atomically, so a reader or a
resumed run never sees one half-written. A JSONL file grows one line at a
time, each flushed to disk as it is appended: a kill loses at most the line
being written, and reading skips a line cut short. What the files are called
and hold is the business of the search that writes them (the evolution's are
in :mod:`gp_loss.evolution.run_files`); the checkpoint's are in
:mod:`gp_loss.runtime.checkpoint`.
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

from gp_loss.errors import GpLossError
from gp_loss.runtime.atomic import write_text_atomic


class RunDir:
    """One run directory; every method takes a file name relative to it."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def file(self, name: str) -> Path:
        """The path of the file ``name``."""
        return self.path / name

    def exists(self, name: str) -> bool:
        return self.file(name).exists()

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

    # -- whole files -------------------------------------------------------------------
    def read_json(self, name: str) -> Any:
        """The content of the JSON file ``name``, or ``None`` if there is none."""
        path = self.file(name)
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise GpLossError(f"{path} is not readable JSON ({err})") from None

    def write_json(self, name: str, data: Any) -> None:
        """Replace ``name`` with ``data`` as indented JSON, keys sorted."""
        self.write_text(name, json.dumps(data, indent=2, sort_keys=True) + "\n")

    def write_text(self, name: str, text: str) -> None:
        """Replace ``name`` with ``text``."""
        write_text_atomic(self.file(name), text)

    def write_csv(self, name: str, rows: list[dict]) -> None:
        """Replace ``name`` with ``rows`` as CSV: a column for every key of any row, in order of appearance.

        Nothing is written for no rows.
        """
        if not rows:
            return
        columns = list(rows[0])
        for r in rows:
            columns += [k for k in r if k not in columns]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
        self.write_text(name, buf.getvalue())

    # -- JSONL: one record a line, appended as it comes ------------------------------------
    def append_jsonl(self, name: str, record: dict) -> None:
        """Append one line and flush it to disk (a kill loses only what is in flight)."""
        with open(self.file(name), "a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def read_jsonl(self, name: str) -> list[dict]:
        """All complete lines of ``name`` (none if it does not exist); a line cut short by a kill is skipped."""
        path = self.file(name)
        if not path.exists():
            return []
        records = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return records

    def rewrite_jsonl(self, name: str, records: list[dict]) -> None:
        """Replace ``name`` with ``records``, one line each."""
        self.write_text(name, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
