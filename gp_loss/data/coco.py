"""COCO-format detection data: an instances JSON, checked entry by entry, and its images in memory.

``read_instances(path)`` returns the dataset dictionary ``pycocotools`` reads,
after checking what a training run would otherwise trip over mid-search: the
file is JSON with ``images``, ``annotations`` and ``categories`` lists; ids are
integers from 0 to 2**63 - 1 (never booleans) and unique; every annotation names a
known image and category. Every number goes through :mod:`gp_loss.data.checks`
(finite, a real number, within bounds in its own units):

- an image's ``width`` and ``height``: integers from 1 to 65535 pixels. Where an entry
  leaves them out, they are read from the image file's header and filled in, so every
  box is checked against its image before any training;
- ``bbox`` ``[x, y, width, height]`` in that image's pixels: width and height 0 or more;
  the box may reach past the image's edges by 1% of the side (at least one pixel), as
  annotation tools that round outwards leave it, and is clipped to the image there;
  further out is an error (boxes in another image's or in normalised coordinates);
- ``area``: from 0 to the image's area (default: the box's); ``iscrowd``: 0 or 1.

A box with no width or height, or none left inside its image once clipped, is
dropped and counted (``DroppedBoxes``); at least one annotation must remain. Every
problem is one :class:`~gp_loss.errors.GpLossError` naming the file, the entry and
its id, and the fix.

``load_images(dataset, root, size)`` reads the images (``file_name`` relative to
``root``, normally the JSON's folder), scales each so its longer side is
``size`` and pads it at the bottom and right to ``size``×``size``: any aspect
ratio fits one batch tensor, and a box maps back to the original image by
dividing by the image's scale (the evaluation does that, so AP is computed on
the user's own coordinates).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from gp_loss.data.checks import (MAX_ID, MAX_IMAGE_SIDE, check_image_size, image_read_errors, integer_in, number_in,
                                 outside_tolerance)
from gp_loss.errors import GpLossError

REQUIRED = ("images", "annotations", "categories")
ID_FIX = "give ids as non-negative integers, as COCO's own are"
SIZE_FIX = "give the image's width and height in pixels as integers (or leave both out to read them from the file)"
BOX_FIX = "give bbox as [x, y, width, height] in its image's pixels, x and y the top-left corner"


@dataclass
class DroppedBoxes:
    """Annotations left out because their box has no area inside its image (counted, for one warning line)."""

    count: int = 0
    example: str = ""

    def warning(self, source: str) -> str:
        """The warning line of the boxes dropped from ``source`` (print it only when ``count`` > 0)."""
        return (f"gp-loss: warning: {source}: {self.count} annotation(s) with a box of no width or height "
                f"inside its image left out (e.g. {self.example})")


@dataclass
class Instances:
    """A checked COCO instances dataset and where its images are."""

    dataset: dict
    root: Path
    source: str                     # the file it came from, for messages
    dropped: DroppedBoxes = field(default_factory=DroppedBoxes)


def _int_id(value, where: str, what: str = "id") -> int:
    return integer_in(value, 0, MAX_ID, where, what, ID_FIX)


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


def _open_error(err: Exception, file: Path, where: str) -> GpLossError:
    """The one line for an image file PIL cannot open (missing, not an image, over PIL's pixel limit)."""
    if isinstance(err, FileNotFoundError):
        return GpLossError(f"{where}: image {file} is missing on disk (file_name is relative to the JSON's folder)")
    return GpLossError(f"{where}: cannot read image {file}: {err}")


def _image_size(root: Path, im: dict, where: str) -> tuple[int, int]:
    """``(width, height)`` of an ``images`` entry: its own, checked, or else its file's header."""
    from PIL import Image

    if "width" in im or "height" in im:
        return check_image_size(im.get("width"), im.get("height"), where, SIZE_FIX)
    file = root / im["file_name"]
    try:
        with Image.open(file) as pil:  # reads the header only
            size = pil.size
    except image_read_errors() as err:
        raise _open_error(err, file, where) from None
    return check_image_size(*size, f"{where}: image {file}", "resize it or leave it out of the file")


def _fit_box(box: list, width: int, height: int, where: str) -> list | None:
    """``box`` checked against a ``width``×``height`` image and clipped to it (see the module docstring);
    ``None`` for a box with no area inside the image. An unclipped box is returned as given."""
    if not isinstance(box, list) or len(box) != 4:
        raise GpLossError(f"{where}: bbox {box!r} is not [x, y, width, height]: {BOX_FIX}")
    w = number_in(box[2], 0, MAX_IMAGE_SIDE, where, "bbox width", BOX_FIX)
    h = number_in(box[3], 0, MAX_IMAGE_SIDE, where, "bbox height", BOX_FIX)
    tw, th = outside_tolerance(width), outside_tolerance(height)
    fix = f"{BOX_FIX} (the image is {width}×{height})"
    x1 = number_in(box[0], -tw, width + tw, where, "bbox x", fix)
    y1 = number_in(box[1], -th, height + th, where, "bbox y", fix)
    x2 = number_in(x1 + w, -tw, width + tw, where, "the box's right edge", fix)
    y2 = number_in(y1 + h, -th, height + th, where, "the box's bottom edge", fix)
    if 0 <= x1 and x2 <= width and 0 <= y1 and y2 <= height:  # inside: kept as given
        return box if w > 0 and h > 0 else None
    cx1, cy1 = min(max(x1, 0.0), width), min(max(y1, 0.0), height)
    cx2, cy2 = min(max(x2, 0.0), width), min(max(y2, 0.0), height)
    return [cx1, cy1, cx2 - cx1, cy2 - cy1] if cx2 > cx1 and cy2 > cy1 else None


def _annotation(a: dict, where: str, images: dict[int, dict], categories: dict) -> dict | None:
    """The checked annotation ``a`` (box clipped, ``area`` and ``iscrowd`` set), or ``None`` to drop."""
    image_id = _int_id(a.get("image_id"), where, "image_id")
    if image_id not in images:
        raise GpLossError(f"{where}: image_id {image_id} is not among the images")
    category_id = _int_id(a.get("category_id"), where, "category_id")
    if category_id not in categories:
        raise GpLossError(f"{where}: category_id {category_id} is not among the "
                          f"categories ({', '.join(map(str, sorted(categories)))})")
    width, height = images[image_id]["width"], images[image_id]["height"]
    box = _fit_box(a.get("bbox"), width, height, where)
    if box is None:
        return None
    iscrowd = integer_in(a.get("iscrowd", 0), 0, 1, where, "iscrowd", "give 0 (an object) or 1 (a crowd region)")
    tol_w, tol_h = outside_tolerance(width), outside_tolerance(height)
    area = (number_in(a["area"], 0, (width + 2 * tol_w) * (height + 2 * tol_h), where, "area",
                      f"give area in square pixels of its {width}×{height} image, or leave it out (the box's area)")
            if "area" in a else float(box[2]) * float(box[3]))
    return {**a, "bbox": box, "iscrowd": iscrowd, "area": area}


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
    except ValueError as err:  # an integer longer than Python converts (sys.get_int_max_str_digits)
        raise GpLossError(f"{path} is not a COCO instances file: {' '.join(str(err).split())[:200]}") from None
    except RecursionError:
        raise GpLossError(f"{path} nests its JSON too deeply to be a COCO instances file") from None
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
        where = f"{where} (id {iid})"
        if not isinstance(im.get("file_name"), str) or not im["file_name"]:
            raise GpLossError(f"{where} has no file_name")
        width, height = _image_size(path.parent, im, where)
        images[iid] = {**im, "width": width, "height": height}
    dropped = DroppedBoxes()
    annotations = []
    for i, where, aid, a in _entries(path, data, "annotations", "annotation"):
        checked = _annotation(a, f"{where} (id {aid})", images, categories)
        if checked is None:
            dropped.count += 1
            dropped.example = dropped.example or f"annotations[{i}] (id {aid}) bbox {a['bbox']}"
            continue
        annotations.append(checked)
    if not annotations:
        raise GpLossError(f"{path}: no annotations with a box of positive size inside its image: "
                          f"nothing to train on")
    dataset = {"images": list(images.values()), "annotations": annotations,
               "categories": [c for c in data["categories"]]}
    return Instances(dataset, path.parent, str(path), dropped)


@dataclass
class LoadedImages:
    """Images letterboxed to ``size``: N×3×size×size in [0, 1], and each one's scale (new / original)."""

    images: torch.Tensor
    scales: torch.Tensor            # N
    sizes: list[tuple[int, int]]    # original (height, width)


def annotations_by_image(dataset: dict) -> dict[int, list[dict]]:
    """A COCO dataset's annotations grouped by ``image_id``, each image's in the file's order."""
    by_image: dict[int, list[dict]] = {}
    for a in dataset["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    return by_image


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
    from PIL import Image

    im = instances.dataset["images"][i]
    file = instances.root / im["file_name"]
    where = f"{instances.source}: images[{i}] (id {im['id']})"
    try:
        with Image.open(file) as pil:
            array = np.asarray(pil.convert("RGB"), dtype=np.float32) / 255.0
    except image_read_errors() as err:
        raise _open_error(err, file, where) from None
    h, w = array.shape[:2]
    if (im["height"], im["width"]) != (h, w):  # read_instances has set both
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
