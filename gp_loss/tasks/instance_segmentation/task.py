"""Instance segmentation as a search task: torchvision's Mask R-CNN under candidate losses; fitness = mask AP.

AutoLoss-Zero's instance segmentation experiment (Li et al., CVPR 2022): Mask R-CNN (He et al.,
ICCV 2017) with five searched loss branches, Faster R-CNN's four and the mask
(:mod:`gp_loss.tasks.detection.maskrcnn`). The detection task's machinery
(:class:`~gp_loss.tasks.detection.task.DetectionTask`: proxy training, SGD with warm-up, the
non-finite stop, the options) with data that carries masks (:mod:`.data`), and pycocotools'
COCOeval twice on the validation split: ``segm`` (the fitness, ``metric``: AP, AP50, ...)
and ``bbox`` (recorded beside it as ``box_AP``, ``box_AP50``, ...).

Baselines by name: ``torchvision`` (its own losses: BCE objectness, smooth L1, CE, mask BCE),
``fl_giou`` (as Faster R-CNN's: BCE + GIoU in the RPN, CE + GIoU in the box head; mask BCE in
the loss language) and ``dice`` (``fl_giou``'s boxes, the mask trained by a soft Dice loss,
Milletari et al., 3DV 2016, written in code: it sums over each RoI's pixels, which the
element-wise ``bcls`` kind cannot).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from gp_loss.errors import GpLossError
from gp_loss.field_types import options_from_dict
from gp_loss.language.genome import Genome
from gp_loss.metrics.detection import METRIC_NAMES, coco_metrics
from gp_loss.paper_losses import PAPER_LOSSES
from gp_loss.tasks.base import TaskInfo, TrainOutcome, check_collapse_check, proxy_steps_and_check
from gp_loss.tasks.detection.maskrcnn import BRANCHES, check_mask_loss, set_mask_loss
from gp_loss.tasks.detection.models import DETECTORS
from gp_loss.tasks.detection.task import (TORCHVISION_TEXT, DetectionLoss, DetectionOptions, DetectionTask,
                                          baseline_loss)
from gp_loss.tasks.detection.data import DetectionData
from gp_loss.tasks.instance_segmentation.data import InstanceSplit, load_instance_data

MODEL = "maskrcnn"
BOX_PREFIX = "box_"  # the box metrics' names: COCO's (METRIC_NAMES) after this
MASK_THRESHOLD = 0.5  # a pixel belongs to a predicted instance where its mask probability is above this
DICE_TEXT = "soft Dice loss per RoI, 1 - (2 sum(p y) + 1) / (sum(p) + sum(y) + 1), p = sigmoid(x) (code)"


@dataclass(frozen=True)
class InstanceSegmentationLoss(DetectionLoss):
    """A :class:`~gp_loss.tasks.detection.task.DetectionLoss` for Mask R-CNN, and optionally a code loss
    (``mask_loss``: ``"dice"``) that trains the mask in place of the genome's ``mask`` branch."""

    mask_loss: str | None = None

    def __post_init__(self):
        super().__post_init__()
        check_mask_loss(self.mask_loss)

    def formulas(self) -> dict[str, str]:
        texts = super().formulas()
        if self.mask_loss is not None and "mask" in texts:
            texts["mask"] = DICE_TEXT
        return texts


@dataclass(frozen=True)
class InstanceSegmentationOptions(DetectionOptions):
    """The detection task's options (:class:`~gp_loss.tasks.detection.task.DetectionOptions`) for Mask R-CNN.

    Defaults sized for a CPU: the small backbone (its shipped pretrained body and FPN) on the
    96-pixel built-in canvases (README, "Instance segmentation").
    """

    model: str = MODEL              # Mask R-CNN only
    image_size: int = 96
    canvases: int = 480
    max_digits: int = 3
    batch_size: int = 4
    lr: float = 0.02
    warmup_steps: int = 50
    proxy_steps: int = 200          # search fitness: validation mask metric after these steps
    collapse_check: float = 1 / 3   # proxy: stop at this fraction of proxy_steps if its mask metric is still 0
    final_steps: int = 250
    metric: str = "AP"              # mask AP (COCOeval segm): AP, AP50, AP75, APs, APm, APl
    has_masks: ClassVar[bool] = True

    def check(self) -> None:
        """Raise :class:`GpLossError` naming the first bad value."""
        if self.model != MODEL:
            raise GpLossError(f"task option model must be {MODEL} for instance segmentation, got {self.model!r} "
                              f"(box detectors: the detection task)")
        check_collapse_check(self.collapse_check)
        if self.assignment != "default":
            raise GpLossError(f"task option assignment must be 'default' for Mask R-CNN (dynamic assignment is for "
                              f"FCOS and RetinaNet), got {self.assignment!r}")
        super().check()

    @classmethod
    def from_dict(cls, data: dict) -> "InstanceSegmentationOptions":
        """From a dict of option fields (unknown names are an error naming the known ones)."""
        return options_from_dict(cls, data, "instance_segmentation task option")


def layout_of(options: InstanceSegmentationOptions) -> dict[str, str]:
    """Mask R-CNN's five branches, name -> kind."""
    return dict(BRANCHES)


def baseline_texts(options: InstanceSegmentationOptions) -> dict[str, dict[str, str]]:
    """Baseline name -> branch -> formula (or what trains it)."""
    texts = {}
    for name, spec in DETECTORS[MODEL].baselines.items():
        if spec is None:
            texts[name] = {branch: TORCHVISION_TEXT for branch in BRANCHES}
            continue
        losses, mask_loss = spec
        texts[name] = {branch: PAPER_LOSSES[loss].formula for branch, loss in losses.items()}
        if mask_loss is not None:
            texts[name]["mask"] = DICE_TEXT
    return texts


def mask_baseline(name: str) -> InstanceSegmentationLoss:
    """The loss of baseline ``name`` (``torchvision``, ``fl_giou``, ``dice``)."""
    loss = baseline_loss(MODEL, name)  # a code mask loss comes in the coordinate-loss slot of the record
    return InstanceSegmentationLoss(loss.genome, mask_loss=loss.box_loss)


# ----------------------------------------------------------------------------- COCO evaluation

def to_coco_segmentations(masks: torch.Tensor, scores: torch.Tensor, categories: list[int], image_id: int,
                          content: tuple[int, int], size: tuple[int, int]) -> list[dict]:
    """One image's predicted masks as COCO results (RLE) in its original pixels.

    Args:
        masks: D×1×S×S mask probabilities on the letterboxed image (torchvision's pasted masks).
        scores: D detection scores.
        categories: D dataset category ids.
        image_id: the COCO image id.
        content: the (rows, cols) the image fills in the letterboxed square (the rest is padding).
        size: the image's original (height, width).
    """
    from pycocotools import mask as mask_utils

    if masks.shape[0] == 0:
        return []
    probs = masks[:, :, :content[0], :content[1]].float()
    if tuple(probs.shape[-2:]) != tuple(size):
        probs = F.interpolate(probs, size=size, mode="bilinear", align_corners=False)
    binary = np.asfortranarray((probs[:, 0] > MASK_THRESHOLD).cpu().numpy().transpose(1, 2, 0).astype(np.uint8))
    rles = mask_utils.encode(binary)  # H×W×D Fortran order -> D RLEs
    return [{"image_id": int(image_id), "category_id": int(c), "segmentation": rle, "score": float(s)}
            for rle, c, s in zip(rles, categories, scores.tolist())]


class InstanceSegmentationTask(DetectionTask):
    """Train torchvision's Mask R-CNN under a candidate loss on ``device``; metric = COCO mask ``options.metric``."""

    def __init__(self, options: InstanceSegmentationOptions = InstanceSegmentationOptions(),
                 device: torch.device = torch.device("cpu")):
        super().__init__(options, device)

    def load_data(self) -> DetectionData:
        """The options' data, with masks (:class:`InstanceSplit` splits), on the task's device."""
        o = self.options
        return load_instance_data(o.data, o.val_data, o.image_size, o.canvases, o.max_digits, o.data_seed,
                                  o.split_seed, o.val_fraction, self.device)

    def baseline(self, name: str) -> InstanceSegmentationLoss:
        """The loss of the baseline ``name`` (``torchvision``, ``fl_giou``, ``dice``)."""
        return mask_baseline(name)

    def build(self, loss: Genome | DetectionLoss | str | None, seed: int) -> torch.nn.Module:
        """A fresh Mask R-CNN initialised from ``seed``, its mask trained by ``loss``'s code mask loss if any."""
        spec = self._loss(loss)
        model = super().build(spec, seed)
        if isinstance(spec, InstanceSegmentationLoss) and spec.mask_loss is not None:
            set_mask_loss(model, spec.mask_loss)
        return model

    def proxy_fitness(self, loss, seed: int, time_limit_s: float | None = None,
                      fidelity: float = 1.0) -> TrainOutcome:
        """Validation mask metric after ``fidelity`` × ``proxy_steps`` steps (at least one), the schedule and the
        collapse check scaled alike: most random five-branch losses never find an instance, and the rest of
        their proxy is saved."""
        steps, check = proxy_steps_and_check(self.options.proxy_steps, fidelity, self.options.collapse_check)
        return self.train(loss, seed, steps, time_limit_s, collapse_step=check)

    def batch_targets(self, split: InstanceSplit, index: list[int]) -> tuple[list[torch.Tensor], list[dict]]:
        """The detection task's images and targets, each target with its ``masks`` (G×S×S uint8)."""
        images, targets = super().batch_targets(split, index)
        for t, i in zip(targets, index):
            t["masks"] = split.masks[i]
        return images, targets

    def evaluate(self, model: torch.nn.Module) -> dict[str, float | None]:
        """COCO mask metrics (``AP``, ``AP50``, ...) and box metrics (``box_AP``, ...) on the validation split."""
        from gp_loss.data.coco import letterbox_shape
        from gp_loss.metrics.detection import to_coco_detections

        o = self.options
        val = self.data.val
        boxes: list[dict] = []
        segments: list[dict] = []
        for index, outputs in self.predictions(model):
            for i, out in zip(index, outputs):
                categories = [self.data.category_ids[int(k)] for k in out["labels"].tolist()]
                h, w = val.sizes[i]
                segments += to_coco_segmentations(out["masks"], out["scores"], categories, val.image_ids[i],
                                                  letterbox_shape(h, w, o.image_size), (h, w))
            boxes += to_coco_detections(outputs, [val.image_ids[i] for i in index], val.scales[index],
                                        self.data.category_ids)
        metrics = coco_metrics(self.data.ground_truth, segments, val.image_ids, "segm")
        metrics.update({BOX_PREFIX + k: v for k, v in coco_metrics(self.data.ground_truth, boxes, val.image_ids).items()})
        return metrics


INFO = TaskInfo(
    name="instance_segmentation",
    summary="instance segmentation with torchvision's Mask R-CNN, five loss branches (digit canvases built in, or "
            "a COCO instances JSON with masks); metric: COCO mask AP",
    options=InstanceSegmentationOptions,
    task_class=InstanceSegmentationTask,
    branches=dict(BRANCHES),
    kinds=("bcls", "cls", "reg"),
    metric="AP",
    layout_of=layout_of,
    baseline_texts_of=baseline_texts,
    reference_baseline="fl_giou",
    final_split="validation",
    metric_of=lambda options: options.metric,
    proxy_option="proxy_steps",
    search_script="search_instance_segmentation.py",
)
InstanceSegmentationTask.info = INFO
