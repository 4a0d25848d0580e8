"""Helpers shared by the tests: ``from tests.helpers import ROOT, assert_user_error``.

A plain module rather than fixtures: ``ROOT`` is needed at import time (module-level paths), and
with ``--import-mode=importlib`` ``conftest`` cannot be imported by name. ``tests/conftest.py`` puts
the repository root on ``sys.path``, which makes ``tests`` importable as a namespace package.
"""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the repository root

# A runs/ script writes "error: ...", the gp-loss command "gp-loss: error: ...".
_ERROR_LINE = re.compile(r"(gp-loss: )?error: ")


def assert_user_error(code: int, err: str, one_line: bool = True) -> str:
    """Check that a command refused a user's mistake: exit status 2, stderr opening with ``error: ...``
    or ``gp-loss: error: ...``, no traceback, and one line only. Returns stderr, stripped.

    ``code`` and ``err`` are the command's exit status and standard error: ``main(argv)`` and
    ``capsys.readouterr().err``, or a subprocess's ``returncode`` and ``stderr``. ``one_line=False``
    is for the messages that list several items, one per line after the first (e.g. the settings
    that differ from a run's).
    """
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert lines and _ERROR_LINE.match(lines[0]), err
    assert len(lines) == 1 or not one_line, err
    return err.strip()
