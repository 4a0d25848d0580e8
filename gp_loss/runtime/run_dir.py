"""A run directory (``--out DIR``): the files of one run, read and written safely.

Whole files (JSON, CSV, text) are replaced atomically, so a reader or a
resumed run never sees one half-written. A JSONL file grows one line at a
time, each flushed to disk as it is appended: a kill loses at most the line
being written; :meth:`RunDir.read_jsonl_lines` tells such a line apart, so
that whoever resumes can report it. While a process writes a run, it holds
the directory's lock (:meth:`RunDir.lock`). What the files are called
and hold is the business of the search that writes them (the evolution's are
in :mod:`gp_loss.evolution.run_files`); the checkpoint's are in
:mod:`gp_loss.runtime.checkpoint`.
"""
from __future__ import annotations

import contextlib
import csv
import datetime
import fcntl
import hashlib
import io
import json
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from gp_loss.errors import GpLossError
from gp_loss.runtime.atomic import write_text_atomic


LOCK = ".lock"


@dataclass(frozen=True)
class JsonlLine:
    """One line of a JSONL file as found on disk.

    ``record`` is ``None`` where the text is not a JSON object; ``complete`` is
    false for a last line without its newline (cut short while being written).
    """

    number: int          # 1-based
    text: str            # without the newline
    record: dict | None
    complete: bool

    @property
    def sound(self) -> bool:
        return self.complete and self.record is not None


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

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run directory's lock while the block runs: one writer at a time.

        An advisory ``flock`` on ``.lock``, which names its holder (host, pid,
        command, start time). The operating system releases it when the holder
        exits, even by ``kill -9``, so a stale file never blocks a resume. A
        second process gets a :class:`GpLossError` naming the holder. (Over NFS,
        ``flock`` only excludes processes of one host.)
        """
        path = self.file(LOCK)
        handle = open(path, "a+", encoding="utf-8")
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise GpLossError(f"{self.path} is in use by {holder}: wait for it to finish or stop it, "
                                  f"or choose another --out") from None
            handle.seek(0)
            handle.truncate()
            command = " ".join(sys.argv) if sys.argv and sys.argv[0] else "python"
            handle.write(f"pid {os.getpid()} on {socket.gethostname()} ({command}, since "
                         f"{datetime.datetime.now().isoformat(timespec='seconds')})\n")
            handle.flush()
            try:
                yield
            finally:
                handle.truncate(0)  # nobody holds it any more
        finally:
            handle.close()  # releases the lock

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
        except RecursionError:
            raise GpLossError(f"{path} is not readable JSON (nested too deeply to be one of gp-loss's files)") from None

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
        self.append_jsonl_text(name, [jsonl_text(record)])

    def read_jsonl(self, name: str) -> list[dict]:
        """The records of the sound lines of ``name`` (none if it does not exist), for reports and plots.

        Whoever must account for every line (a resume) uses :meth:`read_jsonl_lines`.
        """
        return [line.record for line in self.read_jsonl_lines(name) if line.sound]

    def read_jsonl_lines(self, name: str) -> list[JsonlLine]:
        """Every line of ``name`` as found, damaged ones included (none if it does not exist)."""
        path = self.file(name)
        if not path.exists():
            return []
        try:
            text = path.read_bytes().decode("utf-8", errors="replace")
        except OSError as err:
            raise GpLossError(f"cannot read {path}: {err.strerror or err}") from None
        pieces = text.split("\n")
        last_complete = pieces[-1] == ""
        if last_complete:
            pieces.pop()
        lines = []
        for i, piece in enumerate(pieces):
            try:
                record = json.loads(piece)
            except (ValueError, RecursionError):  # not JSON, a number too large, or nested too deeply
                record = None
            lines.append(JsonlLine(i + 1, piece, record if isinstance(record, dict) else None,
                                   complete=last_complete or i < len(pieces) - 1))
        return lines

    def append_jsonl_text(self, name: str, lines: list[str]) -> None:
        """Append ``lines`` (text without newlines) as they are, flushed to disk."""
        if not lines:
            return
        with open(self.file(name), "a", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in lines))
            f.flush()
            os.fsync(f.fileno())

    def rewrite_jsonl(self, name: str, records: list[dict]) -> None:
        """Replace ``name`` with ``records``, one line each."""
        self.rewrite_jsonl_text(name, [jsonl_text(r) for r in records])

    def rewrite_jsonl_text(self, name: str, lines: list[str]) -> None:
        """Replace ``name`` with ``lines`` (text without newlines) as they are."""
        self.write_text(name, "".join(line + "\n" for line in lines))


def jsonl_text(record: dict) -> str:
    """The line (without its newline) that :meth:`RunDir.append_jsonl` writes for ``record``."""
    return json.dumps(record, sort_keys=True)


def jsonl_digest(lines: list[str]) -> "hashlib._Hash":
    """A running SHA-256 of ``lines`` as they stand in the file (each with its newline); ``update`` it
    with further lines the same way."""
    digest = hashlib.sha256()
    for line in lines:
        digest.update((line + "\n").encode("utf-8"))
    return digest


def script_settings(args, task_flags: dict, run_flags: dict, resumable: set | frozenset,
                    default_out: str) -> tuple[dict, Path, bool]:
    """A script's settings from its parsed flags: ``({"task": ..., "run": ...}, run directory, resuming)``.

    ``task_flags`` / ``run_flags``: flag -> (setting name, type, default, ...); a flag the user left
    out is absent from ``args`` (``argparse.SUPPRESS``). ``--resume DIR`` reads the settings from
    ``DIR/config.json``; a flag given then must equal the stored value unless its setting is in
    ``resumable``. A new run refuses an ``--out`` that already holds one. Errors are one line.
    """
    def attr(flag: str) -> str:
        return flag[2:].replace("-", "_")

    given = {spec[0]: getattr(args, attr(flag))
             for flag, spec in {**task_flags, **run_flags}.items() if hasattr(args, attr(flag))}
    task_names = {spec[0] for spec in task_flags.values()}
    resume = getattr(args, "resume", None)
    if resume is not None:
        if hasattr(args, "out") and Path(args.out) != Path(resume):
            raise GpLossError("give the run directory once: --resume DIR (without --out)")
        out = Path(resume)
        path = out / "config.json"
        if not path.is_file():
            raise GpLossError(f"{out} holds no run to resume (no config.json)")
        try:
            stored = json.loads(path.read_text())
            settings = {"task": dict(stored["task"]), "run": dict(stored["run"])}
        except (ValueError, KeyError, TypeError) as err:
            raise GpLossError(f"{path}: unreadable ({type(err).__name__}: {err})") from None
        # A setting added after the run was made: the run used what is now its default.
        for part, flags in (("task", task_flags), ("run", run_flags)):
            for spec in flags.values():
                settings[part].setdefault(spec[0], spec[2])
        for name, value in given.items():
            part = "task" if name in task_names else "run"
            if name in resumable:
                settings[part][name] = value
            elif settings[part].get(name) != value:
                raise GpLossError(f"--resume: {name} = {value!r} differs from the run's {settings[part].get(name)!r}; "
                                  f"only {', '.join(sorted(resumable))} may change")
        return settings, out, True
    out = Path(getattr(args, "out", default_out))
    if (out / "config.json").exists() or (out / "checkpoint.json").exists():
        raise GpLossError(f"{out} already holds a run: continue it with --resume {out}, or choose another --out")
    task = {spec[0]: given.get(spec[0], spec[2]) for spec in task_flags.values()}
    run = {spec[0]: given.get(spec[0], spec[2]) for spec in run_flags.values()}
    return {"task": task, "run": run}, out, False
