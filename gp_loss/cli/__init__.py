"""The ``gp-loss`` command line: one module per command, wired up here.

Exit status: 0 ok, 1 rejected (``check``, ``equiv``), 2 a user error (one line, no
traceback), 130 interrupted, and :data:`EXIT_BROKEN_PIPE` (141) when whoever reads the
output stops reading it (``gp-loss report RUN | head -1``): the rest of the output is
dropped quietly, and the status is the one a shell gives a command killed by SIGPIPE,
so that a pipeline under ``set -o pipefail`` still learns the output was cut short.
"""
from __future__ import annotations

import argparse
import os
import select
import sys

from gp_loss import __version__
from gp_loss.cli import (bench_cmd, check_cmd, data_cmd, equiv_cmd, evaluate_cmd, export_cmd, primitives_cmd,
                         report_cmd)
from gp_loss.errors import GpLossError

COMMANDS = (primitives_cmd, check_cmd, equiv_cmd, export_cmd, evaluate_cmd, report_cmd, bench_cmd, data_cmd)

EXIT_USAGE = 2
EXIT_BROKEN_PIPE = 128 + 13  # 128 + SIGPIPE


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own usage errors: exit 2, no traceback
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"gp-loss: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="gp-loss",
        description="Discover loss functions by evolutionary search over typed DEAP primitive trees.",
    )
    parser.add_argument("--version", action="version", version=f"gp-loss {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for module in COMMANDS:
        module.register(sub)
    return parser


def _stdout_closed() -> bool:
    """Whether nobody reads standard output any more (the reader of its pipe has exited).

    A broken pipe elsewhere (a worker's) is not the reader going away: that one is raised.
    """
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, ValueError, OSError):  # replaced (a test's capture) or closed
        return False
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))


def _drop_stdout() -> None:
    """Point standard output at the null device, so that nothing more, not even the flush at exit, is
    written to the closed pipe (the Python documentation's recipe for SIGPIPE)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 rejected, 2 user error, 130 interrupted, 141 output
    no longer read)."""
    try:
        return _main(argv)
    except BrokenPipeError:
        if not _stdout_closed():
            raise
        _drop_stdout()
        return EXIT_BROKEN_PIPE


def _main(argv: list[str] | None) -> int:
    from gp_loss.runtime.terminal import safe_text

    try:
        args = build_parser().parse_args(argv)
    finally:  # (--help, --version: their text meets a closed pipe here, not at exit)
        sys.stdout.flush()
    try:
        status = args.run(args)
        sys.stdout.flush()  # here, not at exit: a reader gone by now is a broken pipe that main catches
        return status
    except GpLossError as err:  # (its text may quote a file: shown with its control characters escaped)
        print(f"gp-loss: error: {safe_text(err)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("gp-loss: interrupted", file=sys.stderr)
        return 130


def entry() -> None:
    sys.exit(main())
