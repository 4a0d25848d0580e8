"""COCO-format detection data: an instances JSON, checked entry by entry, and its images in memory.

``read_instances(path)`` returns the dataset dictionary ``pycocotools`` reads,
after checking what a training run would otherwise trip over mid-search: the
file is JSON with ``images``, ``annotations`` and ``categories`` lists; ids are
integers and unique; every annotation names a known image and category and has
a box of four finite numbers; at least one annotation remains. A box with no
width or height is dropped and counted (``DroppedBoxes``). Every problem is one
:class:`~gp_loss.errors.GpLossError` naming the file and the entry.

``load_images(dataset, root, size)`` reads the images (``file_name`` relative to
``root``, normally the JSON's folder), scales each so its longer side is
``size`` and pads it at the bottom and right to ``size``×``size``: any aspect
ratio fits one batch tensor, and a box maps back to the original image by
dividing by the image's scale (the evaluation does that, so AP is computed on
the user's own coordinates).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from gp_loss.errors import GpLossError

REQUIRED = ("images", "annotations", "categories")


@dataclass
class DroppedBoxes:
    """Annotations left out because their box has no area (counted, for one warning line)."""

    count: int = 0
    example: str = ""


@dataclass
class Instances:
    """A checked COCO instances dataset and where its images are."""

    dataset: dict
    root: Path
    source: str                     # the file it came from, for messages
    dropped: DroppedBoxes = field(default_factory=DroppedBoxes)


def _int_id(value, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise GpLossError(f"{where}: id {value!r} is not an integer")
    return value


def _entries(path: Path, data: dict, key: str, what: str):
    """``(index, where, id, entry)`` for each entry of ``data[key]``: objects with unique integer ids."""
    seen: set[int] = set()
    for i, entry in enumerate(data[key]):
        where = f"{path}: {key}[{i}]"
        if not isinstance(entry, dict):
            raise GpLossError(f"{where} is not an object")
        eid = _int_id(entry.get("id"), where)
        if eid in seen:
            raise GpLossError(f"{where}: {what} id {eid} appears twice")
        seen.add(eid)
        yield i, where, eid, entry


def read_instances(path: str | Path) -> Instances:
    """Read and check a COCO instances JSON (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise GpLossError(f"COCO annotation file {path} does not exist: give --data an instances JSON")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise GpLossError(f"cannot read {path}: {err}") from None
    except json.JSONDecodeError as err:
        raise GpLossError(f"{path} is not valid JSON (truncated?): {err}") from None
    if not isinstance(data, dict):
        raise GpLossError(f"{path} is not a COCO instances file: it holds a {type(data).__name__}, not an object")
    for key in REQUIRED:
        if not isinstance(data.get(key), list):
            raise GpLossError(f"{path}: missing or malformed top-level key {key!r} (a list is needed); "
                              f"a COCO instances file has {', '.join(REQUIRED)}")
    categories = {cid: c for _, _, cid, c in _entries(path, data, "categories", "category")}
    if not categories:
        raise GpLossError(f"{path}: no categories")
    images: dict[int, dict] = {}
    for _, where, iid, im in _entries(path, data, "images", "image"):
        if not isinstance(im.get("file_name"), str) or not im["file_name"]:
            raise GpLossError(f"{where} (id {iid}) has no file_name")
        images[iid] = im
    dropped = DroppedBoxes()
    annotations = []
    for i, where, aid, a in _entries(path, data, "annotations", "annotation"):
        if a.get("image_id") not in images:
            raise GpLossError(f"{where} (id {aid}): image_id {a.get('image_id')!r} is not among the images")
        if a.get("category_id") not in categories:
            raise GpLossError(f"{where} (id {aid}): category_id {a.get('category_id')!r} is not among the "
                              f"categories ({', '.join(map(str, sorted(categories)))})")
        box = a.get("bbox")
        if (not isinstance(box, list) or len(box) != 4
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                           for v in box)):
            raise GpLossError(f"{where} (id {aid}): bbox {box!r} is not [x, y, width, height] of finite numbers")
        if box[2] <= 0 or box[3] <= 0:
            dropped.count += 1
            dropped.example = dropped.example or f"annotations[{i}] (id {aid}) bbox {box}"
            continue
        annotations.append({**a, "iscrowd": int(a.get("iscrowd", 0) or 0),
                            "area": float(a.get("area", box[2] * box[3]))})
    if not annotations:
        raise GpLossError(f"{path}: no annotations with a box of positive size: nothing to train on")
    dataset = {"images": list(images.values()), "annotations": annotations,
               "categories": [c for c in data["categories"]]}
    return Instances(dataset, path.parent, str(path), dropped)


@dataclass
class LoadedImages:
    """Images letterboxed to ``size``: N×3×size×size in [0, 1], and each one's scale (new / original)."""

    images: torch.Tensor
    scales: torch.Tensor            # N
    sizes: list[tuple[int, int]]    # original (height, width)


def letterbox_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """The (rows, cols) an image of ``height``×``width`` fills once letterboxed to ``size`` (see :func:`letterbox`)."""
    scale = size / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def letterbox(image: torch.Tensor, size: int) -> tuple[torch.Tensor, float]:
    """3×H×W -> 3×size×size: scaled so the longer side is ``size``, padded bottom and right with zeros."""
    import torch.nn.functional as F

    _, h, w = image.shape
    scale = size / max(h, w)
    nh, nw = letterbox_shape(h, w, size)
    resized = F.interpolate(image[None], size=(nh, nw), mode="bilinear", align_corners=False,
                            antialias=scale < 1)[0]
    out = image.new_zeros(3, size, size)
    out[:, :nh, :nw] = resized.clamp(0, 1)
    return out, scale


def load_image(instances: Instances, i: int) -> np.ndarray:
    """Image ``i`` of ``instances`` (``images`` order): H×W×3 float32 in [0, 1], checked against its entry's size."""
    from PIL import Image, UnidentifiedImageError

    im = instances.dataset["images"][i]
    file = instances.root / im["file_name"]
    where = f"{instances.source}: images[{i}] (id {im['id']})"
    try:
        with Image.open(file) as pil:
            array = np.asarray(pil.convert("RGB"), dtype=np.float32) / 255.0
    except FileNotFoundError:
        raise GpLossError(f"{where}: image {file} is missing on disk (file_name is relative to "
                          f"the JSON's folder)") from None
    except (OSError, UnidentifiedImageError) as err:
        raise GpLossError(f"{where}: cannot read image {file}: {err}") from None
    h, w = array.shape[:2]
    if "height" in im and "width" in im and (im["height"], im["width"]) != (h, w):
        raise GpLossError(f"{where}: the file is {w}×{h} pixels but the entry says {im['width']}×{im['height']}")
    return array


def load_images(instances: Instances, size: int) -> LoadedImages:
    """Every image of ``instances``, in its ``images`` order, letterboxed to ``size`` (see :func:`letterbox`)."""
    images, scales, sizes = [], [], []
    for i in range(len(instances.dataset["images"])):
        array = load_image(instances, i)
        h, w = array.shape[:2]
        boxed, scale = letterbox(torch.from_numpy(array).permute(2, 0, 1), size)
        images.append(boxed)
        scales.append(scale)
        sizes.append((h, w))
    return LoadedImages(torch.stack(images), torch.tensor(scales), sizes)
