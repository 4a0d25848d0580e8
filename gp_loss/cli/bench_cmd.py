"""``gp-loss bench``: benchmarks that print figures."""
from __future__ import annotations

import argparse
import json
import math

from primitives import KINDS

from gp_loss.errors import GpLossError
from gp_loss.language.genome import kind_named
from gp_loss.runtime.parallel import parallel_backends


def register(sub) -> None:
    p = sub.add_parser("bench", help="run a benchmark and print its figures",
                       description="Benchmarks print figures; compare ratios measured in the same run.")
    targets = p.add_subparsers(dest="target", required=True, parser_class=type(p))
    f = targets.add_parser("filters", help="candidates per minute through filter stages 1-4, and the funnel",
                           description="Generate candidates as the search does (random depth-3 trees and "
                                       "mutations) and push them through stages 1-4; then check that "
                                       "every paper loss of the kind (the baselines) passes them.")
    f.add_argument("--kind", choices=list(KINDS), default="cls")
    f.add_argument("--seconds", type=float, default=30.0, help="wall time to run (default 30)")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--random-trees", type=int, default=1000,
                   help="random depth-3 trees for the random-init selectivity figure (default 1000)")
    f.add_argument("--json", action="store_true", help="print the figures as JSON")
    f.set_defaults(run=run_filters)
    s = targets.add_parser("search", help="evaluations per minute with N workers vs serial, and overhead",
                           description="Run runs/search_classification.py serially and with N workers "
                                       "(same seed and budget) and compare evaluations per minute.")
    s.add_argument("--evaluations", type=int, default=60, help="budget of each run (default 60)")
    s.add_argument("--workers", type=int, default=2)
    s.add_argument("--backend", choices=parallel_backends(), default="scoop",
                   help="the parallel backend compared with serial (default scoop)")
    s.add_argument("--repeats", type=int, default=1,
                   help="serial/parallel pairs, run alternately; the median speed-up is reported (default 1)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(run=run_search)
    d = targets.add_parser("device", help="evaluations per minute with K workers sharing one device, "
                                          "and the cost of --deterministic",
                           description="Run runs/search_classification.py with 1 worker and with K workers on "
                                       "one device (a GPU: --workers-per-gpu K; the CPU: --workers K), then "
                                       "1 worker with --deterministic; same seed and budget.")
    d.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    d.add_argument("--workers", type=int, default=4, help="K, workers sharing the device (default 4)")
    d.add_argument("--evaluations", type=int, default=60, help="budget of each run (default 60)")
    d.add_argument("--no-deterministic", action="store_true", help="skip the --deterministic run")
    d.add_argument("--task", default="classification",
                   help="whose search script to run: classification (default), detection or segmentation")
    d.add_argument("--task-args", default="", metavar="FLAGS",
                   help="more flags for the search script, quoted, e.g. '--proxy-steps 100 --image-size 128'")
    d.add_argument("--json", action="store_true")
    d.set_defaults(run=run_device)
    x = targets.add_parser("proxy", help="how well a run's proxy training (and other lengths) ranks its losses",
                           description="Take losses a search evaluated (spread over its fitness range), score "
                                       "them by the run's proxy (its recorded scores where it trained them at "
                                       "full fidelity), by proxies of other lengths and by the final protocol; "
                                       "print Kendall's tau, Spearman's rho, the top-5 overlap and the seconds "
                                       "per proxy. A run of any task (classification, detection, segmentation, "
                                       "instance_segmentation, pose).")
    x.add_argument("run_dir", metavar="RUN_DIR", help="the --out directory of a search")
    x.add_argument("--lengths", help="proxy lengths to compare, comma-separated, in the task's unit "
                                     "(classification: proxy_epochs; the other tasks: proxy_steps); "
                                     "default: only the run's own, which is always measured")
    x.add_argument("--epochs", help="classification: the same as --lengths")
    x.add_argument("--sample", type=int, default=20,
                   help="losses to score, spread over the run's fitness range (default 20; all where fewer)")
    x.add_argument("--top", type=int, default=5, help="k of the top-k overlap (default 5)")
    x.add_argument("--final-seeds", type=int, metavar="N",
                   help="final score: mean over the first N of the run's final seeds (default: all of them)")
    x.add_argument("--json", action="store_true")
    x.set_defaults(run=run_proxy)
    _register_hps(targets)
    _register_detection_loss(targets)
    _register_pap(targets)
    _register_gpu(targets)


# --quick's settings where the option is not given; the full run's otherwise.
HPS_FULL = {"evaluations": 100, "seeds": 10, "parallel_evaluations": 60, "parallel_seeds": 3, "sleep": 1.0}
# The reference's budget is kept (at 50 evaluations DYCORS has barely begun after its 32-point design): fewer seeds.
HPS_QUICK = {"evaluations": 100, "seeds": 3, "parallel_evaluations": 60, "parallel_seeds": 1, "sleep": 0.5}


def _register_hps(targets) -> None:
    h = targets.add_parser("hps", help="the HPS optimiser vs random search and TPE on integer test problems",
                           description="Run the HPS optimiser (DYCORS by default), random search and Optuna's "
                                       "TPE (if installed) with the same budget and seeds on 15-dimensional "
                                       "integer Ackley, Levy, Rastrigin and an AP-like function; print medians, "
                                       "the share of runs beating random search, the gain over random search "
                                       "against a reference's (a plain DYCORS vs random search, measured "
                                       "elsewhere), the optimiser's overhead per evaluation and the 2-worker "
                                       "parallel check.")
    h.add_argument("--evaluations", type=int, help="budget of each run (default 100)")
    h.add_argument("--seeds", type=int, help="seeds per method and problem (default 10; --quick 3)")
    h.add_argument("--strategies", default="dycors",
                   help="ours to run, comma-separated, of dycors, srbf, ei, lcb, or 'all' (default dycors; "
                        "the targets are checked for the first)")
    h.add_argument("--problems", default="ackley,levy,rastrigin,ap-like",
                   help=f"comma-separated, of {', '.join(PROBLEM_NAMES)} (default: the first four; the "
                        f"-small ones have narrower domains where random search's medians are near the "
                        f"reference's)")
    h.add_argument("--dim", type=int, default=15, help="dimensions of every problem (default 15)")
    h.add_argument("--jobs", type=int, default=1,
                   help="processes for the comparison runs (default 1; more is faster, but the overhead "
                        "figure then includes their competition for the cores)")
    h.add_argument("--no-tpe", action="store_true", help="skip Optuna's TPE")
    h.add_argument("--no-parallel", action="store_true", help="skip the parallel check")
    h.add_argument("--sleep", type=float, help="seconds per evaluation in the parallel check (default 1; --quick 0.5)")
    h.add_argument("--parallel-evaluations", type=int, help="budget of the serial run of the parallel check "
                                                            "(default 60)")
    h.add_argument("--parallel-seeds", type=int, help="seeds of the parallel check (default 3; --quick 1)")
    h.add_argument("--quick", action="store_true", help="smaller defaults: 3 seeds, a parallel check of one "
                                                        "seed at 0.5 s per evaluation (about 3 minutes instead "
                                                        "of 15)")
    h.add_argument("--json", action="store_true")
    h.set_defaults(run=run_hps)


# --quick's settings where the option is not given; the full run's otherwise.
DETECTION_FULL = {"backbone": "resnet18", "size": 128, "batch": 8, "steps": 20, "warmup": 3}
DETECTION_QUICK = {"backbone": "small", "size": 64, "batch": 2, "steps": 3, "warmup": 1}


def _register_detection_loss(targets) -> None:
    # The names are checked by gp_loss.bench.detection (importing torchvision here would slow every command).
    g = targets.add_parser("detection-loss", help="a training step with the genome focal + GIoU losses vs "
                                                  "torchvision's own detection loss code",
                           description="Build one detector, put one fixed batch of canvases on the device and "
                                       "run SGD steps that alternate torchvision's loss code and the genome "
                                       "(focal + GIoU; Faster R-CNN: BCE, GIoU, CE, GIoU) step by step from "
                                       "the same weights; print the median ms of each, their ratio and the "
                                       "largest relative difference of their loss terms. Target: genome "
                                       "<= 1.05x torchvision.")
    g.add_argument("--model", default="fcos", help="fcos, retinanet or fasterrcnn (default fcos)")
    g.add_argument("--backbone", help=f"small, resnet18, resnet34 or resnet50 (default {DETECTION_FULL['backbone']}; "
                                      f"--quick {DETECTION_QUICK['backbone']})")
    g.add_argument("--size", type=int, help=f"image side in pixels (default {DETECTION_FULL['size']}; "
                                            f"--quick {DETECTION_QUICK['size']})")
    g.add_argument("--batch", type=int, help=f"images per step (default {DETECTION_FULL['batch']}; "
                                             f"--quick {DETECTION_QUICK['batch']})")
    g.add_argument("--steps", type=int, help=f"timed steps of each loss (default {DETECTION_FULL['steps']}; "
                                             f"--quick {DETECTION_QUICK['steps']})")
    g.add_argument("--warmup", type=int, help=f"untimed steps of each loss first (default "
                                              f"{DETECTION_FULL['warmup']}; --quick {DETECTION_QUICK['warmup']})")
    g.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    g.add_argument("--seed", type=int, default=0, help="weights and canvases (default 0)")
    g.add_argument("--quick", action="store_true", help="tiny sizes for CI: small backbone, 64 px, batch 2, "
                                                        "3 steps")
    g.add_argument("--json", action="store_true", help="print the figures as JSON")
    g.set_defaults(run=run_detection_loss)


PROBLEM_NAMES = ("ackley", "levy", "rastrigin", "ap-like", "ackley-small", "levy-small", "rastrigin-small")


def run_filters(args: argparse.Namespace) -> int:
    from gp_loss.bench.filters import bench_filters, format_baselines

    if not (math.isfinite(args.seconds) and args.seconds > 0):
        raise GpLossError(f"--seconds must be a positive finite number, got {args.seconds:g}")
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
    print(format_baselines(result["baselines"]))
    return 0


def run_search(args: argparse.Namespace) -> int:
    from gp_loss.bench.search import bench_search

    if args.evaluations < 1 or args.workers < 1 or args.repeats < 1:
        raise GpLossError("--evaluations, --workers and --repeats must be at least 1")
    result = bench_search(args.evaluations, args.workers, args.backend, repeats=args.repeats)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    for i, pair in enumerate(result["pairs"], 1):
        for label in ("serial", args.backend):
            r = pair[label]
            print(f"{label:<16} {r['workers']} worker(s): {r['evaluations']} evaluations in {r['wall_s']:.1f} s = "
                  f"{r['evaluations_per_minute']:.1f}/min; training {r['train_s']:.1f} s, breeding "
                  f"{r['breed_s']:.1f} s; overhead {100 * r['overhead']:.1f}%")
        if len(result["pairs"]) > 1:
            print(f"  pair {i}: speed-up {pair['speedup']:.2f}x")
    print(f"speed-up {args.backend} x{args.workers} / serial: {result['speedup']:.2f}x"
          + (f" (median of {len(result['pairs'])} pairs)" if len(result["pairs"]) > 1 else "")
          + f"; same hall of fame: {result['same_hall_of_fame']}")
    return 0


def run_device(args: argparse.Namespace) -> int:
    from gp_loss.bench.device import bench_device

    if args.evaluations < 1:
        raise GpLossError(f"--evaluations must be at least 1, got {args.evaluations}")
    import shlex

    from gp_loss.bench.device import task_script
    try:
        extra = shlex.split(args.task_args)
    except ValueError as err:
        raise GpLossError(f"--task-args {args.task_args!r} cannot be split into flags: {err}") from None
    result = bench_device(args.evaluations, args.device, args.workers, deterministic=not args.no_deterministic,
                          script=task_script(args.task), script_args=extra)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    for label, r in result["runs"].items():
        print(f"{label:<26} {r['evaluations']} evaluations in {r['wall_s']:.1f} s = "
              f"{r['evaluations_per_minute']:.1f}/min; training {r['train_s']:.1f} s, breeding {r['breed_s']:.1f} s")
    print(f"device {result['device']}: {args.workers} workers / 1 worker = {result['speedup']:.2f}x evaluations "
          f"per minute" + (f"; --deterministic costs {result['deterministic_cost']:.2f}x"
                           if "deterministic_cost" in result else "")
          + "; same hall of fame as 1 worker: " + ", ".join(f"{k} {v}" for k, v in result["same_hall_of_fame"].items()))
    return 0


def run_proxy(args: argparse.Namespace) -> int:
    import sys

    from gp_loss.bench.proxy import bench_proxy

    if args.lengths is not None and args.epochs is not None:
        raise GpLossError("give --lengths or --epochs, not both (--epochs is classification's name for --lengths)")
    flag, text = ("--epochs", args.epochs) if args.epochs is not None else ("--lengths", args.lengths)
    try:
        lengths = None if text is None else [int(e) for e in text.split(",") if e.strip()]
    except ValueError:
        raise GpLossError(f"{flag} takes whole numbers separated by commas, e.g. 2,3,5; got {text!r}") from None
    result = bench_proxy(args.run_dir, lengths, args.sample, args.top, final_seeds=args.final_seeds,
                         unit="proxy_epochs" if flag == "--epochs" and text is not None else None,
                         progress=None if args.json else lambda line: print(line, file=sys.stderr, flush=True))
    if args.json:
        print(json.dumps(result, indent=2, allow_nan=False))
        return 0
    option, k = result["proxy_option"], result["top"]
    print(f"{result['losses']} losses of {result['run']} ({result['task']}), spread over its fitness range; "
          f"final score = {result['final_split']} {result['metric']}, mean of {result['final_seeds']} seed(s)")
    if "note" in result:
        print(f"note: {result['note']}")
    print(f"the run's proxy ({option} {result['proxy_length']}): Kendall's tau {result['kendall_tau']:.3f}, "
          f"Spearman's rho {result['spearman_rho']:.3f}, top-5 overlap {result['top5_overlap']} of "
          f"{min(5, result['losses'])}, {result['seconds_per_proxy']:.3f} s per proxy ({result['reused']} of "
          f"{result['losses']} scores as the run recorded them)")
    print(f"{option:>12}  {'kendall':>7}  {'spearman':>8}  {'top-' + str(k) + ' kept':>10}  {'s/proxy':>7}  "
          f"{'time':>6}")
    for r in result["rows"]:
        print(f"{r['length']:>12}  {r['kendall_tau']:>7.3f}  {r['spearman_rho']:>8.3f}  {r['top_overlap']:>10}  "
              f"{r['seconds']:>7.3f}  {r['time_ratio']:>5.2f}x" + ("  (the run's)" if r["current"] else ""))
    return 0


def run_hps(args: argparse.Namespace) -> int:
    from gp_loss.bench.hps import bench_hps, format_report
    from gp_loss.hps.strategies import STRATEGIES

    defaults = HPS_QUICK if args.quick else HPS_FULL
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    strategies = list(STRATEGIES) if args.strategies.strip() == "all" else \
        [s.strip() for s in args.strategies.split(",") if s.strip()]
    unknown = [s for s in strategies if s not in STRATEGIES]
    if not strategies or unknown:
        raise GpLossError(f"--strategies takes {', '.join(STRATEGIES)} or all, comma-separated; "
                          f"got {args.strategies!r}")
    problems = [p.strip() for p in args.problems.split(",") if p.strip()]
    unknown = [p for p in problems if p not in PROBLEM_NAMES]
    if not problems or unknown:
        raise GpLossError(f"--problems takes {', '.join(PROBLEM_NAMES)}, comma-separated; got {args.problems!r}")
    if args.dim < 2:
        raise GpLossError(f"--dim must be at least 2, got {args.dim}")
    design = 2 * (args.dim + 1)
    for name in ("evaluations", "parallel_evaluations"):
        if getattr(args, name) < design:
            raise GpLossError(f"--{name.replace('_', '-')} must be at least the initial design's 2(d+1) = "
                              f"{design} points, got {getattr(args, name)}")
    for name in ("seeds", "jobs", "parallel_seeds"):
        if getattr(args, name) < 1:
            raise GpLossError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if not args.sleep >= 0:
        raise GpLossError(f"--sleep must be 0 or more seconds, got {args.sleep:g}")
    result = bench_hps(args.evaluations, args.seeds, tuple(strategies), tuple(problems), dim=args.dim,
                       tpe=not args.no_tpe, jobs=args.jobs, parallel=not args.no_parallel,
                       parallel_evaluations=args.parallel_evaluations, parallel_seeds=args.parallel_seeds,
                       sleep=args.sleep)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print("\n".join(format_report(result)))
    return 0


def run_detection_loss(args: argparse.Namespace) -> int:
    from gp_loss.bench.detection import bench_detection_loss, check_options, format_report

    defaults = DETECTION_QUICK if args.quick else DETECTION_FULL
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    check_options(args.model, args.backbone, args.size, args.batch, args.steps, args.warmup)
    result = bench_detection_loss(args.model, args.backbone, args.size, args.batch, args.steps, args.warmup,
                                  device=args.device, seed=args.seed)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print("\n".join(format_report(result)))
    return 0


# --quick's settings where the option is not given; the full run's otherwise.
PAP_FULL = {"canvases": 128, "steps": 200, "warmup": 20, "cost_steps": 5}
PAP_QUICK = {"canvases": 32, "steps": 4, "warmup": 2, "cost_steps": 2}


def _register_pap(targets) -> None:
    # The names are checked by gp_loss.bench.pap (importing torchvision here would slow every command).
    a = targets.add_parser("pap", help="Parameterized AP Loss: AP with and without its gradient blocking, and "
                                       "the cost of a training step against Focal + GIoU",
                           description="Ablation: train the detector (built-in digits) from the same seed for "
                                       "the same steps with pap (identity substitutions, the rank's H1 gradient "
                                       "blocked) and pap_unblocked (not blocked; the paper's ablation) and print "
                                       "their validation AP side by side. Cost: alternate training steps of PAP "
                                       "and fl_giou (Focal + GIoU) on one fixed batch from the same weights; "
                                       "print the median ms per step, the peak memory of a step and the "
                                       "pap/fl_giou ratios.")
    a.add_argument("--model", default="retinanet", help="fcos, retinanet (default) or fasterrcnn")
    a.add_argument("--backbone", default="small", help="small (default), resnet18, resnet34 or resnet50")
    a.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    a.add_argument("--canvases", type=int, help=f"ablation: digit canvases drawn, training + validation "
                                                f"(default {PAP_FULL['canvases']}; --quick {PAP_QUICK['canvases']})")
    a.add_argument("--max-digits", type=int, default=1, help="ablation: digits per canvas, 1 to this (default 1)")
    a.add_argument("--batch", type=int, default=8, help="ablation: images per step (default 8)")
    a.add_argument("--steps", type=int, help=f"ablation: SGD steps per loss (default {PAP_FULL['steps']}; "
                                             f"--quick {PAP_QUICK['steps']})")
    a.add_argument("--warmup", type=int, help=f"ablation: linear warm-up steps (default {PAP_FULL['warmup']}; "
                                              f"--quick {PAP_QUICK['warmup']})")
    a.add_argument("--losses", default="pap,pap_unblocked",
                   help="ablation: baselines to train, comma-separated (default pap,pap_unblocked; add fl_giou "
                        "for reference)")
    a.add_argument("--cost-batch", type=int, default=16, help="cost: images per step (default 16)")
    a.add_argument("--cost-steps", type=int, help=f"cost: timed steps of each loss (default "
                                                  f"{PAP_FULL['cost_steps']}; --quick {PAP_QUICK['cost_steps']})")
    a.add_argument("--cost-warmup", type=int, default=1, help="cost: untimed steps of each loss first (default 1)")
    a.add_argument("--no-ablation", action="store_true", help="skip the ablation")
    a.add_argument("--no-cost", action="store_true", help="skip the cost comparison")
    a.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    a.add_argument("--seed", type=int, default=0, help="weights, canvases and batches (default 0)")
    a.add_argument("--quick", action="store_true", help="tiny sizes for CI: 32 canvases, 4 steps, 2 timed steps")
    a.add_argument("--json", action="store_true", help="print the figures as JSON")
    a.set_defaults(run=run_pap)


def run_pap(args: argparse.Namespace) -> int:
    from gp_loss.bench.pap import (bench_pap_ablation, bench_pap_cost, check_ablation_options, check_cost_options,
                                   format_ablation, format_cost)

    defaults = PAP_QUICK if args.quick else PAP_FULL
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    losses = tuple(n.strip() for n in args.losses.split(",") if n.strip())
    if args.no_ablation and args.no_cost:
        raise GpLossError("--no-ablation and --no-cost leave nothing to run")
    # every option checked before anything trains
    if not args.no_ablation:
        check_ablation_options(args.model, args.backbone, args.size, args.canvases, args.max_digits, args.batch,
                               args.steps, args.warmup, losses)
    if not args.no_cost:
        for flag, value, minimum in (("--cost-batch", args.cost_batch, 1), ("--cost-steps", args.cost_steps, 1),
                                     ("--cost-warmup", args.cost_warmup, 0)):
            if value < minimum:
                raise GpLossError(f"{flag} must be at least {minimum}, got {value}")
        check_cost_options(args.model, args.backbone, args.size, args.cost_batch, args.cost_steps, args.cost_warmup)
    result = {}
    if not args.no_ablation:
        result["ablation"] = bench_pap_ablation(args.model, args.backbone, args.size, args.canvases, args.max_digits,
                                                args.batch, args.steps, args.warmup, losses, device=args.device,
                                                seed=args.seed)
        if not args.json:
            print("\n".join(format_ablation(result["ablation"])), flush=True)
    if not args.no_cost:
        result["cost"] = bench_pap_cost(args.model, args.backbone, args.size, args.cost_batch, args.cost_steps,
                                        args.cost_warmup, device=args.device, seed=args.seed)
        if not args.json:
            print("\n".join(format_cost(result["cost"])))
    if args.json:
        print(json.dumps(result, indent=2))
    return 0


def _register_gpu(targets) -> None:
    # The sizes live in gp_loss.bench.gpu (importing torch here would slow every command).
    g = targets.add_parser("gpu", help="every GPU target in one run: loss step time, AP50 within 90 s, "
                                       "K workers per GPU, --deterministic and bf16, peak memory per worker",
                           description="On one device: the genome Focal + GIoU step time against torchvision's "
                                       "loss (FCOS, RetinaNet, Faster R-CNN; target <= 1.05x), AP50 of FCOS "
                                       "ResNet-18 after 30, 60 and 90 s of training (target >= 0.85 at 90 s), "
                                       "evaluations per minute of the three searches with 1 and K workers "
                                       "(target >= 2x), the cost of --deterministic and bf16, and the peak "
                                       "memory per worker. A part that cannot run gives its error in place "
                                       "of its figures.")
    g.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    g.add_argument("--quick", action="store_true", help="tiny sizes for CI: small backbone, 64 px, checkpoints "
                                                        "at 3, 6 and 9 s, searches of 4 tiny proxies")
    g.add_argument("--workers", type=int, help="K, workers sharing the device (default 4; --quick 2, for CI's "
                                                "2 cores)")
    g.add_argument("--seed", type=int, default=0, help="weights, data order and searches (default 0)")
    g.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    g.set_defaults(run=run_gpu)


def run_gpu(args: argparse.Namespace) -> int:
    import sys

    from gp_loss.bench.gpu import WORKERS_FULL, WORKERS_QUICK, bench_gpu, check_options, format_report

    if args.workers is None:
        args.workers = WORKERS_QUICK if args.quick else WORKERS_FULL
    check_options(args.device, args.workers)
    if not 0 <= args.seed <= 2**32 - 1:
        raise GpLossError(f"--seed must be in [0, 2**32 - 1], got {args.seed}")
    result = bench_gpu(args.device, quick=args.quick, workers=args.workers, seed=args.seed,
                       progress=None if args.json else lambda line: print(line, file=sys.stderr, flush=True))
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print("\n".join(format_report(result)))
    return 0
