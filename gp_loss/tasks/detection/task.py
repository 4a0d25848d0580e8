"""Object detection as a search task: train a torchvision detector under candidate losses; fitness = COCO AP.

Data (:mod:`.data`): the built-in digit canvases or a COCO instances JSON, kept on the
training device. Model: torchvision's FCOS, RetinaNet or Faster R-CNN with the
searchable heads of :mod:`.models` (``small`` CPU-scale backbone by default, ResNet-18/34/50
FPN for GPUs). Proxy training as CSE-Autoloss (Liu et al., ICLR 2021) and AutoLoss-Zero
(Li et al., CVPR 2022) do it, scaled by the options: SGD with momentum, a linear warm-up,
``proxy_steps`` steps on (a subset of) the training images, then pycocotools' COCOeval on
the validation split; the fitness is ``metric`` (AP by default). Training stops at the first
non-finite loss, naming the branch. The final score retrains for ``final_steps``.

A loss is a :class:`~gp_loss.language.genome.Genome` whose branches fit the detector
(:attr:`~gp_loss.tasks.detection.DetectorSpec.branches`), a :class:`DetectionLoss`, or a baseline's
name (:attr:`~gp_loss.tasks.detection.DetectorSpec.baselines`): ``torchvision`` trains with the
detector's own loss code untouched; ``pap`` with Parameterized AP Loss (Tao et al., NeurIPS 2021;
:mod:`gp_loss.pap`) in identity substitutions, ``pap_unblocked`` the same without its gradient
blocking (the paper's ablation).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import ClassVar, Iterator

import torch

from gp_loss.errors import GpLossError
from gp_loss.field_types import check_numbers, options_from_dict
from gp_loss.language.genome import Genome
from gp_loss.pap.loss import DEFAULT_TOP_K
from gp_loss.pap.substitutions import PAPParameters
from gp_loss.paper_losses import PAPER_LOSSES
from gp_loss.models.pretrain import check_weights_option, resolve_weights
from gp_loss.tasks.base import (SCHEDULES, TaskInfo, TrainingRun, TrainOutcome, epoch_batches, fidelity_steps,
                                lr_schedule)
from gp_loss.tasks.detection.data import DetectionData, DetectionSplit, load_detection_data
from gp_loss.tasks.detection.models import (BACKBONES, DETECTORS, PAPBaseline, build_detector, category_index,
                                            detector_spec, fpn_levels, set_genome, set_pap, target_labels)
from gp_loss.tasks.detection.pap_settings import pap_settings
from gp_loss.tasks.detection.assignment import CANDIDATE_REGIONS, DEFAULT_ALPHA, check_assignment, make_assigner

PRECISIONS = ("fp32", "bf16")
# Detections per image at a proxy's collapse check (DetectionTask.train's collapse_step).
COLLAPSE_DETECTIONS = 10
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
# Upper bounds of the integer options: far above any proxy, below what exhausts memory.
LIMITS = {"image_size": 2048, "canvases": 100_000, "max_digits": 50, "batch_size": 4096, "eval_batch_size": 4096,
          "proxy_steps": 10_000_000, "final_steps": 10_000_000, "detections_per_image": 10_000}


@contextlib.contextmanager
def detections_capped(model: torch.nn.Module, count: int):
    """Within the block, ``model`` (a torchvision detector) keeps at most ``count`` detections per image."""
    owner = getattr(model, "roi_heads", model)  # two-stage detectors keep the limit on their RoI heads
    kept = owner.detections_per_img
    owner.detections_per_img = min(kept, count)
    try:
        yield
    finally:
        owner.detections_per_img = kept


@dataclass(frozen=True)
class DetectionLoss:
    """What trains the detector: a genome (``None``: torchvision's own losses), and optionally
    torchvision's coordinate loss (``"l1"``, ``"smooth_l1"``) on the box deltas in place of ``reg``;
    or Parameterized AP Loss (``pap``, with ``genome`` and ``box_loss`` left ``None``), which
    replaces every searchable branch (:func:`~gp_loss.tasks.detection.models.set_pap`):
    ``pap_block_h1`` detaches the rank's H1 term (the paper's default), ``pap_top_k`` bounds
    each ranking's candidates, ``pap_per_image`` ranks within each image."""

    genome: Genome | None
    box_loss: str | None = None
    pap: PAPParameters | None = None
    pap_block_h1: bool = True
    pap_top_k: int = DEFAULT_TOP_K
    pap_per_image: bool = False

    def __post_init__(self):
        if self.pap is None:
            return
        if self.genome is not None or self.box_loss is not None:
            raise GpLossError("PAP-Loss replaces every loss branch of the detector: give pap without a genome "
                              "or box loss")
        pap_settings(self.pap, self.pap_top_k, self.pap_block_h1, self.pap_per_image)  # checks them

    def formulas(self) -> dict[str, str]:
        """What trains each branch, as text: the genome's formulas, or ``{"pap": ...}``."""
        if self.pap is not None:
            return {"pap": pap_text(self.pap, self.pap_block_h1, self.pap_per_image, self.pap_top_k)}
        if self.genome is None:
            return {}
        texts = self.genome.formulas()
        if self.box_loss is not None and BOX_BRANCH in texts:
            texts[BOX_BRANCH] = f"torchvision {self.box_loss} on the box deltas"
        return texts


def pap_text(params: PAPParameters, block_h1: bool = True, per_image: bool = False,
             top_k: int = DEFAULT_TOP_K) -> str:
    """``"PAP-Loss, identity substitutions"`` and the like: what a PAP loss trains with, in words."""
    if params.theta is not None and params.name not in ("identity", "linear", "searched_retinanet_coco"):
        what = f"searched substitutions ({params.name}), gradient scale {params.grad_scale:.4g}"
    else:
        what = f"{params.name} substitutions" + (f", gradient scale {params.grad_scale:.4g}"
                                                 if params.grad_scale != 1.0 else "")
    extras = [] if block_h1 else ["H1 gradient not blocked (ablation)"]
    if per_image:
        extras.append("ranked per image")
    if top_k != DEFAULT_TOP_K:
        extras.append(f"top {top_k}")
    return f"PAP-Loss, {what}" + "".join(f"; {e}" for e in extras)


TORCHVISION_TEXT = "torchvision's own loss code"
# The branch a baseline's coordinate box loss replaces (FCOS and RetinaNet name their box branch so).
BOX_BRANCH = "reg"


@dataclass(frozen=True)
class DetectionOptions:
    """Settings of the detection task (all JSON-able; part of the run's configuration)."""

    data: str = "digits"            # "digits" (built in) or a COCO instances JSON
    val_data: str = ""              # a validation instances JSON; "": a seeded val_fraction of data
    model: str = "fcos"             # fcos, retinanet, fasterrcnn
    backbone: str = "small"         # small (CPU scale), resnet18, resnet34, resnet50
    weights: str = "pretrained"     # "pretrained" (small: the shipped backbone), "none" (random init) or a file
    image_size: int = 96            # images are letterboxed to this square
    canvases: int = 480             # built-in data: canvases drawn (training + validation)
    max_digits: int = 3             # built-in data: digits per canvas, 1 to this
    data_seed: int = 0              # built-in data: the canvases drawn
    split_seed: int = 0             # the seeded validation split
    val_fraction: float = 0.25
    proxy_images: int = 0           # training images a proxy training draws from (0: all)
    batch_size: int = 8
    lr: float = 0.01                # SGD, momentum 0.9, weight decay 1e-4, linear warm-up
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_steps: int = 50          # linear warm-up (at most a quarter of a training)
    schedule: str = "cosine"        # after the warm-up: "cosine" (decay to 0) or "constant"
    proxy_steps: int = 200          # search fitness: validation metric after these steps
    final_steps: int = 400          # reported: validation metric after these steps
    max_grad_norm: float = 0.0      # clip the gradient norm at this (0: no clipping)
    precision: str = "fp32"         # "bf16": forward pass and loss under bf16 autocast
    metric: str = "AP"              # the fitness: AP, AP50, AP75, APs, APm, APl
    score_thresh: float = 0.05      # detections kept for evaluation
    detections_per_image: int = 100
    eval_batch_size: int = 16
    # HPS-Det's dynamic sample assignment (FCOS, RetinaNet; gp_loss/tasks/detection/assignment.py):
    assignment: str = "default"     # "default" (the detector's own) or "dynamic"
    positives: list = field(default_factory=list)  # dynamic: positives per bin (levels x aspect bins, or aspect bins)
    aspect_bins: int = 3            # dynamic: aspect-ratio bins, 1, 3 or 5
    assignment_alpha: float = DEFAULT_ALPHA  # dynamic: cost = focal + alpha * GIoU loss
    assignment_candidates: str = "centre"  # dynamic FCOS: points near the box centre ("centre") or in it ("box")
    # Whether the task's data carries instance masks (the instance_segmentation task's options say so).
    has_masks: ClassVar[bool] = False

    def check(self) -> None:
        """Raise :class:`GpLossError` naming the first bad value."""
        from pathlib import Path

        check_numbers(self, LIMITS, "task option ")
        if self.image_size < 32:
            raise GpLossError(f"task option image_size must be at least 32 pixels, got {self.image_size}")
        for name in ("data_seed", "split_seed"):
            if not 0 <= getattr(self, name) <= 2**32 - 1:
                raise GpLossError(f"task option {name} must be in [0, 2**32 - 1], got {getattr(self, name)}")
        for name in ("proxy_images", "warmup_steps"):
            if getattr(self, name) < 0:
                raise GpLossError(f"task option {name} must be 0 or more, got {getattr(self, name)}")
        if not 0 < self.val_fraction < 1:
            raise GpLossError(f"task option val_fraction must be in (0, 1), got {self.val_fraction}")
        if not self.lr > 0:
            raise GpLossError(f"task option lr must be positive, got {self.lr}")
        for name in ("momentum", "score_thresh"):
            if not 0 <= getattr(self, name) < 1:
                raise GpLossError(f"task option {name} must be in [0, 1), got {getattr(self, name)}")
        for name in ("weight_decay", "max_grad_norm"):
            if getattr(self, name) < 0:
                raise GpLossError(f"task option {name} must be 0 or more, got {getattr(self, name)}")
        for name, allowed in (("model", DETECTORS), ("backbone", BACKBONES), ("precision", PRECISIONS),
                              ("metric", METRICS), ("schedule", SCHEDULES)):
            if getattr(self, name) not in allowed:
                raise GpLossError(f"task option {name} must be one of {', '.join(allowed)}, "
                                  f"got {getattr(self, name)!r}")
        for name in ("data", "val_data"):
            value = getattr(self, name)
            if value in ("", "digits") and (name == "data" or value == ""):
                continue
            if not Path(value).is_file():
                raise GpLossError(f"{name} {value!r} is not a file: give a COCO instances JSON"
                                  + (" or 'digits' (built in)" if name == "data" else ""))
        if self.data == "digits" and self.val_data:
            raise GpLossError("val_data is a COCO file for COCO data: the built-in digits split themselves "
                              "(val_fraction)")
        check_weights_option(self.weights)
        if DETECTORS[self.model].masks and not self.has_masks:
            raise GpLossError(f"model {self.model} trains on instance masks: use the instance_segmentation task "
                              f"(--task instance_segmentation), or fasterrcnn for boxes")
        if self.assignment_candidates not in CANDIDATE_REGIONS:
            raise GpLossError(f"task option assignment_candidates must be one of {', '.join(CANDIDATE_REGIONS)}, "
                              f"got {self.assignment_candidates!r}")
        check_assignment(self.assignment, self.positives, self.aspect_bins, self.assignment_alpha, self.model,
                         fpn_levels(self.backbone))

    @classmethod
    def from_dict(cls, data: dict) -> "DetectionOptions":
        """From a dict of option fields (unknown names are an error naming the known ones)."""
        return options_from_dict(cls, data, "detection task option")


def layout_of(options: DetectionOptions) -> dict[str, str]:
    """The loss branches of ``options.model``, name -> kind."""
    return dict(DETECTORS[options.model].branches)


def baseline_texts(options: DetectionOptions) -> dict[str, dict[str, str]]:
    """Baseline name -> branch -> formula (or what trains it, for torchvision's own code), for ``options.model``."""
    detector = DETECTORS[options.model]
    texts = {}
    for name, spec in detector.baselines.items():
        if spec is None:
            texts[name] = {branch: TORCHVISION_TEXT for branch in detector.branches}
            continue
        if isinstance(spec, PAPBaseline):  # one loss for every branch
            texts[name] = {branch: pap_text(spec.params(), spec.block_h1) for branch in detector.branches}
            continue
        losses, box_loss = spec
        texts[name] = {branch: PAPER_LOSSES[loss].formula for branch, loss in losses.items()}
        if box_loss is not None:  # the box loss trains the boxes in place of the box branch's formula
            texts[name][BOX_BRANCH] = f"torchvision {box_loss} on the box deltas"
    return texts


def baseline_loss(model: str, name: str) -> DetectionLoss:
    """The loss of baseline ``name`` for detector ``model``."""
    detector = detector_spec(model)
    table = detector.baselines
    if name not in table:
        raise GpLossError(f"unknown baseline {name!r} for {model}; known: {', '.join(table)}")
    spec = table[name]
    if spec is None:
        return DetectionLoss(None)
    if isinstance(spec, PAPBaseline):
        return DetectionLoss(None, pap=spec.params(), pap_block_h1=spec.block_h1)
    losses, box_loss = spec
    layout = detector.branches
    return DetectionLoss(Genome.from_formulas((b, layout[b], PAPER_LOSSES[loss].formula) for b, loss in losses.items()),
                         box_loss)


class DetectionTask:
    """Train a torchvision detector under a candidate loss on ``device``; metric = COCO ``options.metric``."""

    info: TaskInfo  # the registry's record (INFO below; a subclass task's own)

    def __init__(self, options: DetectionOptions = DetectionOptions(), device: torch.device = torch.device("cpu")):
        options.check()
        self.options = options
        self.device = torch.device(device)
        self.data = self.load_data()
        self.layout = self.info.layout(options)

    def load_data(self) -> DetectionData:
        """The options' data on the task's device."""
        o = self.options
        return load_detection_data(o.data, o.val_data, o.image_size, o.canvases, o.max_digits, o.data_seed,
                                   o.split_seed, o.val_fraction, self.device)

    # -- losses ----------------------------------------------------------------------
    def baseline(self, name: str) -> DetectionLoss:
        """The loss of the baseline ``name`` (:attr:`~gp_loss.tasks.detection.DetectorSpec.baselines`)."""
        return baseline_loss(self.options.model, name)

    def _loss(self, loss: Genome | DetectionLoss | str | None) -> DetectionLoss:
        if isinstance(loss, str):
            return self.baseline(loss)
        if isinstance(loss, DetectionLoss):
            return loss
        return DetectionLoss(loss)

    def build(self, loss: Genome | DetectionLoss | str | None, seed: int) -> torch.nn.Module:
        """A fresh detector initialised from ``seed`` (on the CPU, then moved: the same weights on every device)."""
        o = self.options
        spec = self._loss(loss)
        weights = resolve_weights(o.weights, "detection", o.backbone == "small")
        torch.manual_seed(seed)
        model = build_detector(o.model, self.data.num_classes, backbone=o.backbone, image_size=o.image_size,
                               genome=spec.genome, weights=weights, score_thresh=o.score_thresh,
                               detections_per_img=o.detections_per_image,
                               assigner=make_assigner(o.assignment, o.positives, o.aspect_bins, o.assignment_alpha,
                                                      fpn_levels(o.backbone), o.assignment_candidates))
        if spec.box_loss is not None:
            set_genome(model, spec.genome, spec.box_loss)
        if spec.pap is not None:
            set_pap(model, spec.pap, top_k=spec.pap_top_k, block_h1_gradient=spec.pap_block_h1,
                    per_image=spec.pap_per_image)
        return model.to(self.device)

    # -- training ----------------------------------------------------------------------
    def batch_targets(self, split: DetectionSplit, index: list[int]) -> tuple[list[torch.Tensor], list[dict]]:
        """The images ``index`` of ``split`` (3×S×S floats each) and the detector's targets (``boxes``,
        ``labels``)."""
        images, boxes, classes = split.batch(index)
        return images, [{"boxes": b, "labels": target_labels(self.options.model, c)} for b, c in zip(boxes, classes)]

    def train(self, loss: Genome | DetectionLoss | str | None, seed: int, steps: int,
              time_limit_s: float | None = None, collapse_step: int = 0) -> TrainOutcome:
        """Train a fresh detector with ``seed`` for ``steps`` SGD steps; the validation metric.

        The total loss is the sum of the detector's loss terms (FCOS's centerness term
        included, as torchvision computes it; with PAP-Loss its terms ``pap``, or ``rpn_pap`` and
        ``rcnn_pap``). Training stops at the first non-finite term,
        naming its branch (AutoLoss-Zero's early stop), at ``time_limit_s`` (evaluation
        included), or when the loss raises; each scores 0 with its reason. After
        ``collapse_step`` steps (0: never) the detector is evaluated once: if its metric is still 0,
        what a detector that finds nothing scores, training stops with status ``"collapsed"``,
        scored with the metrics at that point.
        """
        collapse_step = collapse_step if 0 < collapse_step < steps else 0
        o = self.options
        run = TrainingRun(self.device, time_limit_s)
        train = self.data.train
        pool = len(train) if o.proxy_images == 0 else min(o.proxy_images, len(train))
        order = torch.Generator().manual_seed(seed)
        names = DETECTORS[o.model].loss_terms
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=o.precision == "bf16")
        try:
            model = self.build(loss, seed)
            model.train()
            optimizer = torch.optim.SGD(model.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
            schedule = lr_schedule(optimizer, o.schedule, steps, o.warmup_steps)
            for index in epoch_batches(pool, o.batch_size, steps, order):
                images, targets = self.batch_targets(train, index)
                with autocast:
                    loss_dict = model(images, targets)
                terms = {names.get(key) or key: value.float() for key, value in loss_dict.items()}
                if (end := run.step(sum(terms.values()), terms, optimizer, o.max_grad_norm, schedule)) is not None:
                    return end
                if run.steps == collapse_step and (end := self._collapsed(model, run)) is not None:
                    return end
            if (end := run.finished()) is not None:
                return end
            metrics = self.evaluate(model)
        except GpLossError:
            raise
        except Exception as err:
            return run.failed(err)
        return run.scored(metrics, o.metric)

    def _collapsed(self, model: torch.nn.Module, run: TrainingRun) -> TrainOutcome | None:
        """The outcome to stop with if ``model``'s metric is still 0 (it finds nothing), else ``None``.

        Evaluated with at most :data:`COLLAPSE_DETECTIONS` detections per image: a detector early in
        training keeps the most (its class scores are all near 1/C), and any AP above 0 shows in fewer.
        """
        def evaluate() -> dict[str, float | None]:
            with detections_capped(model, COLLAPSE_DETECTIONS):
                return self.evaluate(model)
        return run.collapsed(evaluate, self.options.metric, 0.0, "a detector that finds nothing")

    @torch.no_grad()
    def predictions(self, model: torch.nn.Module) -> Iterator[tuple[list[int], list[dict[str, torch.Tensor]]]]:
        """``model``'s outputs on the validation split in batches: ``(index, outputs)``, the images' rows and
        torchvision's detections of each (``labels`` mapped to 0..C-1), checked finite. The model is in
        evaluation mode while the batches are taken."""
        o = self.options
        val = self.data.val
        model.eval()
        try:
            for at in range(0, len(val), o.eval_batch_size):
                index = list(range(at, min(at + o.eval_batch_size, len(val))))
                images, _, _ = val.batch(index)
                outputs = model(images)
                for out in outputs:
                    if not torch.isfinite(out["boxes"]).all() or not torch.isfinite(out["scores"]).all():
                        raise FloatingPointError("non-finite boxes or scores after training")
                    out["labels"] = category_index(o.model, out["labels"])
                yield index, outputs
        finally:
            model.train()

    def evaluate(self, model: torch.nn.Module) -> dict[str, float | None]:
        """COCO metrics of ``model`` on the validation split (boxes mapped back to the original images)."""
        from gp_loss.metrics.detection import coco_metrics, to_coco_detections

        val = self.data.val
        detections: list[dict] = []
        for index, outputs in self.predictions(model):
            detections += to_coco_detections(outputs, [val.image_ids[i] for i in index], val.scales[index],
                                             self.data.category_ids)
        return coco_metrics(self.data.ground_truth, detections, val.image_ids)

    def proxy_fitness(self, loss, seed: int, time_limit_s: float | None = None,
                      fidelity: float = 1.0) -> TrainOutcome:
        """Validation metric after ``fidelity`` × ``proxy_steps`` steps (at least one; successive halving
        trains a candidate first at a fraction of the proxy), the schedule scaled alike."""
        return self.train(loss, seed, fidelity_steps(self.options.proxy_steps, fidelity), time_limit_s)

    def final_score(self, loss, seed: int) -> TrainOutcome:
        return self.train(loss, seed, self.options.final_steps)

    def selection_score(self, loss, seed: int) -> TrainOutcome:
        """The final schedule's validation metric: the final score itself, this task having no test split."""
        return self.final_score(loss, seed)


INFO = TaskInfo(
    name="detection",
    summary="object detection with torchvision's FCOS, RetinaNet or Faster R-CNN (digit canvases built in, "
            "or a COCO instances JSON); metric: COCO AP",
    options=DetectionOptions,
    task_class=DetectionTask,
    branches=dict(DETECTORS[DetectionOptions.model].branches),  # the default detector's
    kinds=("bcls", "cls", "reg"),
    metric="AP",
    layout_of=layout_of,
    baseline_texts_of=baseline_texts,
    reference_baseline="fl_giou",
    final_split="validation",
    metric_of=lambda options: options.metric,
    proxy_option="proxy_steps",
    search_script="search_detection.py",
)
DetectionTask.info = INFO
