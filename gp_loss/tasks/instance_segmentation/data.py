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

from dataclasses import dataclass, replace
from functools import lru_cache, partial

import numpy as np
import torch
import torch.nn.functional as F

from gp_loss.errors import GpLossError
from gp_loss.tasks.detection.data import (DetectionData, DetectionSplit, letterboxed_boxes, on_device, read_data,
                                          warn_thin_boxes)


@dataclass
class InstanceSplit(DetectionSplit):
    """A detection split (:class:`~gp_loss.tasks.detection.data.DetectionSplit`) with its masks.

    Attributes:
        masks: per image G×S×S uint8 (0/1), one per box of ``boxes``, in letterboxed pixels.
        sizes: per image its original (height, width).
    """

    masks: list[torch.Tensor]
    sizes: list[tuple[int, int]]

    def to(self, device: torch.device) -> "InstanceSplit":
        return replace(super().to(device), masks=[m.to(device) for m in self.masks])


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
    from gp_loss.data.coco import annotations_by_image

    by_image = annotations_by_image(dataset)
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
        xyxy, keep = letterboxed_boxes([a for a, _ in anns], scales[r])
        thin += [a["id"] for (a, _), k in zip(anns, keep) if not k]
        kept = [pair for pair, k in zip(anns, keep) if k]
        boxes.append(xyxy[torch.tensor(keep, dtype=torch.bool)])
        classes.append(torch.tensor([category_index[a["category_id"]] for a, _ in kept], dtype=torch.int64))
        masks.append(torch.stack([_letterbox_mask(m, size) for _, m in kept]) if kept
                     else torch.zeros(0, size, size, dtype=torch.uint8))
    warn_thin_boxes(source, thin)
    return InstanceSplit(images[rows], boxes, classes, ids, scales[rows], masks, sizes)


@lru_cache(maxsize=2)
def _load_cpu(data: str, val_data: str, image_size: int, canvases: int, max_digits: int, data_seed: int,
              split_seed: int, val_fraction: float) -> DetectionData:
    """The splits on the CPU (cached: a worker builds the task once per configuration)."""
    return read_data(data, val_data, image_size, canvases, max_digits, data_seed, split_seed, val_fraction,
                     partial(_split, size=image_size))


def load_instance_data(data: str, val_data: str, image_size: int, canvases: int, max_digits: int,
                       data_seed: int, split_seed: int, val_fraction: float, device: torch.device) -> DetectionData:
    """The task's data on ``device`` (see the module docstring): :class:`InstanceSplit` splits."""
    return on_device(_load_cpu(data, val_data, image_size, canvases, max_digits, data_seed, split_seed, val_fraction),
                     device)
