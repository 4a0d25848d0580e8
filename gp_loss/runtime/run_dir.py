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
        if self.path.exists() and not self.path.is_dir():
            raise GpLossError(f"output directory {self.path} is a file, not a directory: choose another --out")
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
        except (OSError, UnicodeDecodeError, ValueError) as err:  # ValueError: bad JSON, or a too long integer
            raise GpLossError(f"{path} is not readable JSON ({' '.join(str(err).split())[:200]})") from None
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


# -- what a directory holds ---------------------------------------------------------------
# The kinds of run a directory may hold, each with what writes it.
RUN_KINDS = {
    "search": "an evolutionary loss search (runs/search_<task>.py)",
    "hps-det": "an HPS-Det search (runs/hps_det.py)",
    "pap": "a PAP-Loss search (runs/search_pap.py)",
}
# Files that only one kind writes (history.json, final.json and the checkpoint are common to several).
KIND_FILES = {
    "search": ("evaluations.jsonl", "logbook.csv", "hall_of_fame.json", "hall_of_fame.py", "baselines.json",
               "fitness.png"),
    "hps-det": ("best.json", "history.csv", "ap_over_iterations.png"),
    "pap": ("results.json", "theta.json", "pap_loss.py", "substitutions.png"),
}
# Every file whose presence means a run saved something there (config.json alone does not).
RESULT_FILES = tuple(name for names in KIND_FILES.values() for name in names) + (
    "history.json", "final.json", "machine.json", "evaluations.set_aside.jsonl",
    "checkpoint.json", "checkpoint.prev.json", "checkpoint.corrupt.json")


def _stored_config(path: Path) -> Any:
    """``path/config.json``'s content, or ``None`` where there is none or it is not JSON."""
    try:
        return json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None


def run_kind(path: str | os.PathLike) -> str | None:
    """The kind of run in the directory ``path`` (a key of :data:`RUN_KINDS`), or ``None`` if it holds none.

    Told by the shape of its ``config.json`` (an evolutionary search stores a task name and a scheme; the
    HPS-Det and PAP-Loss scripts store ``task`` and ``run`` settings, the former with ``bins``, the latter
    with ``rounds``), or without a readable one by the files that only one kind writes.
    """
    path = Path(path)
    config = _stored_config(path)
    if isinstance(config, dict):
        run = config.get("run")
        if isinstance(config.get("task"), str) and "scheme" in config:
            return "search"
        if isinstance(run, dict) and "bins" in run:
            return "hps-det"
        if isinstance(run, dict) and "rounds" in run:
            return "pap"
    for kind, names in KIND_FILES.items():
        if any((path / name).exists() for name in names):
            return kind
    return None


def describe_run(path: str | os.PathLike) -> str:
    """What ``path`` holds, in words: "a segmentation search (runs/search_segmentation.py)", "no run"."""
    kind = run_kind(path)
    if kind is None:
        return "no run"
    config = _stored_config(Path(path))
    task = config.get("task") if kind == "search" and isinstance(config, dict) else None
    if isinstance(task, str) and task.isidentifier():
        return f"a {task} search (runs/search_{task}.py)"
    return RUN_KINDS[kind]


def check_kind(path: str | os.PathLike, kind: str) -> None:
    """Refuse to resume ``path`` with a script of ``kind`` when it holds a run of another kind (one line)."""
    found = run_kind(path)
    if found is not None and found != kind:
        raise GpLossError(f"{path} holds {describe_run(path)}, not {RUN_KINDS[kind]}: this script cannot "
                          f"resume it; continue it with its own script, or give this one another directory")


def claim_new_run(run: RunDir, kind: str, unstarted: frozenset[str] = frozenset()) -> bool:
    """A new run of ``kind`` may be made in ``run``, or a one-line error; the caller holds its lock.

    A run that stopped before it saved anything holds nothing of value, and the new run takes its
    place: its ``config.json`` alone, empty files, or only ``unstarted`` files (those a run of ``kind``
    writes before its first result, e.g. a search's first checkpoint), which are then removed.
    Files of no run are left alone. Returns whether such a run was replaced (the caller says so).
    """
    saved = [name for name in RESULT_FILES if run.exists(name) and run.file(name).stat().st_size]
    if not saved:
        return run.exists("config.json")
    if set(saved) <= unstarted and run_kind(run.path) in (None, kind):
        for name in saved:
            run.file(name).unlink()
        return True
    if run.exists("config.json") and run_kind(run.path) == kind:
        raise GpLossError(f"{run.path} already holds a run: continue it with --resume {run.path}, "
                          f"or choose another --out")
    if run_kind(run.path) not in (None, kind):
        raise GpLossError(f"{run.path} holds {describe_run(run.path)}: choose another --out")
    raise GpLossError(f"{run.path} holds files of an earlier run ({', '.join(saved)}) but no config.json to "
                      f"check them against: choose another --out, or move them away")


@contextlib.contextmanager
def script_run(out: str | os.PathLike, resume: bool, kind: str) -> Iterator[RunDir]:
    """The run directory of a script's run of ``kind``, created, writable and locked while the block runs.

    A new run must be allowed there (:func:`claim_new_run`); checked under the lock, so that two
    processes started on one directory cannot both begin. Call it only after every setting is checked:
    a refused setting leaves nothing behind.
    """
    run = RunDir(out)
    run.prepare()
    with run.lock():
        if resume:
            check_kind(run.path, kind)
        else:
            claim_new_run(run, kind)
        yield run


def _check_stored(path: Path, spec: tuple, value: Any) -> None:
    """A stored setting must have its flag's type (``None`` where the flag's default is ``None``)."""
    name, kind, default = spec[:3]
    if value is None and default is None:
        return
    fits = (isinstance(value, (int, float)) and not isinstance(value, bool)) if kind is float else \
        (type(value) is kind)
    if not fits:
        what = {float: "a number", int: "an integer", str: "text"}.get(kind, kind.__name__)
        raise GpLossError(f"{path}: {name} = {str(value)[:80]!r} is not {what}: the file was edited or damaged, "
                          f"and the run cannot be resumed")


def script_settings(args, task_flags: dict, run_flags: dict, resumable: set | frozenset,
                    default_out: str, kind: str) -> tuple[dict, Path, bool]:
    """A script's settings from its parsed flags: ``({"task": ..., "run": ...}, run directory, resuming)``.

    ``task_flags`` / ``run_flags``: flag -> (setting name, type, default, ...); a flag the user left
    out is absent from ``args`` (``argparse.SUPPRESS``). ``--resume DIR`` reads the settings from
    ``DIR/config.json``, which must hold a run of ``kind`` (:data:`RUN_KINDS`); a flag given then must
    equal the stored value unless its setting is in ``resumable``. Creates nothing: whether a new run
    may use its ``--out`` is :func:`script_run`'s to check. Errors are one line.
    """
    def attr(flag: str) -> str:
        return flag[2:].replace("-", "_")

    given = {spec[0]: getattr(args, attr(flag))
             for flag, spec in {**task_flags, **run_flags}.items() if hasattr(args, attr(flag))}
    task_names = {spec[0] for spec in task_flags.values()}
    for flag in ("out", "resume"):
        if hasattr(args, flag) and not str(getattr(args, flag)).strip():
            raise GpLossError(f"--{flag} is empty: give a run directory, e.g. --{flag} {default_out}")
    resume = getattr(args, "resume", None)
    if resume is not None:
        if hasattr(args, "out") and Path(args.out) != Path(resume):
            raise GpLossError("give the run directory once: --resume DIR (without --out)")
        out = Path(resume)
        check_kind(out, kind)
        path = out / "config.json"
        if not path.is_file():
            raise GpLossError(f"{out} holds no run to resume (no config.json)")
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
            settings = {"task": dict(stored["task"]), "run": dict(stored["run"])}
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, RecursionError) as err:
            detail = "nested too deeply" if isinstance(err, RecursionError) else f"{type(err).__name__}: {err}"
            raise GpLossError(f"{path}: unreadable ({' '.join(detail.split())[:200]}): it is damaged, and "
                              f"the run cannot be resumed") from None
        # A setting added after the run was made: the run used what is now its default.
        for part, flags in (("task", task_flags), ("run", run_flags)):
            for spec in flags.values():
                settings[part].setdefault(spec[0], spec[2])
                _check_stored(path, spec, settings[part][spec[0]])
        for name, value in given.items():
            part = "task" if name in task_names else "run"
            if name in resumable:
                settings[part][name] = value
            elif settings[part].get(name) != value:
                raise GpLossError(f"--resume: {name} = {value!r} differs from the run's {settings[part].get(name)!r}; "
                                  f"only {', '.join(sorted(resumable))} may change")
        return settings, out, True
    out = Path(getattr(args, "out", default_out))
    task = {spec[0]: given.get(spec[0], spec[2]) for spec in task_flags.values()}
    run = {spec[0]: given.get(spec[0], spec[2]) for spec in run_flags.values()}
    return {"task": task, "run": run}, out, False
