"""``gp-loss export``: write a genome as a standalone PyTorch module (and LaTeX)."""
from __future__ import annotations

import argparse
from pathlib import Path

from gp_loss.errors import GpLossError
from gp_loss.export import export_torch, to_latex
from gp_loss.language.genome import Genome
from gp_loss.runtime.atomic import write_text_atomic


def register(sub) -> None:
    p = sub.add_parser(
        "export", help="export loss formulas as a Python module",
        description="Export KIND=FORMULA (or NAME:KIND=FORMULA) branches as a module that imports "
                    "only torch and math: one function per branch, an nn.Module per branch, and "
                    "GenomeLoss summing them.")
    p.add_argument("branches", nargs="+", metavar="KIND=FORMULA|RUN_DIR",
                   help="e.g. cls='neg(dot(y, log(softmax(x))))' or rcnn_reg:reg='sub(1, div(i, u))', "
                        "or a run directory to export its hall of fame (branches top1_cls, top2_cls, ...)")
    p.add_argument("--top", type=int, default=None, help="with RUN_DIR: only the best N")
    p.add_argument("--out", type=Path, default=None,
                   help="the .py file to write (required unless --sympy is given)")
    p.add_argument("--latex", action="store_true", help="also print each branch as LaTeX")
    p.add_argument("--sympy", action="store_true",
                   help="also print each branch as a SymPy expression, simplified for reading "
                        "(the guards of log, div and exp left out; the module keeps them)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if len(args.branches) == 1 and "=" not in args.branches[0]:
        from gp_loss.evolution.hall_of_fame import hall_of_fame_genome, load_hall_of_fame
        if args.top is not None and args.top < 1:
            raise GpLossError(f"--top must be at least 1, got {args.top}")
        genome = hall_of_fame_genome(load_hall_of_fame(args.branches[0]), args.top)
    else:
        genome = Genome.from_specs(args.branches)
    if args.out is None:
        if not args.sympy:
            raise GpLossError("--out is required: the .py file to write (or --sympy to print the expressions only)")
        _print_sympy(genome)
        return 0
    if args.out.suffix != ".py":
        raise GpLossError(f"--out {args.out}: the module file must end in .py")
    if args.out.is_dir():
        raise GpLossError(f"--out {args.out} is a directory: give the path of the .py file to write")
    try:
        write_text_atomic(args.out, export_torch(genome))
    except OSError as err:
        raise GpLossError(f"cannot write --out {args.out}: {err.strerror or err}") from None
    print(f"wrote {args.out} ({', '.join(b.name for b in genome)})")
    if args.latex:
        for b in genome:
            print(f"{b.name}: {to_latex(b.kind, b.tree)}")
    if args.sympy:
        _print_sympy(genome)
    return 0


def _print_sympy(genome: Genome) -> None:
    from gp_loss.export.sympy_expr import export_sympy, sympy_text
    for name, b in export_sympy(genome).items():
        print(f"{name} (sympy): {sympy_text(b.simple)}")
