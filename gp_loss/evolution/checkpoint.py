"""Checkpoints: JSON state with a checksum, written atomically, with one previous copy kept.

``checkpoint.json`` holds ``{"sha256": …, "state": …}``. Before a new one is
written the current one becomes ``checkpoint.prev.json``, so a crash at any
moment leaves at least one good checkpoint; a corrupt or truncated file is
detected by its checksum and the previous one is used, with a warning.
JSON rather than pickle: resuming never executes anything from the file.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from gp_loss.errors import GpLossError
from gp_loss.io import write_text_atomic

CHECKPOINT = "checkpoint.json"
PREVIOUS = "checkpoint.prev.json"


def _digest(state_text: str) -> str:
    return hashlib.sha256(state_text.encode("utf-8")).hexdigest()


def save_checkpoint(run_dir: Path, state: dict) -> None:
    """Write ``state`` as the run's checkpoint, keeping the last one as the previous."""
    text = json.dumps(state, sort_keys=True, allow_nan=False)
    current = run_dir / CHECKPOINT
    if current.exists() and _readable(current):  # never rotate a corrupt file over a good previous one
        os.replace(current, run_dir / PREVIOUS)
    write_text_atomic(current, json.dumps({"sha256": _digest(text), "state": json.loads(text)}, sort_keys=True))


def _read(path: Path) -> dict:
    data = json.loads(path.read_text(encoding="utf-8"))
    state = data["state"]
    if _digest(json.dumps(state, sort_keys=True, allow_nan=False)) != data["sha256"]:
        raise ValueError("checksum mismatch")
    return state


def _readable(path: Path) -> bool:
    try:
        _read(path)
        return True
    except (OSError, ValueError, KeyError, TypeError):
        return False


def load_checkpoint(run_dir: Path) -> tuple[dict | None, list[str]]:
    """The newest good checkpoint state (``None`` if the run has none) and warnings."""
    warnings = []
    found = False
    for name in (CHECKPOINT, PREVIOUS):
        path = run_dir / name
        if not path.exists():
            continue
        found = True
        try:
            return _read(path), warnings
        except (OSError, ValueError, KeyError, TypeError) as err:
            warnings.append(f"{path} is corrupt or truncated ({type(err).__name__}: {err}); "
                            f"{'trying the previous checkpoint' if name == CHECKPOINT else 'no older one'}")
    if found:
        raise GpLossError(f"no readable checkpoint in {run_dir}: " + "; ".join(warnings)
                          + ". Start a new run with another --out")
    return None, warnings
