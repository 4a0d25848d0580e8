"""``gp-loss bench``: benchmarks that print figures."""
from __future__ import annotations

import argparse
import json

from primitives import KINDS

from gp_loss.errors import GpLossError
from gp_loss.language.genome import kind_named


def register(sub) -> None:
    p = sub.add_parser("bench", help="run a benchmark and print its figures",
                       description="Benchmarks print figures; compare ratios measured in the same run.")
    targets = p.add_subparsers(dest="target", required=True, parser_class=type(p))
    f = targets.add_parser("filters", help="candidates per minute through filter stages 1-4, and the funnel",
                           description="Generate candidates as the search does (random depth-3 trees and "
                                       "mutations) and push them through stages 1-4.")
    f.add_argument("--kind", choices=list(KINDS), default="cls")
    f.add_argument("--seconds", type=float, default=30.0, help="wall time to run (default 30)")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--json", action="store_true", help="print the figures as JSON")
    f.set_defaults(run=run_filters)


def run_filters(args: argparse.Namespace) -> int:
    from gp_loss.bench.filters import bench_filters

    if args.seconds <= 0:
        raise GpLossError(f"--seconds must be positive, got {args.seconds:g}")
    result = bench_filters(kind_named(args.kind), args.seconds, seed=args.seed)
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "funnel_table"}, indent=2))
        return 0
    print(f"kind {result['kind']}: {result['candidates']} candidates in {result['seconds']:.1f} s = "
          f"{result['candidates_per_minute']:.0f} candidates/min through stages 1-4; "
          f"{100 * result['rejected_fraction']:.2f}% rejected")
    print("per stage (candidates/min while in that stage): " + ", ".join(
        f"{n} {v:.0f}" for n, v in result["stage_candidates_per_minute"].items()))
    print(result["funnel_table"])
    return 0
