"""Top-down pose estimation as a search task: AutoLoss-Zero's pose task (Li et al., CVPR 2022, Table 6).

Each ground-truth instance is cropped from its image (:mod:`.data`) and a SimpleBaseline
network (Xiao et al., "Simple Baselines for Human Pose Estimation and Tracking", ECCV 2018;
:mod:`.models`) predicts K keypoint heatmaps of the crop at a quarter of its resolution.
The searched branch is a ``heat`` loss (AutoLoss-Zero's operators; :mod:`primitives.heat`) of the
predicted heatmaps ``yhat``, the Gaussian target heatmaps ``y`` (:mod:`.heatmaps`) and the
keypoints' visibility weights ``w`` (1 where a keypoint is labelled and inside its crop, else 0,
with its target 0 there), each N×K×h×w, reduced as the kind's ``sum / (N*h*w)``. The baseline
``mse`` is SimpleBaseline's (and the paper's) squared error on the labelled keypoints' heatmaps,
``w * (yhat - y)**2``.

Metric: COCO's OKS AP (pycocotools' ``COCOeval``, ``iouType="keypoints"``) of the validation
instances, predicted on their ground-truth boxes; each prediction's keypoints are its heatmaps'
arg-maxes (quarter-cell shift) mapped back to the image, its score the mean of its peaks.
OKS sigmas: COCO's 17 person sigmas for COCO's person keypoints, else ``oks_sigmas`` (one
value for all keypoints, or K; default 0.05 each). Fitness: ``metric`` (AP by default; AP50
or AP75). The final score retrains for ``final_steps`` and is measured on the same split.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from gp_loss.errors import GpLossError
from gp_loss.field_types import check_numbers, options_from_dict
from gp_loss.kinds import kind_spec
from gp_loss.language.compile import compile_loss
from gp_loss.language.genome import Genome
from gp_loss.metrics.keypoints import keypoint_metrics
from gp_loss.paper_losses import PAPER_LOSSES
from gp_loss.tasks.base import (SCHEDULES, TaskInfo, TrainingRun, TrainOutcome, check_collapse_check, epoch_batches,
                                lr_schedule, proxy_steps_and_check)
from gp_loss.tasks.pose.data import PoseData, PoseSplit, load_pose_data, parse_sigmas
from gp_loss.tasks.pose.heatmaps import decode, encode
from gp_loss.tasks.pose.models import HEATMAP_STRIDE, MODELS, body_stride, build_model

BRANCH = "pose"
# Baselines by name: the loss-language formulas of PAPER_LOSSES on the ``pose`` branch.
BASELINES = {"mse": "heatmap_mse"}
FITNESS_METRICS = ("AP", "AP50", "AP75")
# Upper bounds of the integer options: far above any proxy, below what exhausts memory.
LIMITS = {"image_size": 4096, "canvases": 100_000, "max_digits": 50, "crop_height": 1024, "crop_width": 1024,
          "batch_size": 4096, "eval_batch_size": 4096, "proxy_steps": 10_000_000, "final_steps": 10_000_000}


@dataclass(frozen=True)
class PoseOptions:
    """Settings of the pose task (all JSON-able; part of the run's configuration)."""

    data: str = "digits"            # "digits" (built in) or a COCO keypoints JSON
    val_data: str = ""              # a validation keypoints JSON; "": a seeded val_fraction of data
    model: str = "small"            # small (CPU scale), resnet18, resnet34 or resnet50 under SimpleBaseline's head
    image_size: int = 128           # built-in data: canvas side in pixels
    canvases: int = 300             # built-in data: canvases drawn (training + validation)
    max_digits: int = 3             # built-in data: digits per canvas, 1 to this
    data_seed: int = 0              # built-in data: the canvases drawn
    split_seed: int = 0             # the seeded validation split
    val_fraction: float = 0.25
    crop_height: int = 64           # each instance's crop (SimpleBaseline: 256×192 for people)
    crop_width: int = 64
    box_scale: float = 1.25         # the box is enlarged this much around its centre before cropping
    heatmap_sigma: float = 1.0      # the target Gaussian's standard deviation, in heatmap cells
    oks_sigmas: str = ""            # one value, or K comma-separated; "": COCO's for its person, else 0.05 each
    batch_size: int = 32
    lr: float = 2e-3                # Adam
    weight_decay: float = 0.0
    schedule: str = "cosine"        # learning rate: "cosine" (linear warm-up, cosine decay to 0) or "constant"
    warmup_steps: int = 20
    proxy_steps: int = 150          # search fitness: validation metric after these steps
    collapse_check: float = 1 / 3   # proxy: stop at this fraction of proxy_steps if no better than a constant pose
    final_steps: int = 300          # reported: validation metric after these steps
    max_grad_norm: float = 0.0      # clip the gradient norm at this (0: no clipping)
    metric: str = "AP"              # the fitness: AP, AP50 or AP75 (OKS)
    eval_batch_size: int = 128

    def check(self) -> None:
        """Raise :class:`GpLossError` naming the first bad value."""
        from pathlib import Path

        check_numbers(self, LIMITS, "task option ")
        for name in ("data_seed", "split_seed"):
            if not 0 <= getattr(self, name) <= 2**32 - 1:
                raise GpLossError(f"task option {name} must be in [0, 2**32 - 1], got {getattr(self, name)}")
        if self.image_size < 32:
            raise GpLossError(f"task option image_size must be at least 32 pixels, got {self.image_size}")
        stride = body_stride(self.model) if self.model in MODELS else 16
        for name in ("crop_height", "crop_width"):
            if getattr(self, name) % stride:
                raise GpLossError(f"task option {name} must be a multiple of {stride} (the {self.model} backbone's "
                                  f"stride), got {getattr(self, name)}")
        if not 0 < self.val_fraction < 1:
            raise GpLossError(f"task option val_fraction must be in (0, 1), got {self.val_fraction}")
        check_collapse_check(self.collapse_check)
        if not 1 <= self.box_scale <= 4:
            raise GpLossError(f"task option box_scale must be from 1 to 4, got {self.box_scale}")
        if not 0.1 <= self.heatmap_sigma <= 32:
            raise GpLossError(f"task option heatmap_sigma must be from 0.1 to 32 heatmap cells, got "
                              f"{self.heatmap_sigma}")
        if not self.lr > 0:
            raise GpLossError(f"task option lr must be positive, got {self.lr}")
        for name in ("weight_decay", "max_grad_norm", "warmup_steps"):
            if getattr(self, name) < 0:
                raise GpLossError(f"task option {name} must be 0 or more, got {getattr(self, name)}")
        for name, allowed in (("model", MODELS), ("schedule", SCHEDULES), ("metric", FITNESS_METRICS)):
            if getattr(self, name) not in allowed:
                raise GpLossError(f"task option {name} must be one of {', '.join(allowed)}, "
                                  f"got {getattr(self, name)!r}")
        if self.data != "digits" and not Path(self.data).is_file():
            raise GpLossError(f"data {self.data!r} is not a file: give a COCO keypoints JSON or 'digits' (built in)")
        if self.val_data and not Path(self.val_data).is_file():
            raise GpLossError(f"val_data {self.val_data!r} is not a file: give a COCO keypoints JSON")
        if self.oks_sigmas.strip():  # the count is checked against K once the data is read
            parse_sigmas(self.oks_sigmas, len(self.oks_sigmas.split(",")), [])

    @classmethod
    def from_dict(cls, data: dict) -> "PoseOptions":
        """From a dict of option fields (unknown names are an error naming the known ones)."""
        return options_from_dict(cls, data, "pose task option")


def branch_inputs(heatmaps: torch.Tensor, targets: torch.Tensor,
                  weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(yhat, y, w)`` of a ``heat`` branch, each N×K×h×w, from heatmaps and targets (N×K×h×w) and weights N×K.

    ``y`` is 0 for a keypoint not labelled (SimpleBaseline's target there), so a loss that ignores
    ``w`` trains that keypoint's map towards 0 rather than towards a made-up place.
    """
    w = weights[:, :, None, None].to(heatmaps.dtype).expand_as(heatmaps)
    return heatmaps, targets * w, w


def loss_terms(genome: Genome):
    """``terms(heatmaps N×K×h×w, targets N×K×h×w, weights N×K) -> {branch name: scalar loss}``, in the genome's
    branch order, each a ``heat`` loss on :func:`branch_inputs` reduced by the kind's reduction."""
    for b in genome:
        if b.kind.name not in INFO.kinds:
            raise GpLossError(f"branch {b.name!r} has kind {b.kind.name}; pose takes {', '.join(INFO.kinds)} "
                              f"(AutoLoss-Zero's operators on N×K×H×W heatmaps, with visibility weights)")
    losses = [(b.name, compile_loss(b.kind, b.tree).raw, kind_spec(b.kind).reduction) for b in genome]

    def terms(heatmaps: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> dict[str, torch.Tensor]:
        inputs = branch_inputs(heatmaps, targets, weights)
        return {name: reduce(raw(*inputs)) for name, raw, reduce in losses}
    return terms


def to_image(points: torch.Tensor, split: PoseSplit, index: list[int]) -> torch.Tensor:
    """N×K×2 keypoints in crop pixels of instances ``index`` -> image pixels."""
    return split.origin[index][:, None] + points * split.scale[index][:, None]


class PoseTask:
    """Train a SimpleBaseline under a candidate ``heat`` loss on ``device``; metric = OKS ``options.metric``."""

    def __init__(self, options: PoseOptions = PoseOptions(), device: torch.device = torch.device("cpu")):
        options.check()
        self.info = INFO
        self.options = options
        self.device = torch.device(device)
        o = options
        self.data: PoseData = load_pose_data(o.data, o.val_data, o.image_size, o.canvases, o.max_digits, o.data_seed,
                                             o.split_seed, o.val_fraction, o.crop_height, o.crop_width, o.box_scale,
                                             self.device)
        self.keypoints = len(self.data.keypoint_names)
        self.sigmas = parse_sigmas(o.oks_sigmas, self.keypoints, self.data.keypoint_names)
        self._chance: float | None = None

    def baseline(self, name: str) -> Genome:
        """The genome of the baseline ``name`` (:data:`BASELINES`)."""
        if name not in BASELINES:
            raise GpLossError(f"unknown baseline {name!r}; known: {', '.join(BASELINES)}")
        return Genome.from_formulas([(BRANCH, "heat", PAPER_LOSSES[BASELINES[name]].formula)])

    def build(self, seed: int) -> torch.nn.Module:
        """A fresh network initialised from ``seed`` (on the CPU, then moved: the same weights on every device)."""
        torch.manual_seed(seed)
        return build_model(self.options.model, self.keypoints).to(self.device)

    def batch(self, split: PoseSplit, index: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Crops N×3×h×w in [0, 1], target heatmaps N×K×(h/4)×(w/4) and weights N×K of instances ``index``."""
        o = self.options
        crops = split.crops[index].float().div_(255.0)
        targets = encode(split.points[index], o.crop_height // HEATMAP_STRIDE, o.crop_width // HEATMAP_STRIDE,
                         HEATMAP_STRIDE, o.heatmap_sigma)
        return crops, targets, split.visible[index]

    def train(self, loss: Genome | str, seed: int, steps: int, time_limit_s: float | None = None,
              collapse_step: int = 0) -> TrainOutcome:
        """Train a fresh network with ``seed`` for ``steps`` steps; the validation metrics.

        The total loss is the sum of the branch terms. Training stops at the first non-finite
        term, naming its branch (AutoLoss-Zero's early stop), at ``time_limit_s`` (evaluation
        included), or when the loss raises; each scores 0 with its reason. After
        ``collapse_step`` steps (0: never) the network is evaluated once: if its metric is no
        better than one constant pose for every instance (:meth:`chance`), training stops with
        status ``"collapsed"``, scored with the metrics at that point: most random losses never
        move the heatmaps' peaks to the keypoints, and the rest of their proxy is saved.
        """
        collapse_step = collapse_step if 0 < collapse_step < steps else 0
        o = self.options
        run = TrainingRun(self.device, time_limit_s)
        train = self.data.train
        order = torch.Generator().manual_seed(seed)
        try:
            genome = self.baseline(loss) if isinstance(loss, str) else loss
            terms_of = loss_terms(genome)
            model = self.build(seed)
            model.train()
            optimizer = torch.optim.Adam(model.parameters(), lr=o.lr, weight_decay=o.weight_decay)
            schedule = lr_schedule(optimizer, o.schedule, steps, o.warmup_steps)
            for index in epoch_batches(len(train), o.batch_size, steps, order):
                crops, targets, weights = self.batch(train, index)
                terms = terms_of(model(crops).float(), targets, weights)
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
        return run.scored(metrics, o.metric)

    def _collapsed(self, model: torch.nn.Module, run: TrainingRun) -> TrainOutcome | None:
        """The outcome to stop with if ``model``'s metric is no better than :meth:`chance`, else ``None``."""
        return run.collapsed(lambda: self.evaluate(model, self.data.val), self.options.metric, self.chance(),
                             "one constant pose for every instance")

    def chance(self) -> float:
        """The validation metric of a constant prediction (computed once): every instance's keypoints at the
        training instances' mean place in the crop. What a proxy must beat by its collapse check."""
        if self._chance is None:
            train, val = self.data.train, self.data.val
            w = train.visible[..., None]
            mean = (train.points * w).sum(0) / w.sum(0).clamp(min=1)  # K×2 crop pixels
            index = list(range(len(val)))
            points = to_image(mean.expand(len(val), -1, -1), val, index)
            results = coco_results(points, torch.ones(len(val), self.keypoints), val.image_ids, val.category_ids)
            metrics = keypoint_metrics(self.data.ground_truth, results, self.sigmas)
            self._chance = metrics.get(self.options.metric) or 0.0
        return self._chance

    @torch.no_grad()
    def predict(self, model: torch.nn.Module, split: PoseSplit) -> list[dict]:
        """COCO keypoint results of ``model`` on every instance of ``split``, in image pixels."""
        o = self.options
        results = []
        model.eval()
        try:
            for at in range(0, len(split), o.eval_batch_size):
                index = list(range(at, min(at + o.eval_batch_size, len(split))))
                heatmaps = model(split.crops[index].float().div_(255.0)).float()
                if not torch.isfinite(heatmaps).all():
                    raise FloatingPointError("non-finite heatmaps after training")
                points, peaks = decode(heatmaps, HEATMAP_STRIDE)
                results += coco_results(to_image(points, split, index), peaks,
                                        [split.image_ids[i] for i in index], [split.category_ids[i] for i in index])
        finally:
            model.train()
        return results

    def evaluate(self, model: torch.nn.Module, split: PoseSplit) -> dict[str, float | None]:
        """OKS metrics (:data:`gp_loss.metrics.keypoints.METRIC_NAMES`) of ``model`` on the validation ``split``."""
        return keypoint_metrics(self.data.ground_truth, self.predict(model, split), self.sigmas)

    def proxy_fitness(self, loss, seed: int, time_limit_s: float | None = None,
                      fidelity: float = 1.0) -> TrainOutcome:
        """Validation metric after ``fidelity`` × ``proxy_steps`` steps (at least one), the schedule and the
        collapse check scaled alike."""
        steps, check = proxy_steps_and_check(self.options.proxy_steps, fidelity, self.options.collapse_check)
        return self.train(loss, seed, steps, time_limit_s, collapse_step=check)

    def final_score(self, loss, seed: int) -> TrainOutcome:
        return self.train(loss, seed, self.options.final_steps)

    def selection_score(self, loss, seed: int) -> TrainOutcome:
        """The final schedule's validation metric: the final score itself, this task having no test split."""
        return self.final_score(loss, seed)


def coco_results(points: torch.Tensor, peaks: torch.Tensor, image_ids: list[int],
                 category_ids: list[int]) -> list[dict]:
    """COCO keypoint results: N×K×2 image keypoints and N×K peaks -> one dict per instance, scored by the
    mean of its peaks."""
    pts, pk = points.cpu().tolist(), peaks.cpu()
    scores = pk.mean(1).tolist()
    return [{"image_id": image_id, "category_id": category_id, "score": score,
             "keypoints": [c for x, y in p for c in (x, y, 1.0)]}
            for p, score, image_id, category_id in zip(pts, scores, image_ids, category_ids)]


INFO = TaskInfo(
    name="pose",
    summary="top-down pose estimation with SimpleBaseline heatmaps on ground-truth boxes (digit canvases with ink "
            "keypoints built in, or a COCO keypoints JSON); metric: OKS AP",
    options=PoseOptions,
    task_class=PoseTask,
    branches={BRANCH: "heat"},
    kinds=("heat",),
    metric="AP",
    baseline_losses={name: {BRANCH: loss} for name, loss in BASELINES.items()},
    reference_baseline="mse",
    final_split="validation",
    metric_of=lambda options: options.metric,
    proxy_option="proxy_steps",
    search_script="search_pose.py",
)
