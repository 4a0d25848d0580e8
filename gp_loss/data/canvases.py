"""Built-in detection and segmentation data: scikit-learn's handwritten digits pasted on canvases.

Each canvas holds 1 to ``max_digits`` digits, each scaled to its own height and
width (so boxes have several aspect ratios and sizes), at positions that overlap
little, over a noisy background. A digit's box is the tight box of its ink and
its mask the ink pixels it shows (a digit pasted later covers an earlier one).
Everything is drawn from one seed, so a search and its tests see the same data
without downloading anything.

The result is a COCO-format dataset (the same dictionary ``pycocotools`` reads
from an instances JSON, with RLE masks) and the images as one tensor: the
detection and segmentation tasks read it exactly as they read a user's COCO data.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from gp_loss.data.digits import NUM_CLASSES, _arrays

# A digit pixel counts as ink (in its box and mask) above this intensity (0..1). Each digit
# gets a colour with every channel at least MIN_COLOUR, over background noise below NOISE.
INK = 0.25
MIN_COLOUR = 0.6
NOISE = 0.15
# Placement tries per digit before it is left out; a digit may overlap earlier ones by at most
# this IoU, so most of it stays visible.
PLACEMENT_TRIES = 20
MAX_OVERLAP = 0.2


@dataclass(frozen=True)
class CanvasSpec:
    """How the canvases are drawn (all in pixels)."""

    count: int = 600
    height: int = 128
    width: int = 128
    max_digits: int = 4
    min_size: int = 16            # a digit's smaller side at least, its larger side at most max_size
    max_size: int = 48
    seed: int = 0


@dataclass
class Canvases:
    """``images`` N×3×H×W in [0, 1] and ``coco``, a COCO instances dataset of them (image ids 1..N)."""

    images: torch.Tensor
    coco: dict


def canvas_spec(count: int, height: int, width: int, max_digits: int, seed: int) -> CanvasSpec:
    """Canvases of ``height``×``width`` pixels whose digit sizes scale with the smaller side (128 px: 16 to
    48 px, the defaults)."""
    side = min(height, width)
    min_size = max(4, side // 8)
    return CanvasSpec(count=count, height=height, width=width, max_digits=max_digits, min_size=min_size,
                      max_size=max(min_size, 3 * side // 8), seed=seed)


def square_spec(count: int, size: int, max_digits: int, seed: int) -> CanvasSpec:
    """Square canvases of ``size`` pixels (:func:`canvas_spec`)."""
    return canvas_spec(count, size, size, max_digits, seed)


def category_list() -> list[dict]:
    """COCO categories of the ten digits: id ``d + 1`` named ``"d"``."""
    return [{"id": d + 1, "name": str(d), "supercategory": "digit"} for d in range(NUM_CLASSES)]


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box with each of K boxes (K×4)."""
    if len(boxes) == 0:
        return np.zeros(0)
    lt = np.maximum(box[:2], boxes[:, :2])
    rb = np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return inter / (area(box) + area(boxes) - inter)


def draw_canvases(spec: CanvasSpec = CanvasSpec()) -> Canvases:
    """Draw ``spec.count`` canvases from ``spec.seed``."""
    from pycocotools import mask as mask_utils

    if not 1 <= spec.min_size <= spec.max_size <= min(spec.height, spec.width):
        raise ValueError(f"need 1 <= min_size ({spec.min_size}) <= max_size ({spec.max_size}) <= the "
                         f"canvas's smaller side ({min(spec.height, spec.width)})")
    digits, labels = _arrays()
    rng = np.random.default_rng(spec.seed)
    h, w = spec.height, spec.width
    images = np.empty((spec.count, 3, h, w), dtype=np.float32)
    annotations: list[dict] = []
    for n in range(spec.count):
        canvas = rng.uniform(0.0, NOISE, (3, h, w)).astype(np.float32)
        owner = np.full((h, w), -1, dtype=np.int64)  # which pasted digit shows at each pixel
        placed: list[tuple[int, np.ndarray]] = []   # (label, xyxy box of its paste area)
        for _ in range(int(rng.integers(1, spec.max_digits + 1))):
            pick = int(rng.integers(len(digits)))
            dh, dw = (int(v) for v in rng.integers(spec.min_size, spec.max_size + 1, 2))
            for _try in range(PLACEMENT_TRIES):
                y0, x0 = int(rng.integers(0, h - dh + 1)), int(rng.integers(0, w - dw + 1))
                area = np.array([x0, y0, x0 + dw, y0 + dh], dtype=np.float64)
                if (_iou(area, np.array([b for _, b in placed])) <= MAX_OVERLAP).all():
                    break
            else:
                continue
            glyph = F.interpolate(torch.from_numpy(digits[pick])[None, None], size=(dh, dw), mode="bilinear",
                                  align_corners=False)[0, 0].numpy()
            ink = glyph > INK
            colour = rng.uniform(MIN_COLOUR, 1.0, 3).astype(np.float32)
            region = canvas[:, y0:y0 + dh, x0:x0 + dw]
            np.copyto(region, np.maximum(region, glyph[None] * colour[:, None, None]))
            owner[y0:y0 + dh, x0:x0 + dw][ink] = len(placed)
            placed.append((int(labels[pick]), area))
        images[n] = canvas
        for k, (label, _) in enumerate(placed):
            mask = owner == k
            if not mask.any():  # covered by later digits
                continue
            ys, xs = np.nonzero(mask)
            x1, y1, x2, y2 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            rle["counts"] = rle["counts"].decode("ascii")
            annotations.append({"id": len(annotations) + 1, "image_id": n + 1, "category_id": label + 1,
                                "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
                                "area": float(mask.sum()), "iscrowd": 0, "segmentation": rle})
    coco = {"images": [{"id": n + 1, "file_name": f"canvas_{n + 1:05d}.png", "height": h, "width": w}
                       for n in range(spec.count)],
            "annotations": annotations, "categories": category_list()}
    return Canvases(torch.from_numpy(images), coco)
