"""``gp-loss evaluate``: train a task under given losses and report the metric over seeds."""
from __future__ import annotations

import argparse
import json
import statistics

from gp_loss.errors import GpLossError
from gp_loss.language.genome import Genome
from gp_loss.tasks import TASK_NAMES, make_task


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="train a task with a loss and report its test metric",
                       description="Train the task's model with each --loss (a formula or a baseline name) "
                                   "for the full schedule, once per seed, and report the test metric "
                                   "(mean ± std). The same protocol scores a search's best losses.")
    p.add_argument("--task", choices=TASK_NAMES, default="classification")
    p.add_argument("--loss", action="append", required=True, metavar="KIND=FORMULA|BASELINE",
                   help="e.g. cls='neg(dot(y, log(softmax(x))))' or a baseline name (ce, focal, "
                        "label_smoothing_ce); repeat to compare")
    p.add_argument("--seeds", type=int, default=3, help="training seeds (default 3)")
    p.add_argument("--data", default=None, help="'digits' or an ImageFolder directory")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: the task's final_epochs)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import torch

    if args.seeds < 1:
        raise GpLossError(f"--seeds must be at least 1, got {args.seeds}")
    options = {}
    if args.data is not None:
        options["data"] = args.data
    if args.epochs is not None:
        options["final_epochs"] = args.epochs
    task = make_task(args.task, options)
    losses = []
    for spec in args.loss:
        if "=" not in spec:
            if spec not in task.baselines:
                raise GpLossError(f"--loss {spec!r} is neither KIND=FORMULA nor a baseline "
                                  f"({', '.join(task.baselines)})")
            genome = Genome.from_formulas((n, task.branches[n], f) for n, f in task.baselines[spec].items())
            losses.append((spec, genome))
        else:
            losses.append((spec, Genome.from_specs([spec])))
    torch.set_num_threads(1)
    rows = []
    for name, genome in losses:
        outcomes = [task.final_score(genome, seed) for seed in range(args.seeds)]
        scores = [o.score for o in outcomes]
        rows.append({"loss": name, "formulas": genome.formulas(), "scores": scores,
                     "mean": statistics.fmean(scores), "std": statistics.pstdev(scores),
                     "status": [o.status for o in outcomes]})
    if args.json:
        print(json.dumps({"task": task.name, "metric": f"test {task.metric}", "rows": rows}, indent=2))
        return 0
    print(f"{task.name}: test {task.metric} over {args.seeds} seed(s)")
    for r in rows:
        bad = [s for s in r["status"] if s != "ok"]
        print(f"  {100 * r['mean']:6.2f} ± {100 * r['std']:.2f}  {r['loss']}" + (f"  ({', '.join(bad)})" if bad else ""))
    return 0
