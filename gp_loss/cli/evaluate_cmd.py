"""``gp-loss evaluate``: train a task under given losses with the search's final protocol."""
from __future__ import annotations

import argparse
import json
import statistics

from gp_loss.errors import GpLossError
from gp_loss.language.genome import Genome
from gp_loss.tasks import TASKS


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="train a task with a loss and report its test metric",
                       description="Train the task's model with each --loss (a formula or a baseline name) "
                                   "for the full schedule, once per seed, and report the test metric "
                                   "(mean ± std). The seeds are those of a search's final retraining "
                                   "(--seed S: S+1000, S+1001, ...), so `--seed` of a run reproduces its "
                                   "final.json rows.")
    p.add_argument("--task", default="classification",
                   help="the task: " + "; ".join(f"{name}: {info.summary}" for name, info in TASKS.items()))
    p.add_argument("--loss", action="append", required=True, metavar="KIND=FORMULA|BASELINE",
                   help="e.g. cls='neg(dot(y, log(softmax(x))))' or a baseline name (ce, focal, "
                        "label_smoothing_ce); repeat to compare")
    p.add_argument("--seeds", type=int, default=3, help="training seeds (default 3)")
    p.add_argument("--seed", type=int, default=0, help="the search seed whose final protocol to follow (default 0)")
    p.add_argument("--data", default=None, help="'digits' or an ImageFolder directory")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: the task's final_epochs)")
    p.add_argument("--optimizer", default=None,
                   help="adam (the task's default) or sgd (plain): check a found loss where the gradient's "
                        "scale sets the step")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the task's)")
    p.add_argument("--precision", default=None, help="fp32 (default) or bf16 (forward pass and loss under autocast)")
    p.add_argument("--device", default="auto", help="auto (default: CUDA when present), cpu, cuda or cuda:N")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from gp_loss.evolution.config import retrain_seeds
    from gp_loss.runtime.device import check_device, resolve_device
    from gp_loss.runtime.threads import torch_threads
    from gp_loss.tasks import make_task, task_info

    info = task_info(args.task)
    if args.seeds < 1:
        raise GpLossError(f"--seeds must be at least 1, got {args.seeds}")
    if args.seed < 0:
        raise GpLossError(f"--seed must be 0 or more, got {args.seed}")
    check_device(args.device)
    options = {}
    if args.data is not None:
        options["data"] = args.data
    if args.epochs is not None:
        options["final_epochs"] = args.epochs
    for name in ("optimizer", "lr", "precision"):
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    losses = []
    for spec in args.loss:
        if "=" not in spec:
            if spec not in info.baselines:
                raise GpLossError(f"--loss {spec!r} is neither KIND=FORMULA nor a baseline "
                                  f"({', '.join(info.baselines)})")
            genome = Genome.from_formulas((n, info.branches[n], f) for n, f in info.baselines[spec].items())
            losses.append((spec, genome))
        else:
            losses.append((spec, Genome.from_specs([spec])))
    task = make_task(args.task, options, resolve_device(args.device))
    seeds = retrain_seeds(args.seed, args.seeds)
    rows = []
    with torch_threads(1):
        for name, genome in losses:
            outcomes = [task.final_score(genome, seed) for seed in seeds]
            scores = [o.score for o in outcomes]
            rows.append({"loss": name, "formulas": genome.formulas(), "seeds": seeds, "scores": scores,
                         "mean": statistics.fmean(scores), "std": statistics.pstdev(scores),
                         "status": [o.status for o in outcomes], "reasons": [o.reason for o in outcomes]})
    if args.json:
        print(json.dumps({"task": info.name, "metric": f"test {info.metric}", "device": str(task.device),
                          "rows": rows}, indent=2))
        return 0
    print(f"{info.name}: test {info.metric} over seeds {', '.join(map(str, seeds))} on {task.device}")
    for r in rows:
        bad = [f"{s}: {why}" if why else s for s, why in zip(r["status"], r["reasons"]) if s != "ok"]
        print(f"  {100 * r['mean']:6.2f} ± {100 * r['std']:.2f}  {r['loss']}" + (f"  ({'; '.join(bad)})" if bad else ""))
    return 0
