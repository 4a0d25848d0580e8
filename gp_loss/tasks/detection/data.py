"""The detection task's data on its device: images, targets, and the COCO ground truth of the validation split.

Two sources, read the same way:

- ``"digits"`` (built in): :func:`~gp_loss.data.canvases.draw_canvases`, scikit-learn's
  handwritten digits pasted on canvases of ``image_size`` pixels, from ``data_seed``;
- a COCO instances JSON (``file_name`` relative to its folder), checked entry by entry
  (:func:`~gp_loss.data.coco.read_instances`) and letterboxed to ``image_size``
  (:func:`~gp_loss.data.coco.letterbox`: any aspect ratio, boxes scaled with the image). A box
  so thin that it has no width or height in float32 once letterboxed is left out of training,
  with a warning line, as one of no size is.

Validation is a second JSON (``val_data``) or a seeded ``val_fraction`` of the first.
Images are kept on the device as uint8 (N×3×S×S: a quarter of float32's memory) and
turned into floats one batch at a time; the validation metrics are computed by
pycocotools on the original annotations, with predicted boxes mapped back by each
image's scale, so AP is measured in the user's own coordinates.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Callable

import torch

from gp_loss.errors import GpLossError


@dataclass
class DetectionSplit:
    """One split on its device.

    Attributes:
        images: N×3×S×S uint8.
        boxes: per image G×4 float32 boxes (x1, y1, x2, y2) in letterboxed pixels (crowd boxes left out).
        classes: per image G int64 category indices 0..C-1.
        image_ids: the N COCO image ids.
        scales: N letterbox scales (new / original).
    """

    images: torch.Tensor
    boxes: list[torch.Tensor]
    classes: list[torch.Tensor]
    image_ids: list[int]
    scales: torch.Tensor

    def __len__(self) -> int:
        return len(self.image_ids)

    def batch(self, index: list[int]) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """Images as floats in [0, 1] (3×S×S each), boxes and classes of the images ``index``."""
        images = self.images[index].float().div_(255.0)
        return list(images), [self.boxes[i] for i in index], [self.classes[i] for i in index]

    def to(self, device: torch.device) -> "DetectionSplit":
        """This split with its tensors on ``device`` (a subclass's own fields kept)."""
        return replace(self, images=self.images.to(device), boxes=[b.to(device) for b in self.boxes],
                       classes=[c.to(device) for c in self.classes])


@dataclass
class DetectionData:
    """Training and validation splits, the categories, and the validation ground truth (a ``COCO`` object)."""

    train: DetectionSplit
    val: DetectionSplit
    category_ids: list[int]        # index k -> the dataset's category id
    category_names: list[str]
    ground_truth: object           # pycocotools COCO of the validation images

    @property
    def num_classes(self) -> int:
        return len(self.category_ids)


def letterboxed_boxes(annotations: list[dict], scale: float) -> tuple[torch.Tensor, list[bool]]:
    """The annotations' COCO boxes ``[x, y, w, h]`` as G×4 xyxy in letterboxed pixels (``scale``: new / original),
    and whether each keeps a width and height there.

    A box thinner than float32 resolves at its letterboxed position has no width or height there, and
    the detectors refuse such a target: it is left out of training like one of no size.
    """
    xywh = torch.tensor([a["bbox"] for a in annotations], dtype=torch.float32).reshape(-1, 4)
    xyxy = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1) * float(scale)
    return xyxy, ((xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])).tolist()


def warn_thin_boxes(source: str, thin: list) -> None:
    """One warning line for the annotations (ids ``thin``) :func:`letterboxed_boxes` left out, if any."""
    if thin:
        print(f"gp-loss: warning: {source}: {len(thin)} box(es) with no width or height once letterboxed "
              f"(in float32) left out of training (e.g. annotation id {thin[0]})", file=sys.stderr)


def _split(dataset: dict, images: torch.Tensor, scales: torch.Tensor, rows: list[int],
           category_index: dict[int, int], source: str) -> DetectionSplit:
    """The images ``rows`` of ``dataset`` (in its ``images`` order) with their training targets."""
    from gp_loss.data.coco import annotations_by_image

    by_image = annotations_by_image(dataset)
    ids = [dataset["images"][r]["id"] for r in rows]
    boxes, classes, thin = [], [], []
    for r, image_id in zip(rows, ids):
        # Crowd regions are ignored by COCOeval, not trained on.
        anns = [a for a in by_image.get(image_id, []) if not a.get("iscrowd", 0)]
        xyxy, keep = letterboxed_boxes(anns, scales[r])
        thin += [a["id"] for a, k in zip(anns, keep) if not k]
        boxes.append(xyxy[torch.tensor(keep, dtype=torch.bool)])
        classes.append(torch.tensor([category_index[a["category_id"]] for a, k in zip(anns, keep) if k],
                                    dtype=torch.int64))
    warn_thin_boxes(source, thin)
    return DetectionSplit(images[rows], boxes, classes, ids, scales[rows])


def _to_uint8(images: torch.Tensor) -> torch.Tensor:
    return images.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)


def _read(path: str, image_size: int) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """A COCO JSON's checked dataset, its images (uint8, letterboxed) and their scales."""
    from gp_loss.data.coco import load_images, read_instances

    instances = read_instances(path)
    if instances.dropped.count:
        print(instances.dropped.warning(path), file=sys.stderr)
    loaded = load_images(instances, image_size)
    return instances.dataset, _to_uint8(loaded.images), loaded.scales


def _digits(canvases: int, image_size: int, max_digits: int, seed: int) -> tuple[dict, torch.Tensor, torch.Tensor]:
    from gp_loss.data.canvases import draw_canvases, square_spec

    drawn = draw_canvases(square_spec(canvases, image_size, max_digits, seed))
    return drawn.coco, _to_uint8(drawn.images), torch.ones(canvases)


def read_data(data: str, val_data: str, image_size: int, canvases: int, max_digits: int, data_seed: int,
              split_seed: int, val_fraction: float, split: Callable[..., DetectionSplit] | None = None) -> DetectionData:
    """The training and validation splits of ``data`` (and ``val_data``, or a seeded ``val_fraction`` of
    ``data``) on the CPU, with the categories and the validation ground truth.

    Args:
        split: ``(dataset, images, scales, rows, category_index, source) -> split``, the rows of one dataset
            (its ``images`` order) with the task's targets (default: boxes and classes).
    """
    from gp_loss.metrics.detection import coco_ground_truth
    from gp_loss.tasks.segmentation.data import seeded_split

    split = split or _split
    if data == "digits":
        dataset, images, scales = _digits(canvases, image_size, max_digits, data_seed)
    else:
        dataset, images, scales = _read(data, image_size)
    categories = dataset["categories"]
    category_ids = [c["id"] for c in categories]
    index = {cid: k for k, cid in enumerate(category_ids)}
    if val_data:
        val_dataset, val_images, val_scales = _read(val_data, image_size)
        val_ids = [c["id"] for c in val_dataset["categories"]]
        if val_ids != category_ids:
            raise GpLossError(f"{val_data}: its categories (ids {val_ids[:10]}) differ from those of {data} "
                              f"(ids {category_ids[:10]}): give both files the same categories list")
        train = split(dataset, images, scales, list(range(len(dataset["images"]))), index, data)
        val = split(val_dataset, val_images, val_scales, list(range(len(val_dataset["images"]))), index, val_data)
        ground_truth = coco_ground_truth(val_dataset)
    else:
        train_rows, val_rows = seeded_split(len(dataset["images"]), split_seed, val_fraction, data,
                                            "give more images, another val_fraction, or a validation file (--val-data)")
        train = split(dataset, images, scales, train_rows, index, data)
        val = split(dataset, images, scales, val_rows, index, data)
        ground_truth = coco_ground_truth(dataset)
    if not any(len(b) for b in train.boxes):
        raise GpLossError(f"{data}: the training split has no (non-crowd) annotation: nothing to train on")
    return DetectionData(train, val, category_ids, [str(c.get("name", c["id"])) for c in categories], ground_truth)


def on_device(data: DetectionData, device: torch.device) -> DetectionData:
    """``data`` with its splits on ``device`` (itself on the CPU)."""
    if device.type == "cpu":
        return data
    return replace(data, train=data.train.to(device), val=data.val.to(device))


@lru_cache(maxsize=2)
def _load_cpu(data: str, val_data: str, image_size: int, canvases: int, max_digits: int, data_seed: int,
              split_seed: int, val_fraction: float) -> DetectionData:
    """The splits on the CPU (cached: a worker builds the task once per configuration)."""
    return read_data(data, val_data, image_size, canvases, max_digits, data_seed, split_seed, val_fraction)


def load_detection_data(data: str, val_data: str, image_size: int, canvases: int, max_digits: int,
                        data_seed: int, split_seed: int, val_fraction: float,
                        device: torch.device) -> DetectionData:
    """The task's data on ``device`` (see the module docstring)."""
    return on_device(_load_cpu(data, val_data, image_size, canvases, max_digits, data_seed, split_seed, val_fraction),
                     device)
