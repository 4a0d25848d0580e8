"""The pose task's data on its device: each annotated instance's crop, its keypoints, and the validation truth.

Two sources, chosen by ``data``:

- ``"digits"`` (built in): :func:`~gp_loss.data.canvases.draw_canvases` on square canvases of
  ``image_size`` pixels from ``data_seed``, with K = 5 ink keypoints per digit
  (:func:`~gp_loss.data.keypoints.add_digit_keypoints`, as ``gp-loss data digits-coco --keypoints``
  writes them); a seeded ``val_fraction`` of the canvases validates;
- a COCO keypoints JSON (:func:`~gp_loss.data.keypoints.read_keypoints`), any K, any image
  sizes; validation is a second JSON (``val_data``) with the same keypoints, or a seeded
  ``val_fraction`` of the images.

Top-down, as SimpleBaseline: each instance that is not a crowd region and has a labelled
keypoint is cropped from its image at full resolution by :func:`torchvision.ops.roi_align`
(``aligned=True``), its box centred, widened to the crop's aspect ratio and enlarged by
``box_scale``, and resized to ``crop_height``×``crop_width``. Crops are kept on the device as
uint8; keypoints in crop pixels, with each crop's origin and scale to map predictions back
to the image.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from gp_loss.data.coco import annotations_by_image
from gp_loss.errors import GpLossError


@dataclass
class PoseSplit:
    """One split's instances on its device (N instances, K keypoints).

    Attributes:
        crops: N×3×h×w uint8 crops.
        points: N×K×2 float keypoints (x, y) in crop pixels.
        visible: N×K float, 1 where the keypoint is labelled (v > 0) and inside its crop, else 0.
        origin: N×2 the crop's top-left corner in image pixels.
        scale: N×2 image pixels per crop pixel (x, y).
        image_ids, category_ids: per instance, its image's and category's ids.
    """

    crops: torch.Tensor
    points: torch.Tensor
    visible: torch.Tensor
    origin: torch.Tensor
    scale: torch.Tensor
    image_ids: list[int]
    category_ids: list[int]

    def __len__(self) -> int:
        return len(self.image_ids)

    def to(self, device: torch.device) -> "PoseSplit":
        return PoseSplit(self.crops.to(device), self.points.to(device), self.visible.to(device),
                         self.origin.to(device), self.scale.to(device), self.image_ids, self.category_ids)


@dataclass
class PoseData:
    """Training and validation instances, the keypoints' names, and the validation ground truth (a COCO dict)."""

    train: PoseSplit
    val: PoseSplit
    keypoint_names: list[str]
    skeleton: list[list[int]]
    ground_truth: dict             # the validation images, their annotations and the categories
    source: str                    # what the data is, for messages


def crop_boxes(boxes: torch.Tensor, crop_height: int, crop_width: int, box_scale: float) -> torch.Tensor:
    """M×4 COCO boxes [x, y, w, h] -> M×4 crop regions [x1, y1, x2, y2]: centred on the box, widened to the
    crop's aspect ratio, then enlarged ``box_scale`` times (SimpleBaseline's 1.25), at least one pixel a side."""
    aspect = crop_width / crop_height
    cx, cy = boxes[:, 0] + boxes[:, 2] / 2, boxes[:, 1] + boxes[:, 3] / 2
    w = torch.maximum(boxes[:, 2], boxes[:, 3] * aspect).clamp(min=1.0) * box_scale
    h = w / aspect
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)


class _SplitBuilder:
    """Collects one split's crops image by image."""

    def __init__(self, crop_height: int, crop_width: int, box_scale: float):
        self.size, self.box_scale = (crop_height, crop_width), box_scale
        self.parts: list[tuple[torch.Tensor, ...]] = []
        self.image_ids: list[int] = []
        self.category_ids: list[int] = []

    def add(self, image: torch.Tensor, annotations: list[dict]) -> None:
        """The instances of one image (3×H×W float in [0, 1]) that have labelled keypoints."""
        from torchvision.ops import roi_align

        chosen = [a for a in annotations if not a.get("iscrowd", 0) and a["num_keypoints"] > 0]
        if not chosen:
            return
        h, w = self.size
        regions = crop_boxes(torch.tensor([a["bbox"] for a in chosen], dtype=torch.float32), h, w, self.box_scale)
        crops = roi_align(image[None].float(), [regions], (h, w), spatial_scale=1.0, sampling_ratio=2, aligned=True)
        kp = torch.tensor([a["keypoints"] for a in chosen], dtype=torch.float32).reshape(len(chosen), -1, 3)
        origin = regions[:, :2]
        scale = torch.stack([(regions[:, 2] - regions[:, 0]) / w, (regions[:, 3] - regions[:, 1]) / h], 1)
        points = (kp[..., :2] - origin[:, None]) / scale[:, None]
        inside = ((points[..., 0] >= 0) & (points[..., 0] < w) & (points[..., 1] >= 0) & (points[..., 1] < h))
        visible = ((kp[..., 2] > 0) & inside).float()
        self.parts.append((crops.mul(255.0).round_().clamp_(0, 255).to(torch.uint8), points, visible, origin, scale))
        self.image_ids += [a["image_id"] for a in chosen]
        self.category_ids += [a["category_id"] for a in chosen]

    def build(self, what: str) -> PoseSplit:
        if not self.parts:
            raise GpLossError(f"{what} has no instance with a labelled keypoint (v > 0) outside crowd regions: "
                              f"nothing to train or validate on")
        crops, points, visible, origin, scale = (torch.cat(p) for p in zip(*self.parts))
        return PoseSplit(crops, points, visible, origin, scale, self.image_ids, self.category_ids)


def _truth(dataset: dict, image_ids: set[int]) -> dict:
    """The COCO dict of ``dataset`` restricted to ``image_ids`` (what the OKS AP is measured against)."""
    return {"images": [im for im in dataset["images"] if im["id"] in image_ids],
            "annotations": [a for a in dataset["annotations"] if a["image_id"] in image_ids],
            "categories": dataset["categories"]}


def _digits(image_size: int, canvases: int, max_digits: int, data_seed: int, split_seed: int, val_fraction: float,
            crop: tuple[int, int, float]) -> PoseData:
    from gp_loss.data.canvases import draw_canvases, square_spec
    from gp_loss.data.keypoints import DIGIT_KEYPOINTS, DIGIT_SKELETON, add_digit_keypoints
    from gp_loss.tasks.segmentation.data import seeded_split

    drawn = draw_canvases(square_spec(canvases, image_size, max_digits, data_seed))
    coco = add_digit_keypoints(drawn.coco)
    source = f"built-in digit canvases ({canvases} of {image_size} px, seed {data_seed})"
    by_image = annotations_by_image(coco)
    splits = []
    rows_of = seeded_split(canvases, split_seed, val_fraction, source)
    for rows, what in zip(rows_of, ("the training split", "the validation split")):
        builder = _SplitBuilder(*crop)
        for r in rows:
            builder.add(drawn.images[r], by_image.get(coco["images"][r]["id"], []))
        splits.append(builder.build(f"{source}: {what}"))
    val_ids = {coco["images"][r]["id"] for r in rows_of[1]}
    return PoseData(splits[0], splits[1], list(DIGIT_KEYPOINTS), [list(p) for p in DIGIT_SKELETON],
                    _truth(coco, val_ids), source)


def _read(path: str):
    from gp_loss.data.keypoints import read_keypoints

    instances, names, skeleton = read_keypoints(path)
    if instances.dropped.count:
        print(instances.dropped.warning(path), file=sys.stderr)
    return instances, names, skeleton


def _fill(instances, rows: list[int], builder: _SplitBuilder) -> None:
    """Images ``rows`` of ``instances`` (in its ``images`` order) into ``builder``, read one at a time."""
    from gp_loss.data.coco import load_image

    by_image = annotations_by_image(instances.dataset)
    for r in rows:
        im = instances.dataset["images"][r]
        annotations = by_image.get(im["id"], [])
        if any(not a.get("iscrowd", 0) and a["num_keypoints"] > 0 for a in annotations):
            builder.add(torch.from_numpy(load_image(instances, r)).permute(2, 0, 1), annotations)


def _coco(data: str, val_data: str, split_seed: int, val_fraction: float, crop: tuple[int, int, float]) -> PoseData:
    from gp_loss.tasks.segmentation.data import seeded_split

    instances, names, skeleton = _read(data)
    n = len(instances.dataset["images"])
    if val_data:
        val_instances, val_names, _ = _read(val_data)
        if val_names != names:
            raise GpLossError(f"{val_data}: its keypoints ({', '.join(val_names[:6])}, ...: {len(val_names)}) differ "
                              f"from those of {data} ({', '.join(names[:6])}, ...: {len(names)}): give both files "
                              f"the same keypoints")
        parts = [(instances, list(range(n))), (val_instances, list(range(len(val_instances.dataset["images"]))))]
    else:
        train_rows, val_rows = seeded_split(n, split_seed, val_fraction, data)
        parts = [(instances, train_rows), (instances, val_rows)]
    splits = []
    for (source, rows), what in zip(parts, ("the training split", "the validation split")):
        builder = _SplitBuilder(*crop)
        _fill(source, rows, builder)
        splits.append(builder.build(f"{source.source}: {what}"))
    val_source, val_rows = parts[1]
    val_ids = {val_source.dataset["images"][r]["id"] for r in val_rows}
    return PoseData(splits[0], splits[1], names, skeleton, _truth(val_source.dataset, val_ids), data)


@lru_cache(maxsize=2)
def _load_cpu(data: str, val_data: str, image_size: int, canvases: int, max_digits: int, data_seed: int,
              split_seed: int, val_fraction: float, crop_height: int, crop_width: int, box_scale: float) -> PoseData:
    """The splits on the CPU (cached: a worker builds the task once per configuration)."""
    crop = (crop_height, crop_width, box_scale)
    if data == "digits":
        if val_data:
            raise GpLossError(f"val_data {val_data} is only read with a COCO keypoints .json data file: the "
                              f"built-in digits are split by val_fraction")
        return _digits(image_size, canvases, max_digits, data_seed, split_seed, val_fraction, crop)
    return _coco(data, val_data, split_seed, val_fraction, crop)


def load_pose_data(data: str, val_data: str, image_size: int, canvases: int, max_digits: int, data_seed: int,
                   split_seed: int, val_fraction: float, crop_height: int, crop_width: int, box_scale: float,
                   device: torch.device) -> PoseData:
    """The task's data on ``device`` (see the module docstring)."""
    cpu = _load_cpu(data, val_data, image_size, canvases, max_digits, data_seed, split_seed, val_fraction,
                    crop_height, crop_width, box_scale)
    if device.type == "cpu":
        return cpu
    return PoseData(cpu.train.to(device), cpu.val.to(device), cpu.keypoint_names, cpu.skeleton, cpu.ground_truth,
                    cpu.source)


def parse_sigmas(text: str, k: int, names: list[str]) -> tuple[float, ...]:
    """The K OKS sigmas of the option ``oks_sigmas``: COCO's person sigmas when ``text`` is empty and the
    keypoints are COCO's person keypoints, else one value for all (empty: 0.05) or K comma-separated values."""
    from gp_loss.data.keypoints import default_sigmas

    if not text.strip():
        coco = default_sigmas(names)
        return coco if coco is not None else (DEFAULT_SIGMA,) * k
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise GpLossError(f"task option oks_sigmas must be one number or {k} comma-separated numbers, got "
                          f"{text!r}") from None
    if len(values) not in (1, k):
        raise GpLossError(f"task option oks_sigmas gives {len(values)} values but the data has {k} keypoints "
                          f"({', '.join(names)}): give one value for all, or {k}")
    if not all(np.isfinite(v) and v > 0 for v in values):
        raise GpLossError(f"task option oks_sigmas must be positive finite numbers, got {text!r}")
    return tuple(values * k if len(values) == 1 else values)


# The OKS sigma of keypoints other than COCO's person keypoints: between COCO's face keypoints (0.025 to
# 0.035) and its limbs' (0.062 to 0.107). With COCO's largest, one constant pose for every instance
# already scores a fair AP on the built-in digits (their area is their ink's, small beside their
# box): this one leaves a constant pose near 0, so the metric tells a trained network from none.
DEFAULT_SIGMA = 0.05
