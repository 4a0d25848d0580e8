"""``gp-loss equiv``: are two formulas gradient-equivalent (AutoLoss-Zero)?"""
from __future__ import annotations

import argparse
import json

from gp_loss.errors import GpLossError
from gp_loss.language.genome import Genome


def register(sub) -> None:
    p = sub.add_parser(
        "equiv", help="test two formulas for gradient equivalence",
        description="Two losses are equivalent when the norms of their gradients with respect to the "
                    "prediction agree to 2 significant digits on all B samples. Exit 0: equivalent; "
                    "1: not; 2: invalid input.")
    p.add_argument("first", metavar="KIND=FORMULA")
    p.add_argument("second", metavar="KIND=FORMULA")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from gp_loss.filters.equivalence import equivalent

    a, b = Genome.from_specs([args.first]), Genome.from_specs([f"second:{args.second}" if ":" not in
                                                                args.second.partition("=")[0] else args.second])
    (ba,), (bb,) = list(a), list(b)
    if ba.kind is not bb.kind:
        raise GpLossError(f"both formulas must be of one kind, got {ba.kind.name} and {bb.kind.name}")
    same, sig_a, sig_b = equivalent(ba.kind, ba.tree, bb.tree)
    if args.json:
        print(json.dumps({"equivalent": same, "signatures": [list(sig_a), list(sig_b)],
                          "formulas": [ba.formula, bb.formula]}, indent=2))
    else:
        print(f"{ba.formula}\n  signature {list(sig_a)}\n{bb.formula}\n  signature {list(sig_b)}")
        print("equivalent" if same else "not equivalent")
    return 0 if same else 1
