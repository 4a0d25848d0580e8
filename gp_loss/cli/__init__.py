"""The ``gp-loss`` command line: one module per command, wired up here."""
from __future__ import annotations

import argparse
import sys

from gp_loss import __version__
from gp_loss.cli import (bench_cmd, check_cmd, data_cmd, equiv_cmd, evaluate_cmd, export_cmd, primitives_cmd,
                         report_cmd)
from gp_loss.errors import GpLossError

COMMANDS = (primitives_cmd, check_cmd, equiv_cmd, export_cmd, evaluate_cmd, report_cmd, bench_cmd, data_cmd)

EXIT_USAGE = 2


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


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 rejected, 2 user error)."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except GpLossError as err:
        print(f"gp-loss: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("gp-loss: interrupted", file=sys.stderr)
        return 130


def entry() -> None:
    sys.exit(main())
