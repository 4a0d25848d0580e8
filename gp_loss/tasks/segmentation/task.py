"""Semantic segmentation as a search task: train a torchvision segmentation model under a candidate loss.

This is AutoLoss-Zero's first task (Li et al., CVPR 2022): a loss searched from scratch in
its operator set, on softmax probabilities ``yhat`` and one-hot labels ``y`` (both
N×C×H×W), reduced as ``sum(o) / (number of labelled pixels)``. Pixels labelled 255
(VOC's void, COCO's crowd regions, the letterbox padding) are left out of the loss and
of the metrics: ``yhat`` and ``y`` are 0 there, and the loss's own value there is dropped
before the sum, so neither its value nor its gradient depends on them.

Data (:mod:`.data`): the built-in digit canvases (per-pixel digit classes), a Pascal VOC
folder, or a COCO instances JSON, kept on the training device as uint8. Model
(:mod:`.models`): ``small`` (CPU scale) or one of torchvision's segmentation models.
Proxy training: ``proxy_steps`` optimizer steps, then the metrics on the validation split
at its original resolution; fitness = ``metric`` (mIoU by default; BF1, boundary IoU,
FWIoU and the pixel accuracies can be targeted instead, as Auto Seg-Loss, Li et al.,
ICLR 2021, targets them). Training stops at the first non-finite loss (AutoLoss-Zero's
early stop), and a proxy training whose metric a third of the way in (``collapse_check``)
is no better than predicting one class everywhere stops there, scored with the metrics at
that point (see :meth:`SegmentationTask.train`). The final score retrains for ``final_steps``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gp_loss.errors import GpLossError
from gp_loss.field_types import check_numbers, options_from_dict
from gp_loss.language.compile import compile_loss
from gp_loss.language.genome import Genome
from gp_loss.metrics.segmentation import METRIC_NAMES, SegmentationMeter
from gp_loss.paper_losses import PAPER_LOSSES
from gp_loss.models.pretrain import check_weights_option, resolve_weights
from gp_loss.tasks.base import (SCHEDULES, TaskInfo, TrainingRun, TrainOutcome, check_collapse_check, epoch_batches,
                                lr_schedule, proxy_steps_and_check)
from gp_loss.tasks.segmentation.data import SegmentationData, SegmentationSplit, load_segmentation_data
from gp_loss.tasks.segmentation.models import MODELS, build_model

IGNORE = 255
BRANCH = "seg"
PRECISIONS = ("fp32", "bf16")
OPTIMIZERS = ("adam", "sgd")
# Upper bounds of the integer options: far above any proxy, below what exhausts memory.
LIMITS = {"image_size": 4096, "canvases": 100_000, "max_digits": 50, "batch_size": 4096, "eval_batch_size": 4096,
          "proxy_steps": 10_000_000, "final_steps": 10_000_000}
# Baselines by name: the AutoLoss-Zero-language formulas of PAPER_LOSSES on the ``seg`` branch.
BASELINES = {"ce": "seg_ce", "dice": "seg_dice", "ce_dice": "seg_ce_dice", "focal": "seg_focal"}


def metric_name(text: str) -> str:
    """The metric called ``text`` in any letter case (``bf1`` -> ``BF1``), or a one-line error naming the known ones."""
    for name in METRIC_NAMES:
        if name.lower() == str(text).lower():
            return name
    raise GpLossError(f"task option metric must be one of {', '.join(METRIC_NAMES)} (any case), got {text!r}")


@dataclass(frozen=True)
class SegmentationOptions:
    """Settings of the segmentation task (all JSON-able; part of the run's configuration)."""

    data: str = "digits"            # "digits" (built in), a Pascal VOC folder or a COCO instances JSON
    val_data: str = ""              # COCO: a validation instances JSON; "": a seeded val_fraction of data
    train_split: str = "train"      # VOC: ImageSets/Segmentation/<name>.txt of the training images
    val_split: str = "val"          # VOC: ... of the validation images
    num_classes: int = 0            # 0: from the data (VOC 21, COCO 1 + categories, digits 11)
    model: str = "small"            # small (CPU scale) or a torchvision segmentation model
    weights: str = "pretrained"     # "pretrained" (small: the shipped backbone), "none" (random init) or a file
    image_size: int = 96            # images are letterboxed to this square for training
    canvases: int = 400             # built-in data: canvases drawn (training + validation)
    max_digits: int = 3             # built-in data: digits per canvas, 1 to this
    data_seed: int = 0              # built-in data: the canvases drawn
    split_seed: int = 0             # the seeded validation split
    val_fraction: float = 0.25
    batch_size: int = 8
    optimizer: str = "adam"         # adam, or sgd (momentum 0.9, weight decay)
    lr: float = 3e-3
    backbone_lr: float = 0.1        # the backbone's rate as a fraction of lr when it starts from weights
    weight_decay: float = 0.0
    schedule: str = "cosine"        # learning rate: "cosine" (linear warm-up, cosine decay to 0) or "constant"
    warmup_steps: int = 20          # cosine: linear warm-up steps (scaled with a shortened proxy)
    proxy_steps: int = 200          # search fitness: validation metric after these steps
    final_steps: int = 400          # reported: validation metric after these steps
    collapse_check: float = 1 / 3   # proxy: stop at this fraction of proxy_steps if no better than one class everywhere
    max_grad_norm: float = 0.0      # clip the gradient norm at this (0: no clipping)
    precision: str = "fp32"         # "bf16": forward pass and loss under bf16 autocast
    metric: str = "mIoU"            # the fitness: mIoU, FWIoU, mAcc, aAcc, BIoU, BF1 (any case)
    boundary_tolerance: int = 2     # BF1 and boundary IoU: tolerance in pixels of the original images
    eval_batch_size: int = 16

    def check(self) -> None:
        """Raise :class:`GpLossError` naming the first bad value."""
        from pathlib import Path

        check_numbers(self, LIMITS, "task option ")
        if self.image_size < 16:
            raise GpLossError(f"task option image_size must be at least 16 pixels, got {self.image_size}")
        for name in ("data_seed", "split_seed"):
            if not 0 <= getattr(self, name) <= 2**32 - 1:
                raise GpLossError(f"task option {name} must be in [0, 2**32 - 1], got {getattr(self, name)}")
        if not 0 <= self.num_classes <= IGNORE - 1:
            raise GpLossError(f"task option num_classes must be 0 (from the data) or 1 to {IGNORE - 1} "
                              f"({IGNORE} marks ignored pixels), got {self.num_classes}")
        if not 0 <= self.boundary_tolerance <= 100:
            raise GpLossError(f"task option boundary_tolerance must be 0 to 100 pixels, got {self.boundary_tolerance}")
        check_collapse_check(self.collapse_check)
        if not 0 < self.val_fraction < 1:
            raise GpLossError(f"task option val_fraction must be in (0, 1), got {self.val_fraction}")
        if not self.lr > 0:
            raise GpLossError(f"task option lr must be positive, got {self.lr}")
        if not 0 <= self.backbone_lr <= 1:
            raise GpLossError(f"task option backbone_lr must be from 0 (a frozen backbone) to 1, "
                              f"got {self.backbone_lr}")
        for name in ("weight_decay", "max_grad_norm", "warmup_steps"):
            if getattr(self, name) < 0:
                raise GpLossError(f"task option {name} must be 0 or more, got {getattr(self, name)}")
        for name, allowed in (("model", MODELS), ("precision", PRECISIONS), ("optimizer", OPTIMIZERS),
                              ("schedule", SCHEDULES)):
            if getattr(self, name) not in allowed:
                raise GpLossError(f"task option {name} must be one of {', '.join(allowed)}, "
                                  f"got {getattr(self, name)!r}")
        metric_name(self.metric)
        if self.data != "digits" and not Path(self.data).exists():
            raise GpLossError(f"data {self.data!r} does not exist: give a Pascal VOC folder, a COCO instances "
                              f"JSON or 'digits' (built in)")
        if self.data != "digits" and Path(self.data).is_dir():
            # A VOC folder's structure, split files and file names are checked here, before a run
            # directory is made (every listed file is looked up; none is read).
            from gp_loss.data.voc import VOC_CLASSES, open_voc_split
            for split in (self.train_split, self.val_split):
                open_voc_split(self.data, split, self.num_classes or len(VOC_CLASSES))
        if self.val_data and not Path(self.val_data).is_file():
            raise GpLossError(f"val_data {self.val_data!r} is not a file: give a COCO instances JSON")
        check_weights_option(self.weights)

    @classmethod
    def from_dict(cls, data: dict) -> "SegmentationOptions":
        """From a dict of option fields (unknown names are an error naming the known ones)."""
        return options_from_dict(cls, data, "segmentation task option")


def branch_inputs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(yhat, y, labelled)`` of a ``zero`` branch from N×C×H×W logits and N×H×W labels (255: ignored).

    ``yhat``: softmax probabilities, ``y``: one-hot labels, both N×C×H×W and 0 at ignored
    pixels; ``labelled``: N×1×H×W bool. ``torch.where``, not a product with the mask: the
    gradient at an ignored pixel is then exactly 0, even where the loss's own is not finite.
    """
    num_classes = logits.shape[1]
    labelled = (labels != IGNORE)[:, None]
    probs = torch.softmax(logits.float(), 1)
    yhat = torch.where(labelled, probs, torch.zeros((), dtype=probs.dtype, device=probs.device))
    y = F.one_hot(torch.where(labelled[:, 0], labels, 0), num_classes).permute(0, 3, 1, 2).to(probs.dtype)
    return yhat, y * labelled, labelled


def labelled_mean(labelled: torch.Tensor):
    """The normaliser ``o -> sum of o over labelled pixels / their number`` (AutoLoss-Zero's sum / (N*H*W))."""
    count = labelled.sum().clamp(min=1)

    def normalise(o: torch.Tensor) -> torch.Tensor:
        return torch.where(labelled, o, torch.zeros((), dtype=o.dtype, device=o.device)).sum() / count
    return normalise


def loss_terms(genome: Genome):
    """``terms(logits N×C×H×W, labels N×H×W) -> {branch name: scalar loss}``, in the genome's branch order.

    Each branch is a ``zero`` loss on :func:`branch_inputs`, reduced by :func:`labelled_mean`.
    """
    for b in genome:
        if b.kind.name not in INFO.kinds:
            raise GpLossError(f"branch {b.name!r} has kind {b.kind.name}; segmentation takes "
                              f"{', '.join(INFO.kinds)} (AutoLoss-Zero's operators on N×C×H×W probabilities)")
    raws = [(b.name, compile_loss(b.kind, b.tree).raw) for b in genome]

    def terms(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        yhat, y, labelled = branch_inputs(logits, labels)
        normalise = labelled_mean(labelled)
        return {name: normalise(raw(yhat, y)) for name, raw in raws}
    return terms


class SegmentationTask:
    """Train a segmentation network under a candidate ``zero`` loss on ``device``; metric = ``options.metric``."""

    def __init__(self, options: SegmentationOptions = SegmentationOptions(),
                 device: torch.device = torch.device("cpu")):
        options.check()
        self.info = INFO
        self.options = options
        self.device = torch.device(device)
        self.metric = metric_name(options.metric)
        self._chance: tuple[float, int] | None = None
        o = options
        self.data: SegmentationData = load_segmentation_data(
            o.data, o.val_data, o.image_size, o.num_classes, o.canvases, o.max_digits, o.data_seed, o.split_seed,
            o.val_fraction, o.train_split, o.val_split, self.device)

    # -- losses ----------------------------------------------------------------------
    def baseline(self, name: str) -> Genome:
        """The genome of the baseline ``name`` (:data:`BASELINES`)."""
        if name not in BASELINES:
            raise GpLossError(f"unknown baseline {name!r}; known: {', '.join(BASELINES)}")
        return Genome.from_formulas([(BRANCH, "zero", PAPER_LOSSES[BASELINES[name]].formula)])

    # -- training ----------------------------------------------------------------------
    def build(self, seed: int) -> torch.nn.Module:
        """A fresh network initialised from ``seed`` (on the CPU, then moved: the same weights on every device)."""
        o = self.options
        torch.manual_seed(seed)
        weights = resolve_weights(o.weights, "segmentation", o.model == "small")
        return build_model(o.model, self.data.num_classes, weights).to(self.device)

    def parameter_groups(self, model: torch.nn.Module) -> list[dict]:
        """The optimizer's parameter groups: the backbone at ``backbone_lr`` × ``lr`` when it starts from
        weights, the rest (and a randomly initialised backbone) at ``lr``.

        Fine-tuning practice: a fresh head at full rate would otherwise drag pretrained features
        around while it is still random, and how far depends on the seed; at a tenth of the rate the
        features stay useful and the training's outcome varies much less from seed to seed.
        """
        o = self.options
        body = getattr(model, "backbone", None)  # torchvision's segmentation models and small have one
        if body is None or resolve_weights(o.weights, "segmentation", o.model == "small") is None \
                or o.backbone_lr == 1.0:
            return [{"params": list(model.parameters())}]
        backbone = list(body.parameters())
        inside = {id(p) for p in backbone}
        return [{"params": backbone, "lr": o.lr * o.backbone_lr},
                {"params": [p for p in model.parameters() if id(p) not in inside]}]

    def train(self, loss: Genome | str, seed: int, steps: int, time_limit_s: float | None = None,
              collapse_step: int = 0) -> TrainOutcome:
        """Train a fresh network with ``seed`` for ``steps`` steps; the validation metrics.

        The total loss is the sum of the branch terms. Training stops at the first non-finite
        term, naming its branch (AutoLoss-Zero's early stop), at ``time_limit_s`` (evaluation
        included), or when the loss raises; each scores 0 with its reason. After
        ``collapse_step`` steps (0: never) the network is evaluated once: if its metric is
        no better than the best constant prediction's (:meth:`chance`), training stops with
        status ``"collapsed"``, scored with the metrics at that point. Most random losses
        leave the network predicting the majority class (or noise) for good; a few learn
        late, and then too little to rank near the best (the README's segmentation
        section has the measurement), so the rest of their proxy is saved.
        """
        o = self.options
        run = TrainingRun(self.device, time_limit_s)
        collapse_step = collapse_step if 0 < collapse_step < steps else 0
        train = self.data.train
        order = torch.Generator().manual_seed(seed)
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=o.precision == "bf16")
        try:
            genome = self.baseline(loss) if isinstance(loss, str) else loss
            terms_of = loss_terms(genome)
            model = self.build(seed)
            model.train()
            groups = self.parameter_groups(model)
            if o.optimizer == "adam":
                optimizer = torch.optim.Adam(groups, lr=o.lr, weight_decay=o.weight_decay)
            else:
                optimizer = torch.optim.SGD(groups, lr=o.lr, momentum=0.9, weight_decay=o.weight_decay)
            schedule = lr_schedule(optimizer, o.schedule, steps, o.warmup_steps)
            for index in epoch_batches(len(train), o.batch_size, steps, order):
                images, labels = train.batch(index)
                with autocast:
                    logits = model(images)["out"]
                terms = terms_of(logits.float(), labels)
                if (end := run.step(sum(terms.values()), terms, optimizer, o.max_grad_norm, schedule)) is not None:
                    return end
                if run.steps == collapse_step and (end := self._collapsed(model, run)) is not None:
                    return end
            if (end := run.finished()) is not None:
                return end
            metrics = self.evaluate(model, self.data.val)
        except GpLossError:
            raise
        except Exception as err:
            return run.failed(err)
        return run.scored(metrics, self.metric)

    def _collapsed(self, model: torch.nn.Module, run: TrainingRun) -> TrainOutcome | None:
        """The outcome to stop with if ``model``'s metric is no better than :meth:`chance`'s, else ``None``."""
        chance, label = self.chance()
        return run.collapsed(lambda: self.evaluate(model, self.data.val), self.metric, chance,
                             f"predicting class {label} everywhere")

    def chance(self) -> tuple[float, int]:
        """The best validation ``metric`` of a constant prediction, and its class (computed once).

        The level a proxy training must pass by its collapse check (:meth:`train`): as the
        model-optimisation filter judges a simulation, a network no better than one class
        everywhere has learned nothing yet.
        """
        if self._chance is None:
            best = (-1.0, 0)
            for c in range(self.data.num_classes):
                meter = SegmentationMeter(self.data.num_classes, IGNORE, self.options.boundary_tolerance, self.device)
                for target in self.data.val.targets:
                    meter.update(torch.full_like(target, c), target)
                best = max(best, (meter.compute().get(self.metric) or 0.0, -c))
            self._chance = (best[0], -best[1])
        return self._chance

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, split: SegmentationSplit) -> dict[str, float | None]:
        """The metrics of ``model`` on ``split``, at each image's original resolution.

        Each image's logits are cropped to its letterboxed content and resized (bilinear) to
        its original label map before the arg-max, as segmentation benchmarks evaluate.
        """
        o = self.options
        meter = SegmentationMeter(self.data.num_classes, IGNORE, o.boundary_tolerance, self.device)
        model.eval()
        try:
            for at in range(0, len(split), o.eval_batch_size):
                index = list(range(at, min(at + o.eval_batch_size, len(split))))
                images, _ = split.batch(index)
                logits = model(images)["out"].float()
                if not torch.isfinite(logits).all():
                    raise FloatingPointError("non-finite logits after training")
                for row, i in enumerate(index):
                    target = split.targets[i]
                    rows, cols = split.content[i]
                    image_logits = logits[row:row + 1, :, :rows, :cols]
                    if (rows, cols) != tuple(target.shape):
                        image_logits = F.interpolate(image_logits, size=tuple(target.shape), mode="bilinear",
                                                     align_corners=False)
                    meter.update(image_logits[0].argmax(0), target)
        finally:
            model.train()
        return meter.compute()

    def proxy_fitness(self, loss, seed: int, time_limit_s: float | None = None,
                      fidelity: float = 1.0) -> TrainOutcome:
        """Validation metric after ``fidelity`` × ``proxy_steps`` steps (at least one; successive halving
        trains a candidate first at a fraction of the proxy), the schedule and collapse check scaled alike."""
        steps, check = proxy_steps_and_check(self.options.proxy_steps, fidelity, self.options.collapse_check)
        return self.train(loss, seed, steps, time_limit_s, collapse_step=check)

    def final_score(self, loss, seed: int) -> TrainOutcome:
        return self.train(loss, seed, self.options.final_steps)

    def selection_score(self, loss, seed: int) -> TrainOutcome:
        """The final schedule's validation metric: the final score itself, this task having no test split."""
        return self.final_score(loss, seed)


INFO = TaskInfo(
    name="segmentation",
    summary="semantic segmentation with torchvision's segmentation models (digit canvases built in, a Pascal "
            "VOC folder or a COCO instances JSON); metric: mIoU (or BF1, boundary IoU, ...)",
    options=SegmentationOptions,
    task_class=SegmentationTask,
    branches={BRANCH: "zero"},
    kinds=("zero",),
    metric="mIoU",
    baseline_losses={name: {BRANCH: loss} for name, loss in BASELINES.items()},
    reference_baseline="ce",
    final_split="validation",
    metric_of=lambda options: metric_name(options.metric),
    proxy_option="proxy_steps",
    search_script="search_segmentation.py",
)
