"""``gp-loss check``: parse, compile and test loss formulas, one verdict per stage."""
from __future__ import annotations

import argparse
import json
import math
import time

from gp_loss.errors import GpLossError
from gp_loss.evolution.config import MAX_SEED
from gp_loss.filters import StageResult
from gp_loss.filters.numeric_range import DEFAULT_BOUND
from gp_loss.filters.pipeline import FilterPipeline, default_stages
from gp_loss.language.compile import compile_tree
from gp_loss.language.genome import Genome


def register(sub) -> None:
    p = sub.add_parser(
        "check", help="check loss formulas stage by stage",
        description="Parse and compile each KIND=FORMULA, then run the filter stages (convergence, "
                    "validity, numerical range, rejection protocol, gradient equivalence; simulation with "
                    "--simulate). Exit 0: all pass; 1: a stage rejected a formula; 2: invalid input; "
                    "3: a limit of gp-loss itself (e.g. Python's recursion limit) left a stage unjudged.")
    p.add_argument("branches", nargs="+", metavar="KIND=FORMULA",
                   help="e.g. cls='neg(dot(y, log(softmax(x))))'")
    p.add_argument("--json", action="store_true", help="print the verdicts as JSON")
    p.add_argument("--simulate", action="store_true", help="also run the model-optimisation simulation")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample inputs (default 0)")
    p.add_argument("--range-bound", type=float, default=DEFAULT_BOUND,
                   help="bound on the per-sample loss and gradient (default 1e4; as a search's range_bound)")
    p.set_defaults(run=run)


def check_branch(branch, pipeline: FilterPipeline | None = None) -> list[StageResult]:
    """Stages for one parsed branch; stops at the first rejection."""
    results = [StageResult("parse", True, branch.formula)]
    start = time.perf_counter()
    compile_tree(branch.kind, branch.tree)
    results.append(StageResult("compile", True, f"{len(branch.tree)} nodes, height {branch.tree.height}",
                               seconds=time.perf_counter() - start))
    pipeline = pipeline or FilterPipeline(default_stages())
    results.extend(pipeline.check(branch.kind, branch.tree).results)
    return results


def run(args: argparse.Namespace) -> int:
    if not (math.isfinite(args.range_bound) and args.range_bound > 0):
        raise GpLossError(f"--range-bound must be a positive finite number, got {args.range_bound}")
    if not 0 <= args.seed <= MAX_SEED:
        raise GpLossError(f"--seed must be in [0, {MAX_SEED}], got {args.seed}")
    genome = Genome.from_specs(args.branches)  # parse errors: exit 2
    pipeline = FilterPipeline(default_stages(simulate=args.simulate, seed=args.seed, range_bound=args.range_bound))
    report = {b.name: check_branch(b, pipeline) for b in genome}
    passed = all(r.passed for rs in report.values() for r in rs)
    judged = all(r.judged for rs in report.values() for r in rs)
    if args.json:
        print(json.dumps({"passed": passed, "branches": {
            name: {"kind": genome[name].kind.name, "formula": genome[name].formula,
                   "stages": [r.to_dict() for r in rs]} for name, rs in report.items()}}, indent=2))
    else:
        for name, rs in report.items():
            print(f"{name} ({genome[name].kind.name}): {genome[name].formula}")
            for r in rs:
                nums = " ".join(f"{k}={v:.4g}" for k, v in r.numbers.items())
                verdict = "pass" if r.passed else ("REJECT" if r.judged else "NOT JUDGED")
                print(f"  {r.stage:<10} {verdict:<7}{r.reason}"
                      f"{'  [' + nums + ']' if nums else ''}")
        print("passed" if passed else ("not judged" if not judged else "rejected"))
    return 0 if passed else (1 if judged else 3)
