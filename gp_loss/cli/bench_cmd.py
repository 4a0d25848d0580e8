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
    f.add_argument("--random-trees", type=int, default=1000,
                   help="random depth-3 trees for the random-init selectivity figure (default 1000)")
    f.add_argument("--json", action="store_true", help="print the figures as JSON")
    f.set_defaults(run=run_filters)


def run_filters(args: argparse.Namespace) -> int:
    from gp_loss.bench.filters import bench_filters

    if args.seconds <= 0:
        raise GpLossError(f"--seconds must be positive, got {args.seconds:g}")
    if args.random_trees < 0:
        raise GpLossError(f"--random-trees must be 0 or more, got {args.random_trees}")
    result = bench_filters(kind_named(args.kind), args.seconds, seed=args.seed, random_trees=args.random_trees)
    if args.json:
        print(json.dumps({k: ({kk: vv for kk, vv in v.items() if kk != "funnel_table"} if isinstance(v, dict) else v)
                          for k, v in result.items()}, indent=2))
        return 0
    for label, part in (("search mix (random init + mutations)", result["search"]),
                        ("random depth-3 trees", result["random_init"])):
        print(f"kind {result['kind']}, {label}: {part['candidates']} candidates in {part['seconds']:.1f} s = "
              f"{part['candidates_per_minute']:.0f} candidates/min through stages 1-4; "
              f"{100 * part['rejected_fraction']:.2f}% rejected, {part['reused']} reused by gradient "
              f"equivalence, {part['to_proxy_training']} to proxy training "
              f"({100 * part['filtered_fraction']:.2f}% filtered out)")
        print("per stage (candidates/min while in that stage): " + ", ".join(
            f"{n} {v:.0f}" for n, v in part["stage_candidates_per_minute"].items()))
        print(part["funnel_table"])
    return 0
