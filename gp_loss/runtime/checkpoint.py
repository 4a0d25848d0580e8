"""Checkpoints: JSON state with a checksum, written atomically, with one previous copy kept.

``checkpoint.json`` holds ``{"sha256": …, "state": …}``. Before a new one is
written the current one becomes ``checkpoint.prev.json``, so a crash at any
moment leaves at least one good checkpoint; a corrupt or truncated file is
detected by its checksum and the previous one is used, with a warning; the corrupt
file is moved to ``checkpoint.corrupt.json`` so it is never rotated over a good one
(except in the read-only mode that reports use, which never moves or writes a file).
JSON rather than pickle: resuming never executes anything from the file.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from gp_loss.errors import GpLossError
from gp_loss.runtime.atomic import write_text_atomic

CHECKPOINT = "checkpoint.json"
PREVIOUS = "checkpoint.prev.json"
CORRUPT = "checkpoint.corrupt.json"


def _digest(state_text: str) -> str:
    return hashlib.sha256(state_text.encode("utf-8")).hexdigest()


def save_checkpoint(run_dir: str | os.PathLike, state: dict) -> None:
    """Write ``state`` (JSON-able, finite) as ``run_dir``'s checkpoint, keeping the last one as the previous."""
    run_dir = Path(run_dir)
    text = json.dumps(state, sort_keys=True, allow_nan=False)
    current = run_dir / CHECKPOINT
    if current.exists():  # always good: load_checkpoint moves a corrupt one aside
        os.replace(current, run_dir / PREVIOUS)
    # The state's text is embedded as is ("sha256" sorts before "state"), not serialised twice.
    write_text_atomic(current, f'{{"sha256": "{_digest(text)}", "state": {text}}}')


def _read(path: Path) -> dict:
    data = json.loads(path.read_text(encoding="utf-8"))
    state = data["state"]
    if _digest(json.dumps(state, sort_keys=True, allow_nan=False)) != data["sha256"]:
        raise ValueError("checksum mismatch")
    return state


def load_checkpoint(run_dir: str | os.PathLike, read_only: bool = False) -> tuple[dict | None, list[str]]:
    """The newest good checkpoint state (``None`` if the run has none) and warnings.

    For resuming (the default) a corrupt ``checkpoint.json`` is moved aside and no
    readable checkpoint at all is an error. ``read_only`` (for reports) never
    touches a file: no readable checkpoint gives ``None`` with the warnings.
    """
    run_dir = Path(run_dir)
    warnings = []
    found = False
    for name in (CHECKPOINT, PREVIOUS):
        path = run_dir / name
        if not path.exists():
            continue
        found = True
        try:
            return _read(path), warnings
        except (OSError, ValueError, KeyError, TypeError, RecursionError) as err:
            warnings.append(f"{path} is corrupt or truncated ({type(err).__name__}: {err}); "
                            f"{'trying the previous checkpoint' if name == CHECKPOINT else 'no older one'}")
            if name == CHECKPOINT and not read_only and (run_dir / PREVIOUS).exists():
                # Set it aside so the next save cannot rotate it over the good previous one.
                os.replace(path, run_dir / CORRUPT)
    if found and not read_only:
        raise GpLossError(f"no readable checkpoint in {run_dir}: " + "; ".join(warnings)
                          + ". Start a new run with another --out")
    return None, warnings


def open_run(load_state, run_dir: Path | None, resume: bool) -> None:
    """Start or continue a checkpointed run in ``run_dir``: load its state when resuming, never overwrite one.

    ``load_state(state dict)`` restores the run (raising ``KeyError``, ``TypeError``, ``ValueError``,
    ``AttributeError`` or ``IndexError`` on a state of the wrong shape: reported as a corrupt
    checkpoint). Without ``resume``, a directory that already holds a checkpoint is refused;
    resuming a directory with none starts from the beginning.
    """
    import sys

    if run_dir is None:
        if resume:
            raise GpLossError("resume=True needs the run_dir of the run to continue")
        return
    if not resume:
        if (run_dir / "checkpoint.json").exists() or (run_dir / "checkpoint.prev.json").exists():
            raise GpLossError(f"{run_dir} already holds a checkpoint: pass resume=True to continue it, "
                              f"or use another run directory")
        return
    state, warnings = load_checkpoint(run_dir)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    if state is None:
        return  # nothing saved yet: start from the beginning
    try:
        load_state(state)
    except GpLossError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
        raise GpLossError(f"corrupt checkpoint in {run_dir}: {type(err).__name__}: {err}") from None
