"""The instance segmentation task's data: the detection task's splits plus one mask per box.

Sources as the detection task's (:mod:`gp_loss.tasks.detection.data`): the built-in digit
canvases (their annotations carry RLE masks of each digit's visible ink) or a COCO instances
JSON whose annotations carry ``segmentation`` polygons or RLE (compressed or not), decoded as
pycocotools' ``annToMask`` does (:func:`~gp_loss.tasks.segmentation.data.annotation_mask`).
Every annotation's mask is decoded when the data loads (crowd regions included, which COCOeval
reads), so a malformed one is one :class:`~gp_loss.errors.GpLossError` naming the file and the
annotation id before any training; a polygon of fewer than 3 points is one too.

Masks are letterboxed as the images (:func:`~gp_loss.data.coco.letterbox`): resampled to the
image's letterboxed size (bilinear, then thresholded at 1/2) and padded at the bottom and right,
kept per image as G×S×S uint8 on the training device. Validation is measured by pycocotools
on the original annotations, with predicted masks mapped back to each image's own size.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from gp_loss.errors import GpLossError
from gp_loss.tasks.detection.data import DetectionSplit


@dataclass
class InstanceSplit(DetectionSplit):
    """A detection split (:class:`~gp_loss.tasks.detection.data.DetectionSplit`) with its masks.

    Attributes:
        masks: per image G×S×S uint8 (0/1), one per box of ``boxes``, in letterboxed pixels.
        sizes: per image its original (height, width).
    """

    masks: list[torch.Tensor]
    sizes: list[tuple[int, int]]


@dataclass
class InstanceData:
    """Training and validation splits, the categories, and the validation ground truth (a ``COCO`` object)."""

    train: InstanceSplit
    val: InstanceSplit
    category_ids: list[int]
    category_names: list[str]
    ground_truth: object

    @property
    def num_classes(self) -> int:
        return len(self.category_ids)


def instance_mask(annotation: dict, height: int, width: int, where: str) -> np.ndarray:
    """An annotation's ``segmentation`` as an H×W bool mask; one :class:`GpLossError` line where it is malformed.

    Args:
        annotation: a COCO annotation (``segmentation``: polygons ``[[x1, y1, ...], ...]``, or an RLE).
        height, width: its image's size.
        where: the file and annotation id, for the message.
    """
    from gp_loss.tasks.segmentation.data import annotation_mask

    segmentation = annotation.get("segmentation")
    if isinstance(segmentation, list):
        for k, polygon in enumerate(segmentation):
            if isinstance(polygon, list) and len(polygon) < 6:
                raise GpLossError(f"{where}: segmentation polygon {k} has {len(polygon)} coordinate(s); a polygon "
                                  f"needs at least 3 points (x1, y1, x2, y2, x3, y3): fix it or remove it")
    mask = annotation_mask(segmentation, height, width, where)
    return np.zeros((height, width), dtype=bool) if mask is None else mask


def _letterbox_mask(mask: np.ndarray, size: int) -> torch.Tensor:
    """H×W bool -> size×size uint8, placed as :func:`~gp_loss.data.coco.letterbox` places its image."""
    from gp_loss.data.coco import letterbox_shape

    h, w = mask.shape
    out = torch.zeros(size, size, dtype=torch.uint8)
    if (h, w) == (size, size):
        out[:] = torch.from_numpy(mask)
        return out
    nh, nw = letterbox_shape(h, w, size)
    resized = F.interpolate(torch.from_numpy(mask)[None, None].float(), size=(nh, nw), mode="bilinear",
                            align_corners=False)[0, 0]
    out[:nh, :nw] = (resized >= 0.5).to(torch.uint8)
    return out


def _split(dataset: dict, images: torch.Tensor, scales: torch.Tensor, rows: list[int],
           category_index: dict[int, int], source: str, size: int) -> InstanceSplit:
    """The images ``rows`` of ``dataset`` (its ``images`` order) with boxes, classes and masks."""
    by_image: dict[int, list[dict]] = {}
    for ann in dataset["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    entries = {im["id"]: im for im in dataset["images"]}
    ids = [dataset["images"][r]["id"] for r in rows]
    boxes, classes, masks, sizes, thin = [], [], [], [], []
    for r, image_id in zip(rows, ids):
        h, w = int(entries[image_id]["height"]), int(entries[image_id]["width"])
        sizes.append((h, w))
        anns = []
        for a in by_image.get(image_id, []):
            mask = instance_mask(a, h, w, f"{source}: annotation id {a.get('id')}")  # crowds too: COCOeval reads them
            if not a.get("iscrowd", 0):
                anns.append((a, mask))
        xywh = torch.tensor([a["bbox"] for a, _ in anns], dtype=torch.float32).reshape(-1, 4)
        xyxy = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1) * float(scales[r])
        # As the detection task: a box with no size once letterboxed is left out of training.
        keep = ((xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])).tolist()
        thin += [a["id"] for (a, _), k in zip(anns, keep) if not k]
        kept = [pair for pair, k in zip(anns, keep) if k]
        boxes.append(xyxy[torch.tensor(keep, dtype=torch.bool)])
        classes.append(torch.tensor([category_index[a["category_id"]] for a, _ in kept], dtype=torch.int64))
        masks.append(torch.stack([_letterbox_mask(m, size) for _, m in kept]) if kept
                     else torch.zeros(0, size, size, dtype=torch.uint8))
    if thin:
        print(f"gp-loss: warning: {source}: {len(thin)} box(es) with no width or height once letterboxed "
              f"left out of training (e.g. annotation id {thin[0]})", file=sys.stderr)
    return InstanceSplit(images[rows], boxes, classes, ids, scales[rows], masks, sizes)


@lru_cache(maxsize=2)
def _load_cpu(data: str, val_data: str, image_size: int, canvases: int, max_digits: int, data_seed: int,
              split_seed: int, val_fraction: float) -> InstanceData:
    """The splits on the CPU (cached: a worker builds the task once per configuration)."""
    from gp_loss.tasks.detection.data import read_splits

    def split(dataset, images, scales, rows, category_index, source) -> InstanceSplit:
        return _split(dataset, images, scales, rows, category_index, source, image_size)

    train, val, categories, ground_truth = read_splits(data, val_data, image_size, canvases, max_digits, data_seed,
                                                       split_seed, val_fraction, split)
    if not any(len(b) for b in train.boxes):
        raise GpLossError(f"{data}: the training split has no (non-crowd) annotation: nothing to train on")
    return InstanceData(train, val, [c["id"] for c in categories],
                        [str(c.get("name", c["id"])) for c in categories], ground_truth)


def load_instance_data(data: str, val_data: str, image_size: int, canvases: int, max_digits: int,
                       data_seed: int, split_seed: int, val_fraction: float, device: torch.device) -> InstanceData:
    """The task's data on ``device`` (see the module docstring)."""
    cpu = _load_cpu(data, val_data, image_size, canvases, max_digits, data_seed, split_seed, val_fraction)
    if device.type == "cpu":
        return cpu

    def move(s: InstanceSplit) -> InstanceSplit:
        return InstanceSplit(s.images.to(device), [b.to(device) for b in s.boxes], [c.to(device) for c in s.classes],
                             s.image_ids, s.scales, [m.to(device) for m in s.masks], s.sizes)
    return InstanceData(move(cpu.train), move(cpu.val), cpu.category_ids, cpu.category_names, cpu.ground_truth)
