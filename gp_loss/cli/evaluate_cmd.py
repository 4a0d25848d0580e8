"""``gp-loss evaluate``: train a task under given losses with the search's final protocol."""
from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import fields

from gp_loss.errors import GpLossError
from gp_loss.language.genome import Genome
from gp_loss.tasks.registry import TASK_SUMMARIES

# flag -> the task option it sets (a flag applies to the tasks that have that option).
OPTION_FLAGS = {
    "--data": ("data", str, "the task's data: 'digits' (built in), an ImageFolder directory (classification), "
                            "a COCO instances JSON (detection, segmentation; instance_segmentation: with polygon or RLE masks), "
                            "a COCO keypoints JSON (pose) or a Pascal "
                            "VOC folder (segmentation)"),
    "--val-data": ("val_data", str, "detection, segmentation, instance_segmentation, pose: a validation JSON; "
                                    "classification: an "
                                    "ImageFolder root for validation whose class folders match --data's "
                                    "(default: a seeded split of --data)"),
    "--test-data": ("test_data", str, "classification: an ImageFolder root for test whose class folders match "
                                      "--data's (default: a seeded split of --data)"),
    "--label-noise": ("label_noise", float, "classification: fraction of training labels flipped uniformly to "
                                            "another class (default 0)"),
    "--noise-seed": ("noise_seed", int, "classification: seed of the label noise (default: the --seed given, as "
                                        "a search draws it from its seed)"),
    "--model": ("model", str, "detection: fcos, retinanet or fasterrcnn; segmentation: small, "
                              "lraspp_mobilenet_v3_large, deeplabv3_mobilenet_v3_large, deeplabv3_resnet50, "
                              "fcn_resnet50"),
    "--backbone": ("backbone", str, "detection, instance_segmentation: small, resnet18, resnet34 or resnet50"),
    "--weights": ("weights", str, "detection, segmentation, instance_segmentation: pretrained (default: the shipped small backbone), none "
                                  "(random init), or a state dict for the model or its backbone"),
    "--num-classes": ("num_classes", int, "segmentation: classes including background (default: from the data; "
                                          "VOC 21)"),
    "--image-size": ("image_size", int, "images are resized / letterboxed to this square"),
    "--epochs": ("final_epochs", int, "classification: training epochs (default: the task's final_epochs)"),
    "--steps": ("final_steps", int, "detection, segmentation, instance_segmentation, pose: training steps (default: the task's final_steps)"),
    "--optimizer": ("optimizer", str, "classification: adam (default) or sgd (plain): check a found loss where "
                                      "the gradient's scale sets the step"),
    "--lr": ("lr", float, "learning rate (default: the task's)"),
    "--precision": ("precision", str, "fp32 (default) or bf16 (forward pass and loss under autocast)"),
    "--metric": ("metric", str, "detection: the metric reported first (AP, AP50, ...); instance_segmentation: "
                                "the mask metric (AP, AP50, ...); segmentation: mIoU, "
                                "FWIoU, mAcc, aAcc, BIoU or BF1"),
    "--oks-sigmas": ("oks_sigmas", str, "pose: OKS sigmas, one value or K comma-separated (default: COCO's for its "
                                        "17 person keypoints, else 0.05 each)"),
}


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="train a task with a loss and report its metric",
                       description="Train the task's model with each loss (a baseline name, or formulas by "
                                   "branch) for the full schedule, once per seed, and report the task's metric "
                                   "(mean ± std); each loss after the first is compared with the first, paired "
                                   "on the seeds (mean difference, 95% confidence interval, verdict). The seeds "
                                   "are those of a search's final retraining "
                                   "(--seed S: S+1000, S+1001, ...), so `--seed` and `--threads` of a run "
                                   "(its torch_threads) reproduce its final.json rows.")
    p.add_argument("--task", default="classification",
                   help="the task: " + "; ".join(f"{name}: {summary}" for name, summary in TASK_SUMMARIES.items()))
    p.add_argument("--loss", action="append", required=True, metavar="BASELINE|BRANCH=FORMULA",
                   help="a baseline name (e.g. ce, focal; detection: torchvision, fl_giou, ..., pap, pap_unblocked; "
                        "segmentation: ce, dice, ce_dice, focal; instance_segmentation: torchvision, fl_giou, dice; pose: mse) or "
                        "one branch's "
                        "formula, e.g. cls='neg(dot(y, log(softmax(x))))'. Consecutive BRANCH=FORMULA flags "
                        "make one loss (detection: --loss cls=F --loss reg=G); a branch given again starts "
                        "the next loss. A detector's branches left out keep Focal + GIoU (fl_giou). "
                        "Detection, Parameterized AP Loss in place of every branch: pap (identity "
                        "substitutions), pap=PATH (the parameters in a JSON file: PAPParameters.to_json's, a "
                        "list of the 41 theta values (9: a shared theta), or a PAP search's results.json), "
                        "pap:NAME (the same substitution for all five functions: sigmoid, sqrt, linear, square, "
                        "identity or searched_retinanet_coco); pap_unblocked, pap_unblocked=PATH, "
                        "pap_unblocked:NAME: the same without blocking the rank's H1 gradient (the paper's "
                        "ablation).")
    p.add_argument("--seeds", type=int, default=3, help="training seeds (default 3)")
    p.add_argument("--seed", type=int, default=0, help="the search seed whose final protocol to follow (default 0)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per training (default 1). Floating-point sums depend on it: give a run's "
                        "torch_threads (config.json; runs/search_segmentation.py uses 2) to reproduce its final.json")
    for flag, (_, type_, help_) in OPTION_FLAGS.items():
        p.add_argument(flag, type=type_, default=None, help=help_)
    p.add_argument("--device", default="auto", help="auto (default: CUDA when present), cpu, cuda or cuda:N")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run)


def task_options_from(args: argparse.Namespace, info) -> dict:
    """The task options the flags set; a flag for an option the task lacks is an error naming the task."""
    known = {f.name for f in fields(info.options)}
    options = {}
    for flag, (name, _, _) in OPTION_FLAGS.items():
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value is None:
            continue
        if name not in known:
            raise GpLossError(f"{flag} does not apply to the {info.name} task (it has no option {name})")
        options[name] = value
    if "label_noise" in options and "noise_seed" in known and "noise_seed" not in options:
        options["noise_seed"] = args.seed  # the noise of the search run with this --seed
    return options


# ``--loss`` forms of Parameterized AP Loss (detection): PREFIX, PREFIX=PATH, PREFIX:NAME.
PAP_PREFIXES = {"pap": True, "pap_unblocked": False}  # prefix -> block the rank's H1 gradient


def pap_loss_from(spec: str, info) -> tuple[str, object] | None:
    """``(name, DetectionLoss)`` for a ``pap=PATH`` / ``pap:NAME`` (or ``pap_unblocked...``) spec of
    the detection task; ``None`` for any other spec (the bare ``pap``, ``pap_unblocked`` are baselines).

    Raises:
        GpLossError: an unreadable or malformed parameters file, an unknown substitution (one line).
    """
    if info.name != "detection":
        return None
    for prefix, block in PAP_PREFIXES.items():
        for sep in ("=", ":"):
            if not spec.startswith(prefix + sep):
                continue
            from gp_loss.pap import PAPParameters, read_pap_parameters
            from gp_loss.tasks.detection.task import DetectionLoss

            value = spec[len(prefix) + 1:]
            if sep == "=":
                params = read_pap_parameters(value)
            elif not value.strip():
                raise GpLossError(f"--loss {spec!r}: give a substitution after ':', e.g. {prefix}:sigmoid")
            else:
                params = PAPParameters.named(value)
            return spec, DetectionLoss(None, pap=params, pap_block_h1=block)
    return None


def losses_from(specs: list[str], info, options) -> list[tuple[str, object]]:
    """``(name, loss)`` per loss of the ``--loss`` flags: a baseline's name, or a genome of branch formulas."""
    layout = info.layout(options)
    baselines = info.baselines_for(options)
    losses: list[tuple[str, object]] = []
    group: list[str] = []

    def close() -> None:
        if not group:
            return
        given = dict(spec.partition("=")[::2] for spec in group)
        given = {name.strip(): formula for name, formula in given.items()}
        unknown = [n for n in given if n not in layout]
        if unknown:
            raise GpLossError(f"--loss names branch {unknown[0]!r}; the {info.name} task trains the branches "
                              f"{', '.join(f'{n} ({k})' for n, k in layout.items())}")
        missing = [n for n in layout if n not in given]
        fill = info.reference_baseline
        if missing and fill is None:
            raise GpLossError(f"--loss gives no formula for branch(es) {', '.join(missing)}")
        reference = baselines.get(fill, {}) if fill else {}
        formulas = {n: given.get(n, reference.get(n)) for n in layout}
        genome = Genome.from_formulas((n, layout[n], f) for n, f in formulas.items())
        losses.append((" ".join(group) + (f" (+ {fill} for {', '.join(missing)})" if missing else ""), genome))
        group.clear()

    for spec in specs:
        pap = pap_loss_from(spec, info)
        if pap is not None:
            close()
            losses.append(pap)
            continue
        if "=" not in spec:
            close()
            if spec not in baselines:
                raise GpLossError(f"--loss {spec!r} is neither BRANCH=FORMULA nor a baseline "
                                  f"({', '.join(baselines)})")
            losses.append((spec, spec))
            continue
        branch = spec.partition("=")[0].strip()
        if any(s.partition("=")[0].strip() == branch for s in group):
            close()
        group.append(spec)
    close()
    return losses


def run(args: argparse.Namespace) -> int:
    from gp_loss.evolution.config import MAX_FINAL_SEEDS, MAX_TORCH_THREADS, retrain_seeds
    from gp_loss.metrics import mean_defined, std_defined
    from gp_loss.metrics.paired import compare_rows, interval_text
    from gp_loss.runtime.device import check_device, resolve_device
    from gp_loss.runtime.threads import torch_threads
    from gp_loss.tasks import make_task, task_info

    info = task_info(args.task)
    if not 1 <= args.seeds <= MAX_FINAL_SEEDS:
        raise GpLossError(f"--seeds must be from 1 to {MAX_FINAL_SEEDS}, got {args.seeds}")
    if args.seed < 0:
        raise GpLossError(f"--seed must be 0 or more, got {args.seed}")
    if not 1 <= args.threads <= MAX_TORCH_THREADS:
        raise GpLossError(f"--threads must be from 1 to {MAX_TORCH_THREADS}, got {args.threads}")
    check_device(args.device)
    options = task_options_from(args, info)
    checked = info.make_options(options)
    losses = losses_from(args.loss, info, checked)
    task = make_task(args.task, options, resolve_device(args.device))
    seeds = retrain_seeds(args.seed, args.seeds)
    metric = info.metric_for(checked)
    rows = []
    failures = []  # (loss, seed, outcome) of every training that failed
    with torch_threads(args.threads):
        for name, loss in losses:
            outcomes = [task.final_score(task.baseline(loss) if isinstance(loss, str) else loss, seed)
                        for seed in seeds]
            failures += [(name, seed, o) for seed, o in zip(seeds, outcomes) if o.failed]
            scores = [o.score for o in outcomes]
            formulas = (info.baselines_for(checked)[loss] if isinstance(loss, str) else loss.formulas())
            row = {"loss": name, "formulas": formulas, "seeds": seeds, "scores": scores,
                   "mean": statistics.fmean(scores), "std": statistics.pstdev(scores),
                   "status": [o.status for o in outcomes], "reasons": [o.reason for o in outcomes],
                   "failed": all(o.failed for o in outcomes)}
            names = list(outcomes[0].metrics)
            if names:  # every metric the task measured: mean over the seeds where it is defined
                row["metrics"] = {m: mean_defined([o.metrics.get(m) for o in outcomes]) for m in names}
                row["metrics_std"] = {m: std_defined([o.metrics.get(m) for o in outcomes]) for m in names}
            rows.append(row)
    if len(failures) == len(losses) * len(seeds):  # a table of zeros would say nothing of the losses
        name, seed, first = failures[0]
        raise GpLossError(f"every training failed ({name}, seed {seed}: {first.status}"
                          + (f": {first.reason}" if first.reason else "")
                          + "); no score to report: check the losses, the data and the task options (a "
                            "baseline that fails too means the data or the settings cannot be trained)")
    for r in rows[1:]:  # every loss trained on the same seeds: each is judged against the first by its pairs
        r["vs_reference"] = {"baseline": rows[0]["loss"], **compare_rows(r, rows[0])}
    if args.json:
        print(json.dumps({"task": info.name, "metric": f"{info.final_split} {metric}", "device": str(task.device),
                          "rows": rows,
                          "losses": {r["loss"]: r.get("metrics", {metric: r["mean"]}) for r in rows}}, indent=2))
        return 0
    print(f"{info.name}: {info.final_split} {metric} over seeds {', '.join(map(str, seeds))} on {task.device}")
    for r in rows:
        bad = [f"{s}: {why}" if why else s for s, why in zip(r["status"], r["reasons"]) if s != "ok"]
        # A loss whose every seed failed has no score: its zeros are not shown as one.
        score = f"{'failed':>13}" if r["failed"] else f"{100 * r['mean']:6.2f} ± {100 * r['std']:.2f}"
        line = f"  {score}  {r['loss']}"
        if "metrics" in r:
            line += "  [" + ", ".join(f"{m} {_pct(v)}" for m, v in r["metrics"].items()) + "]"
        if "vs_reference" in r and not (r["failed"] or rows[0]["failed"]):  # zeros alone are no comparison
            vs = r["vs_reference"]
            line += f"  vs the first (paired, 95% CI): {interval_text(vs)} {vs['verdict']}"
        print(line + (f"  ({'; '.join(bad)})" if bad else ""))
    return 0


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"
