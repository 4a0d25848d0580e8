"""``gp-loss export``: write a genome as a standalone PyTorch module (and LaTeX)."""
from __future__ import annotations

import argparse
from pathlib import Path

from gp_loss.errors import GpLossError
from gp_loss.export import export_torch, to_latex
from gp_loss.io import write_text_atomic
from gp_loss.language.genome import Genome


def register(sub) -> None:
    p = sub.add_parser(
        "export", help="export loss formulas as a Python module",
        description="Export KIND=FORMULA (or NAME:KIND=FORMULA) branches as a module that imports "
                    "only torch and math: one function per branch, an nn.Module per branch, and "
                    "GenomeLoss summing them.")
    p.add_argument("branches", nargs="+", metavar="KIND=FORMULA",
                   help="e.g. cls='neg(dot(y, log(softmax(x))))' or rcnn_reg:reg='sub(1, div(i, u))'")
    p.add_argument("--out", required=True, type=Path, help="the .py file to write")
    p.add_argument("--latex", action="store_true", help="also print each branch as LaTeX")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    genome = Genome.from_specs(args.branches)
    if args.out.suffix != ".py":
        raise GpLossError(f"--out {args.out}: the module file must end in .py")
    write_text_atomic(args.out, export_torch(genome))
    print(f"wrote {args.out} ({', '.join(b.name for b in genome)})")
    if args.latex:
        for b in genome:
            print(f"{b.name}: {to_latex(b.kind, b.tree)}")
    return 0
