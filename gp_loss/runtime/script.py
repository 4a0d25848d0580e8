"""The skeleton every ``runs/`` script shares: its exit statuses, under any map.

A script is a docstring and ``run_script(main)``. Its ``main`` puts its body inside
:func:`script_status`, which holds the exit-status rules in one place:

* a user error (:class:`~gp_loss.errors.GpLossError`) is one ``error: ...`` line and status 2;
* an interruption (Ctrl-C) is ``interrupted: continue with --resume OUT`` and status 130;
* a worker process that died (:class:`~gp_loss.runtime.parallel.WorkerDied`) is one
  ``error: ...`` line ending in the same resume hint, and status 1;
* argparse's own exit (a usage error or ``--help``) keeps its status.

:func:`run_script` then exits with that status, also under SCOOP, where a crash is
a traceback and status 1, and any failure makes ``python -m scoop`` exit non-zero.
:func:`script_parser` is the command line of a script whose settings are a table of
flags (``runs/hps_det.py``, ``runs/search_pap.py``; see
:func:`gp_loss.runtime.run_dir.script_settings`).
"""
from __future__ import annotations

import argparse
import os
import sys
import traceback
from dataclasses import dataclass
from typing import Callable

from gp_loss.errors import GpLossError
from gp_loss.runtime.parallel import WorkerDied, fail_scoop_launch
from gp_loss.runtime.terminal import safe_line, safe_text


@dataclass
class Resumable:
    """Where a script's run continues from: ``out`` is set by the body once it knows its run directory,
    so that an interruption or a lost worker can name it (``None``: no hint)."""

    out: str | os.PathLike | None = None

    def hint(self) -> str:
        """``continue with --resume OUT``, or ``""`` while no run directory is known."""
        return f"continue with --resume {self.out}" if self.out is not None else ""


def script_status(body: Callable[[Resumable], int]) -> int:
    """Run a script's ``body`` and return its exit status, each expected failure printed as one line.

    ``body`` receives a :class:`Resumable` to fill in once it knows its run directory. A crash
    (any other exception) propagates: :func:`run_script` prints its traceback.
    """
    place = Resumable()
    try:
        return body(place)
    except SystemExit as stop:  # argparse: a usage error (2) or --help (0), already printed
        if isinstance(stop.code, int) or stop.code is None:
            return stop.code or 0
        print(safe_text(stop.code), file=sys.stderr)
        return 1
    except GpLossError as err:
        print(safe_text(f"error: {err}"), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = place.hint()
        print(safe_line(f"interrupted: {hint}" if hint else "interrupted"), file=sys.stderr)
        return 130
    except WorkerDied as err:
        hint = place.hint()
        print(safe_text(f"error: a worker process died while running a job (killed, or out of memory?): "
                        f"{str(err).rstrip('.')}." + (f" Finished work is kept: {hint}" if hint else "")),
              file=sys.stderr)
        return 1


def script_parser(description: str, default_out: str, flags: dict[str, tuple], *,
                  resume_help: str = "continue the run in DIR (its stored settings)") -> argparse.ArgumentParser:
    """``--out``, ``--resume`` and one option per entry of ``flags`` (flag -> (setting, type, default, help)).

    A flag left out is absent from the parsed arguments (``argparse.SUPPRESS``): the stored or default
    setting applies.
    """
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
                                argument_default=argparse.SUPPRESS)
    p.add_argument("--out", help=f"run directory to create (default {default_out})")
    p.add_argument("--resume", metavar="DIR", help=resume_help)
    for flag, (_, kind, default, text) in flags.items():
        p.add_argument(flag, type=kind, help=f"{text} (default {default})" if default not in (None, "") else text)
    return p


def run_script(main_fn: Callable[[], int]) -> None:
    """Run a ``runs/`` script's ``main`` and exit with its status, under any map.

    A user error is 2 and a crash 1 (its traceback printed). Serially and with
    multiprocessing that is the process's exit status. Under SCOOP the script runs
    inside a future of SCOOP's root process, and SCOOP 0.7.2 loses its status:
    ``SystemExit`` there prints a traceback and exits 1, and the ``scoop.launch``
    process between the root and ``python -m scoop`` exits 0 whatever the root did
    (``launchBootstraps`` ignores the root's return code), while the launcher exits
    with that process's status. So on failure the root stops its sibling workers and
    terminates its ``scoop.launch`` parent: the launcher then exits non-zero (241,
    from SIGTERM). A status of 0 returns normally so that SCOOP finishes as usual.
    """
    try:
        status = main_fn()
    except SystemExit as stop:
        status = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        if not isinstance(stop.code, (int, type(None))):
            print(stop.code, file=sys.stderr)
    except BaseException:  # a crash: show it, and exit non-zero under every map
        traceback.print_exc()
        status = 1
    if not _scoop_origin():
        sys.exit(status)
    if status:
        sys.stdout.flush()
        sys.stderr.flush()
        fail_scoop_launch()
        os._exit(status)


def _scoop_origin() -> bool:
    try:
        import scoop
    except ImportError:  # pragma: no cover - scoop is a dependency
        return False
    return bool(getattr(scoop, "IS_RUNNING", False) and getattr(scoop, "IS_ORIGIN", False))
