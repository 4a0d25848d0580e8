"""``gp-loss primitives``: list the operators of each kind."""
from __future__ import annotations

import argparse

from primitives import KINDS

from gp_loss.kinds import kind_spec
from gp_loss.language.genome import kind_named

_TYPE_NAMES = {"Elem": "T", "Sample": "S", "Const": "c", "Tensor": "T"}


def register(sub) -> None:
    p = sub.add_parser("primitives", help="list the operators of a kind with arity, types and definition",
                       description="List the operators of each loss kind (or one with --kind).")
    p.add_argument("--kind", choices=list(KINDS), help="only this kind")
    p.set_defaults(run=run)


def _sig(prim) -> str:
    args = ", ".join(_TYPE_NAMES[t.__name__] for t in prim.args)
    return f"({args})->{_TYPE_NAMES[prim.ret.__name__]}"


def describe_kind(kind) -> str:
    lines = [f"kind {kind.name}: {kind.description}", "  inputs:"]
    lines += [f"    {n}: {d}" for n, d in kind.input_docs.items()]
    lines.append(f"  constants searched: {', '.join(map(str, kind.search_constants))}"
                 " (formulas may use any number)")
    lines.append(f"  reduction: {kind_spec(kind).reduction.doc}")
    lines.append("  types: T element-wise tensor, S per-sample value (N), c constant")
    lines.append(f"  {'operator':<12}{'arity':<7}{'types':<34}definition")
    for name, op in kind.operators.items():
        sigs = " ".join(_sig(p) for p in kind.overloads[name])
        if len(sigs) > 32:
            sigs = sigs[:29] + "..."
        lines.append(f"  {name:<12}{op.arity:<7}{sigs:<34}{op.definition}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    kinds = [kind_named(args.kind)] if args.kind else list(KINDS.values())
    print("\n\n".join(describe_kind(k) for k in kinds))
    return 0
