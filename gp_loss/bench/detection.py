"""Overhead of the genome loss heads against torchvision's own detection loss code.

Target: a training step with the genome sigmoid focal + GIoU losses takes at most
1.05x the step with torchvision's built-in loss (same model, batch and device,
alternated in one run).

One detector is built once (:func:`~gp_loss.tasks.detection.build_detector`) and one
fixed batch of canvases (:func:`~gp_loss.data.canvases.draw_canvases`) is put on the
device. Training steps (forward with targets, sum of the loss terms, backward, an SGD
step) then alternate between torchvision's loss code and the genome, step by step
(torchvision, genome, torchvision, genome, ...), switched with
:func:`~gp_loss.tasks.detection.set_genome`. Before every step the starting weights
(and BatchNorm statistics) are restored and the global RNG is reseeded (Faster
R-CNN samples anchors and RoIs from it), outside the timed region: every step does
the same work from the same state, so the two losses are compared on equal terms.
On CUDA each step is timed between ``torch.cuda.synchronize()`` calls.

Reported: the median milliseconds per step of each; the genome/torchvision ratio as
the median of the per-pair ratios (pair *i* = the *i*-th step of each, run back to
back) with their interquartile range; and the loss terms of both on the starting
weights and the same inputs, with their relative differences.

The torchvision baselines, and what can be compared:

* FCOS: torchvision's loss is sigmoid focal + GIoU (+ centerness BCE, which the
  genome head computes with torchvision's code): every term is comparable.
* RetinaNet: torchvision's default box loss is L1 on the deltas; the baseline uses
  its own GIoU option (``regression_head._loss_type = "giou"``, as RetinaNet v2),
  so both terms are comparable.
* Faster R-CNN: the genome has four branches (BCE, GIoU, CE, GIoU); torchvision's
  box losses are smooth-L1, so only the classification terms (``loss_objectness``,
  ``loss_classifier``) are comparable; the box terms are reported as not comparable.
"""
from __future__ import annotations

import copy
import math
import statistics
import time

import torch

from gp_loss.data.canvases import CanvasSpec, draw_canvases
from gp_loss.data.digits import NUM_CLASSES
from gp_loss.errors import GpLossError
from gp_loss.language.genome import Genome
from gp_loss.paper_losses import PAPER_LOSSES
from gp_loss.runtime.device import check_device, resolve_device
from gp_loss.tasks.detection import BACKBONES, BOX_DETECTORS, build_detector, set_genome, target_labels

TARGET_RATIO = 1.05
LEARNING_RATE = 0.01
MIN_SIZE = 32  # build_detector's smallest image side


def _paper(name: str) -> str:
    return PAPER_LOSSES[name].formula


def genome_for(model: str) -> Genome:
    """The genome timed against torchvision: focal + GIoU (Faster R-CNN: BCE, GIoU, CE, GIoU)."""
    if model == "fasterrcnn":
        return Genome.from_formulas([
            ("rpn_cls", "bcls", _paper("bce")), ("rpn_reg", "reg", _paper("giou")),
            ("rcnn_cls", "cls", _paper("ce")), ("rcnn_reg", "reg", _paper("giou"))])
    return Genome.from_formulas([("cls", "bcls", _paper("sigmoid_focal")), ("reg", "reg", _paper("giou"))])


# What torchvision's side computes, and the terms whose values the genome must reproduce.
BASELINES = {
    "fcos": "torchvision FCOS loss (sigmoid focal + GIoU + centerness BCE)",
    "retinanet": "torchvision RetinaNet loss with its GIoU box loss (sigmoid focal + GIoU)",
    "fasterrcnn": "torchvision Faster R-CNN loss (BCE + smooth-L1, CE + smooth-L1)",
}
GENOME_NAMES = {
    "fcos": "genome sigmoid focal + GIoU",
    "retinanet": "genome sigmoid focal + GIoU",
    "fasterrcnn": "genome BCE + GIoU, CE + GIoU",
}
COMPARABLE = {
    "fcos": ("classification", "bbox_regression", "bbox_ctrness"),
    "retinanet": ("classification", "bbox_regression"),
    "fasterrcnn": ("loss_objectness", "loss_classifier"),
}


def canvas_batch(model: str, batch: int, size: int, seed: int, device: torch.device):
    """``batch`` canvases of ``size`` px on ``device``: a list of 3×H×W images and torchvision targets."""
    max_side = max(1, min(48, size * 3 // 4))
    spec = CanvasSpec(count=batch, height=size, width=size, min_size=min(16, max_side), max_size=max_side,
                      seed=seed)
    canvases = draw_canvases(spec)
    per_image: dict[int, list[dict]] = {image["id"]: [] for image in canvases.coco["images"]}
    for a in canvases.coco["annotations"]:
        per_image[a["image_id"]].append(a)
    images, targets = [], []
    for n, image in enumerate(canvases.coco["images"]):
        rows = per_image[image["id"]]
        xywh = torch.tensor([a["bbox"] for a in rows], dtype=torch.float32).reshape(-1, 4)
        boxes = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)
        categories = torch.tensor([a["category_id"] - 1 for a in rows], dtype=torch.int64)
        images.append(canvases.images[n].to(device))
        targets.append({"boxes": boxes.to(device), "labels": target_labels(model, categories).to(device)})
    return images, targets


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], values[0]
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q3


def _relative_difference(got: float, want: float) -> float:
    if got == want:
        return 0.0
    if want == 0 or not (math.isfinite(got) and math.isfinite(want)):
        return math.inf
    return abs(got - want) / abs(want)


def check_options(model: str, backbone: str, size: int, batch: int, steps: int, warmup: int) -> None:
    """Raise a one-line :class:`GpLossError` for a setting the benchmark cannot run."""
    if model not in BOX_DETECTORS:
        raise GpLossError(f"--model must be one of {', '.join(BOX_DETECTORS)}, got {model!r}")
    if backbone not in BACKBONES:
        raise GpLossError(f"--backbone must be one of {', '.join(BACKBONES)}, got {backbone!r}")
    if size < MIN_SIZE:
        raise GpLossError(f"--size must be at least {MIN_SIZE} pixels, got {size}")
    if batch < 1:
        raise GpLossError(f"--batch must be at least 1, got {batch}")
    if steps < 1:
        raise GpLossError(f"--steps must be at least 1, got {steps}")
    if warmup < 0:
        raise GpLossError(f"--warmup must be 0 or more, got {warmup}")


def bench_detection_loss(model: str = "fcos", backbone: str = "resnet18", size: int = 128, batch: int = 8,
                         steps: int = 20, warmup: int = 3, device: str = "auto", seed: int = 0) -> dict:
    """Time ``steps`` training steps of each loss, alternated, and compare their loss terms.

    Returns a dict of the settings, ``ms`` (per loss: median, q1, q3 and every step's ms),
    ``ratio`` (median genome/torchvision of the step pairs) with ``ratio_q1``/``ratio_q3``,
    ``ratio_of_medians``, ``loss_terms`` (per term: both values, the relative difference or
    ``None`` where not comparable), ``max_relative_difference``, ``target`` and ``target_met``.
    """
    check_options(model, backbone, size, batch, steps, warmup)
    check_device(device)
    dev = resolve_device(device)
    genome = genome_for(model)

    torch.manual_seed(seed)
    net = build_detector(model, NUM_CLASSES, backbone=backbone, image_size=size, genome=None).to(dev)
    net.train()
    if model == "retinanet":  # torchvision's own GIoU box loss, not its default L1 on the deltas
        net.head.regression_head._loss_type = "giou"
    images, targets = canvas_batch(model, batch, size, seed, dev)
    start = copy.deepcopy(net.state_dict())
    optimizer = torch.optim.SGD(net.parameters(), lr=LEARNING_RATE)
    variants = {"torchvision": None, "genome": genome}

    def losses(which: str) -> dict[str, torch.Tensor]:
        set_genome(net, variants[which])
        net.load_state_dict(start)
        torch.manual_seed(seed + 1)  # the same sampled anchors and RoIs for both
        return net(images, targets)

    # Loss terms of both on the starting weights and the same inputs.
    with torch.no_grad():
        values = {which: {k: float(v) for k, v in losses(which).items()} for which in variants}
    terms = {}
    for k, want in values["torchvision"].items():
        got = values["genome"].get(k, math.nan)
        comparable = k in COMPARABLE[model]
        terms[k] = {"torchvision": want, "genome": got,
                    "relative_difference": _relative_difference(got, want) if comparable else None}
    compared = [t["relative_difference"] for t in terms.values() if t["relative_difference"] is not None]

    def step(which: str) -> float:
        set_genome(net, variants[which])
        net.load_state_dict(start)
        torch.manual_seed(seed + 1)
        optimizer.zero_grad(set_to_none=True)
        _sync(dev)
        t0 = time.perf_counter()
        loss = sum(net(images, targets).values())
        loss.backward()
        optimizer.step()
        _sync(dev)
        elapsed = time.perf_counter() - t0
        if not torch.isfinite(loss.detach()):
            raise GpLossError(f"the {which} loss is not finite ({float(loss):g}) on the starting weights")
        return 1000.0 * elapsed

    for _ in range(warmup):
        for which in variants:
            step(which)
    times: dict[str, list[float]] = {which: [] for which in variants}
    for _ in range(steps):
        for which in variants:
            times[which].append(step(which))
    net.load_state_dict(start)

    ms = {}
    for which, t in times.items():
        q1, q3 = _quartiles(t)
        ms[which] = {"median": statistics.median(t), "q1": q1, "q3": q3, "steps": t}
    pair_ratios = [g / b for g, b in zip(times["genome"], times["torchvision"])]
    ratio = statistics.median(pair_ratios)
    ratio_q1, ratio_q3 = _quartiles(pair_ratios)
    return {
        "model": model, "backbone": backbone, "image_size": size, "batch": batch, "steps": steps,
        "warmup": warmup, "device": str(dev), "seed": seed,
        "boxes": sum(len(t["boxes"]) for t in targets),
        "torchvision_loss": BASELINES[model], "genome_loss": GENOME_NAMES[model],
        "genome": genome.formulas(),
        "ms": ms,
        "ratio": ratio, "ratio_q1": ratio_q1, "ratio_q3": ratio_q3,
        "ratio_of_medians": ms["genome"]["median"] / ms["torchvision"]["median"],
        "loss_terms": terms,
        "max_relative_difference": max(compared) if compared else None,
        "target": TARGET_RATIO, "target_met": ratio <= TARGET_RATIO,
    }


def format_report(result: dict) -> list[str]:
    """The printed table of :func:`bench_detection_loss`'s result."""
    lines = [f"{result['model']}, backbone {result['backbone']}, {result['image_size']} px, batch "
             f"{result['batch']} ({result['boxes']} boxes), {result['device']}: {result['steps']} SGD steps "
             f"each, alternated step by step from the same weights ({result['warmup']} warm-up each)",
             f"{'loss':<12} {'median ms':>10} {'q1 ms':>9} {'q3 ms':>9}  what"]
    for which, what in (("torchvision", result["torchvision_loss"]), ("genome", result["genome_loss"])):
        m = result["ms"][which]
        lines.append(f"{which:<12} {m['median']:>10.2f} {m['q1']:>9.2f} {m['q3']:>9.2f}  {what}")
    lines.append(f"genome / torchvision: {result['ratio']:.3f}x (median of {result['steps']} step pairs; "
                 f"interquartile {result['ratio_q1']:.3f}x-{result['ratio_q3']:.3f}x; ratio of medians "
                 f"{result['ratio_of_medians']:.3f}x)")
    parts = []
    for k, t in result["loss_terms"].items():
        d = t["relative_difference"]
        parts.append(f"{k} {t['torchvision']:.6g} vs {t['genome']:.6g} "
                     + ("(not comparable)" if d is None else f"({d:.1e})"))
    lines.append("loss terms, torchvision vs genome (relative difference), same weights and inputs: "
                 + "; ".join(parts))
    largest = result["max_relative_difference"]
    lines.append("largest relative difference of the comparable terms: "
                 + ("none comparable" if largest is None else f"{largest:.1e}"))
    lines.append(f"target <= {result['target']:.2f}x: {'met' if result['target_met'] else 'not met'} "
                 f"({result['ratio']:.3f}x; interquartile {result['ratio_q1']:.3f}x-{result['ratio_q3']:.3f}x)")
    return lines
