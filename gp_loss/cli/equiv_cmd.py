"""``gp-loss equiv``: are two formulas gradient-equivalent (AutoLoss-Zero)?"""
from __future__ import annotations

import argparse
import json
import math

from gp_loss.errors import GpLossError
from gp_loss.language.genome import Genome


def register(sub) -> None:
    p = sub.add_parser(
        "equiv", help="test two formulas for gradient equivalence",
        description="Two losses are equivalent when their gradients with respect to the prediction "
                    "agree on all B samples: in norm to 2 significant digits (AutoLoss-Zero's test) and "
                    "in direction (the signs of their projections on 4 fixed random directions per "
                    "sample), so a negated or redirected loss is not equivalent. The output says which "
                    "samples' norms or directions differ. Exit 0: equivalent; "
                    "1: not; 2: invalid input.")
    p.add_argument("first", metavar="KIND=FORMULA")
    p.add_argument("second", metavar="KIND=FORMULA")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from gp_loss.filters.equivalence import equivalent, signature_difference, split_signature

    a, b = Genome.from_specs([args.first]), Genome.from_specs([f"second:{args.second}" if ":" not in
                                                                args.second.partition("=")[0] else args.second])
    (ba,), (bb,) = list(a), list(b)
    if ba.kind is not bb.kind:
        raise GpLossError(f"both formulas must be of one kind, got {ba.kind.name} and {bb.kind.name}")
    try:
        same, sig_a, sig_b = equivalent(ba.kind, ba.tree, bb.tree)
    except ValueError as err:  # e.g. a loss that does not read the prediction has no gradient to compare
        raise GpLossError(f"cannot compare: {err}") from None
    for branch, sig in ((ba, sig_a), (bb, sig_b)):
        norms, _ = split_signature(sig)
        if not all(math.isfinite(float(n)) for n in norms):  # (norms are kept as rounded text)
            raise GpLossError(f"cannot compare: the gradient of {branch.formula} is not finite on the probe "
                              f"samples (norms {list(norms)}); `gp-loss check` says why")
    differ = signature_difference(sig_a, sig_b)
    if args.json:
        print(json.dumps({"equivalent": same, "signatures": [list(sig_a), list(sig_b)],
                          "differ": differ, "formulas": [ba.formula, bb.formula]}, indent=2))
    else:
        for formula, sig in ((ba.formula, sig_a), (bb.formula, sig_b)):
            norms, directions = split_signature(sig)
            print(f"{formula}\n  signature: gradient norms      {list(norms)}\n"
                  f"             gradient directions {' '.join(_signs(d) for d in directions)}")
        print("equivalent" if same else f"not equivalent: {_explain(differ)}")
    return 0 if same else 1


def _signs(direction: tuple) -> str:
    """One sample's direction signs as text, e.g. ``+-++`` (``0``: zero gradient, ``?``: NaN)."""
    return "".join({1.0: "+", -1.0: "-", 0.0: "0"}.get(v, "?") for v in direction)


def _explain(differ: dict[str, list[int]]) -> str:
    """What differs, in words (samples numbered from 1; ``--json``'s ``differ`` lists them from 0)."""
    def samples(ids: list[int]) -> str:
        return f"sample{'s' if len(ids) > 1 else ''} {', '.join(str(i + 1) for i in ids)}"

    parts = [f"gradient {what} differ on {samples(ids)}" for what, ids in differ.items() if ids]
    if not differ["norms"]:
        parts.append("same norms: the gradients point in different directions (e.g. opposite)")
    elif not differ["directions"]:
        parts.append("same directions: the gradients differ in length (e.g. a rescaled loss)")
    return "; ".join(parts)
