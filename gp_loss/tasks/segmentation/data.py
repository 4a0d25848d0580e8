"""The segmentation task's data on its device: letterboxed images, class maps, and the validation maps.

Three sources, chosen by ``data``:

- ``"digits"`` (built in): :func:`~gp_loss.data.canvases.draw_canvases` on square canvases of
  ``image_size`` pixels from ``data_seed``; each pixel's class is 0 (background) or ``d + 1``
  for the digit d whose mask covers it (11 classes); a seeded ``val_fraction`` validates;
- a Pascal VOC-layout folder (:mod:`gp_loss.data.voc`): the ``train_split`` and
  ``val_split`` lists of its ``ImageSets/Segmentation``; 21 classes unless ``num_classes``
  says otherwise;
- a COCO instances JSON (:func:`~gp_loss.data.coco.read_instances`): class 0 is background
  and the k-th category by id is class k + 1; objects are painted largest first (so smaller
  ones stay on top) over their crowd regions, which are void (255); validation is a second
  JSON (``val_data``) with the same categories, or a seeded ``val_fraction``.

Each image is letterboxed to ``image_size`` as it is read (:func:`~gp_loss.data.coco.letterbox`:
the longer side scaled to S, the content top-left, zero padding) and its class map resized to
the same content with nearest-neighbour sampling (``nearest-exact``: pixel centres, like the
bilinear image) and padded with 255, the void class that the loss and the metrics ignore.
Images and maps are kept on the device as uint8 (a quarter of float32's memory) and turned
into floats one batch at a time. The validation split also keeps each original-resolution
map, so a prediction cropped to the letterboxed content and resized back is scored at the
user's own resolution.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from gp_loss.data.checks import number_in, outside_tolerance
from gp_loss.data.coco import annotations_by_image
from gp_loss.errors import GpLossError

IGNORE = 255
MAX_CLASSES = 255                # classes 0..254 fit uint8 beside IGNORE
DIGIT_CLASS_NAMES = ["background"] + [str(d) for d in range(10)]


@dataclass
class SegmentationSplit:
    """One split on its device.

    Attributes:
        images: N×3×S×S uint8, letterboxed (content top-left, zero padding).
        labels: N×S×S uint8 class indices; 255 (void pixels and the letterbox padding) is ignored.
        targets: the validation split's original-resolution H_i×W_i uint8 class maps; None for training.
        content: per image (rows, cols) of the letterboxed content inside S×S.
        names: per image its name (file stem or file_name), for messages.
    """

    images: torch.Tensor
    labels: torch.Tensor
    targets: list[torch.Tensor] | None
    content: list[tuple[int, int]]
    names: list[str]

    def __len__(self) -> int:
        return len(self.names)

    def batch(self, index: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``index`` as floats in [0, 1] (N×3×S×S) and their labels as int64 (N×S×S)."""
        return self.images[index].float().div_(255.0), self.labels[index].long()


@dataclass
class SegmentationData:
    """Training and validation splits and the classes (index 0 is the background where there is one)."""

    train: SegmentationSplit
    val: SegmentationSplit
    num_classes: int
    class_names: list[str]
    source: str                    # what the data is, for messages


def seeded_split(n: int, split_seed: int, val_fraction: float, source: str,
                 fix: str = "give more images or another val_fraction") -> tuple[list[int], list[int]]:
    """Rows ``0..n-1`` split at random from ``split_seed``: (training rows, validation rows), each sorted.
    A split left empty is one :class:`GpLossError` line naming ``source``, ending with ``fix``."""
    order = np.random.default_rng(split_seed).permutation(n).tolist()
    n_val = int(round(val_fraction * n))
    if n_val < 1 or n - n_val < 1:
        raise GpLossError(f"{source}: {n} image(s) with val_fraction {val_fraction} leave the "
                          f"{'validation' if n_val < 1 else 'training'} split empty: {fix}")
    return sorted(order[n_val:]), sorted(order[:n_val])


def resize_label(label: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """An H×W uint8 class map resized to rows×cols by nearest-neighbour sampling (pixel centres)."""
    if tuple(label.shape) == (rows, cols):
        return label
    return F.interpolate(label[None, None].float(), size=(rows, cols), mode="nearest-exact")[0, 0].to(torch.uint8)


class _SplitBuilder:
    """Fills one split image by image: letterboxed uint8 image and label, and the original label if kept."""

    def __init__(self, count: int, size: int, keep_targets: bool):
        self.size = size
        self.images = torch.zeros(count, 3, size, size, dtype=torch.uint8)
        self.labels = torch.full((count, size, size), IGNORE, dtype=torch.uint8)
        self.targets: list[torch.Tensor] | None = [] if keep_targets else None
        self.content: list[tuple[int, int]] = []
        self.names: list[str] = []

    def add(self, name: str, image: torch.Tensor, label: torch.Tensor) -> None:
        """Image (3×H×W float in [0, 1]) and its class map (H×W uint8) as the next row."""
        from gp_loss.data.coco import letterbox, letterbox_shape

        row, size = len(self.names), self.size
        h, w = label.shape
        if (h, w) == (size, size):
            boxed, (rows, cols) = image, (size, size)
        else:
            boxed, _ = letterbox(image, size)
            rows, cols = letterbox_shape(h, w, size)
        self.images[row] = boxed.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)
        self.labels[row, :rows, :cols] = resize_label(label, rows, cols)
        if self.targets is not None:
            self.targets.append(label.clone())
        self.content.append((rows, cols))
        self.names.append(name)

    def build(self) -> SegmentationSplit:
        assert len(self.names) == len(self.images)
        return SegmentationSplit(self.images, self.labels, self.targets, self.content, self.names)


# --- COCO instances -> class maps -------------------------------------------------------------------------

def _rle_string_counts(counts: bytes) -> list[int]:
    """The run lengths of a compressed COCO RLE string (pycocotools' rleFrString), to check them before decoding."""
    runs: list[int] = []
    p = 0
    while p < len(counts):
        x, k, more = 0, 0, True
        while more:
            if p >= len(counts):
                raise ValueError("the counts string ends inside a number")
            c = counts[p] - 48
            if not 0 <= c < 64:
                raise ValueError(f"character {chr(counts[p])!r} is not an RLE digit")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(runs) > 2:
            x += runs[-2]
        runs.append(x)
    return runs


def _check_polygons(polygons: list[list], height: int, width: int, where: str) -> None:
    """Every polygon coordinate a finite number inside the ``width``×``height`` image, up to the tolerance
    of :func:`~gp_loss.data.checks.outside_tolerance` (pycocotools rasterises them in C ints and would
    overflow, or allocate for every pixel of a huge edge, where a coordinate is far out)."""
    bounds = [(-outside_tolerance(width), width + outside_tolerance(width)),
              (-outside_tolerance(height), height + outside_tolerance(height))]
    fix = (f"give polygon coordinates x1, y1, x2, y2, ... in the image's pixels (the image is "
           f"{width}×{height})")
    for k, polygon in enumerate(polygons):
        if _polygon_inside(polygon, bounds):  # the common case, checked in numpy
            continue
        for j, v in enumerate(polygon):  # names the first bad coordinate
            lo, hi = bounds[j % 2]
            number_in(v, lo, hi, where, f"segmentation polygon {k} {'xy'[j % 2]}{j // 2 + 1}", fix)


def _polygon_inside(polygon: list, bounds: list[tuple[float, float]]) -> bool:
    """Whether every coordinate of ``polygon`` is an int or float (not a bool) within ``bounds`` (x, y)."""
    if not set(map(type, polygon)) <= {int, float}:
        return False
    try:
        xy = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
    except OverflowError:  # an integer beyond any float
        return False
    (x_lo, x_hi), (y_lo, y_hi) = bounds
    # NaN fails every comparison, so it is never inside.
    return bool(((xy[:, 0] >= x_lo) & (xy[:, 0] <= x_hi) & (xy[:, 1] >= y_lo) & (xy[:, 1] <= y_hi)).all())


def annotation_mask(segmentation, height: int, width: int, where: str) -> np.ndarray | None:
    """An annotation's ``segmentation`` (polygons, RLE or uncompressed RLE) as an H×W bool mask, as
    pycocotools' ``annToMask`` decodes it; None for polygons with no area. Malformed input is one error line."""
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):  # polygons [[x1, y1, x2, y2, ...], ...]
        if not all(isinstance(p, list) and len(p) % 2 == 0 for p in segmentation):
            raise GpLossError(f"{where}: segmentation is not a list of polygons [x1, y1, x2, y2, ...] of finite "
                              f"numbers")
        _check_polygons(segmentation, height, width, where)
        polygons = [p for p in segmentation if len(p) >= 6]  # fewer than 3 points: no area
        if not polygons:
            return None
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    elif isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        size, counts = segmentation["size"], segmentation["counts"]
        if (not isinstance(size, list) or len(size) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in size) or size != [height, width]):
            raise GpLossError(f"{where}: RLE size {size!r} is not the image's [height, width] [{height}, {width}]")
        if isinstance(counts, list):
            runs = counts
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in runs):
                raise GpLossError(f"{where}: RLE counts must be integers")
        elif isinstance(counts, (str, bytes)):
            try:
                counts = counts.encode("ascii") if isinstance(counts, str) else counts
                runs = _rle_string_counts(counts)
            except (UnicodeEncodeError, ValueError) as err:
                raise GpLossError(f"{where}: RLE counts is not a COCO RLE string: {err}") from None
        else:
            raise GpLossError(f"{where}: RLE counts is a {type(counts).__name__}, not a string or a list")
        if any(v < 0 for v in runs) or sum(runs) != height * width:
            raise GpLossError(f"{where}: RLE runs cover {sum(runs)} pixels (with negative runs: "
                              f"{any(v < 0 for v in runs)}), not the image's {height}×{width} = {height * width}")
        rle = (mask_utils.frPyObjects({"size": [height, width], "counts": runs}, height, width)
               if isinstance(counts, list) else {"size": [height, width], "counts": counts})
    else:
        raise GpLossError(f"{where}: no segmentation (polygons, or an RLE with size and counts): a segmentation "
                          f"task needs every annotation's mask")
    return mask_utils.decode(rle).astype(bool)


def coco_label_map(annotations: list[dict], height: int, width: int, class_of: dict[int, int],
                   where: str) -> np.ndarray:
    """H×W uint8 class map of one image's annotations: 0 background, ``class_of[category_id]`` for objects
    (largest area first, so smaller ones stay on top), painted over their crowd regions (void, 255)."""
    label = np.zeros((height, width), dtype=np.uint8)
    crowd = [a for a in annotations if a.get("iscrowd", 0)]
    objects = sorted((a for a in annotations if not a.get("iscrowd", 0)), key=lambda a: -float(a["area"]))
    for a in crowd + objects:
        mask = annotation_mask(a.get("segmentation"), height, width, f"{where}: annotation id {a['id']}")
        if mask is not None:
            label[mask] = IGNORE if a.get("iscrowd", 0) else class_of[a["category_id"]]
    return label


def _class_of(categories: list[dict]) -> dict[int, int]:
    """Category id -> class index: the k-th category by id is class k + 1 (0 is the background)."""
    return {cid: k + 1 for k, cid in enumerate(sorted(c["id"] for c in categories))}


def digit_label_maps(coco: dict) -> np.ndarray:
    """N×H×W uint8 class maps of :func:`~gp_loss.data.canvases.draw_canvases`'s ``coco`` (digit d: class d + 1)."""
    class_of, by_image = _class_of(coco["categories"]), annotations_by_image(coco)
    return np.stack([coco_label_map(by_image.get(im["id"], []), im["height"], im["width"], class_of,
                                    f"built-in canvas {im['file_name']}") for im in coco["images"]])


# --- the three sources -------------------------------------------------------------------------------------

def _check_num_classes(num_classes: int) -> None:
    if not 0 <= num_classes <= MAX_CLASSES:
        raise GpLossError(f"task option num_classes must be 0 (from the data) or 1 to {MAX_CLASSES} "
                          f"(255 marks void pixels), got {num_classes}")


def _digits(image_size: int, num_classes: int, canvases: int, max_digits: int, data_seed: int,
            split_seed: int, val_fraction: float) -> SegmentationData:
    from gp_loss.data.canvases import draw_canvases, square_spec

    if num_classes not in (0, len(DIGIT_CLASS_NAMES)):
        raise GpLossError(f"task option num_classes is {num_classes}, but the built-in digits have "
                          f"{len(DIGIT_CLASS_NAMES)} classes (background and 0..9): give 0 or "
                          f"{len(DIGIT_CLASS_NAMES)}")
    drawn = draw_canvases(square_spec(canvases, image_size, max_digits, data_seed))
    labels = torch.from_numpy(digit_label_maps(drawn.coco))
    source = f"built-in digit canvases ({canvases} of {image_size} px, seed {data_seed})"
    splits = []
    for rows, keep in zip(seeded_split(canvases, split_seed, val_fraction, source), (False, True)):
        builder = _SplitBuilder(len(rows), image_size, keep)
        for r in rows:
            builder.add(drawn.coco["images"][r]["file_name"], drawn.images[r], labels[r])
        splits.append(builder.build())
    return SegmentationData(splits[0], splits[1], len(DIGIT_CLASS_NAMES), list(DIGIT_CLASS_NAMES), source)


def _voc(root: str, image_size: int, num_classes: int, train_split: str, val_split: str) -> SegmentationData:
    from gp_loss.data.voc import VOC_CLASSES, open_voc_split

    num_classes = num_classes or len(VOC_CLASSES)
    names = (list(VOC_CLASSES) if num_classes == len(VOC_CLASSES) else [f"class_{k}" for k in range(num_classes)])
    # Check both splits' files before reading any image: a typo in the second fails at once.
    train, val = (open_voc_split(root, s, num_classes) for s in (train_split, val_split))
    splits = []
    for split, keep in ((train, False), (val, True)):
        builder = _SplitBuilder(len(split), image_size, keep)
        for sample in split:  # one image at a time at full resolution
            builder.add(sample.name, sample.image, sample.label)
        splits.append(builder.build())
    return SegmentationData(splits[0], splits[1], num_classes, names,
                            f"{root} (VOC splits {train_split} and {val_split})")


def _read_coco(path: str):
    from gp_loss.data.coco import read_instances

    instances = read_instances(path)
    if instances.dropped.count:
        print(instances.dropped.warning(path), file=sys.stderr)
    return instances


def _fill_coco(instances, rows: list[int], builder: _SplitBuilder, class_of: dict[int, int]) -> None:
    """Images ``rows`` of ``instances`` (in its ``images`` order) into ``builder``, read one at a time."""
    from gp_loss.data.coco import load_image

    by_image = annotations_by_image(instances.dataset)
    for r in rows:
        im = instances.dataset["images"][r]
        array = load_image(instances, r)
        h, w = array.shape[:2]
        label = coco_label_map(by_image.get(im["id"], []), h, w, class_of,
                               f"{instances.source}: images[{r}] ({im['file_name']})")
        builder.add(im["file_name"], torch.from_numpy(array).permute(2, 0, 1), torch.from_numpy(label))


def _coco(data: str, val_data: str, image_size: int, num_classes: int, split_seed: int,
          val_fraction: float) -> SegmentationData:
    instances = _read_coco(data)
    categories = sorted(instances.dataset["categories"], key=lambda c: c["id"])
    ids = [c["id"] for c in categories]
    if len(ids) + 1 > MAX_CLASSES:
        raise GpLossError(f"{data}: {len(ids)} categories and the background do not fit {MAX_CLASSES} classes")
    if num_classes not in (0, len(ids) + 1):
        raise GpLossError(f"task option num_classes is {num_classes}, but {data} has {len(ids)} categories, "
                          f"{len(ids) + 1} classes with the background: give 0 or {len(ids) + 1}")
    class_of = _class_of(categories)
    names = ["background"] + [str(c.get("name", c["id"])) for c in categories]
    n = len(instances.dataset["images"])
    if val_data:
        val_instances = _read_coco(val_data)
        val_ids = sorted(c["id"] for c in val_instances.dataset["categories"])
        if val_ids != ids:
            raise GpLossError(f"{val_data}: its categories (ids {val_ids[:10]}) differ from those of {data} "
                              f"(ids {ids[:10]}): give both files the same categories")
        parts = [(instances, list(range(n)), False),
                 (val_instances, list(range(len(val_instances.dataset["images"]))), True)]
    else:
        train_rows, val_rows = seeded_split(n, split_seed, val_fraction, data)
        parts = [(instances, train_rows, False), (instances, val_rows, True)]
    splits = []
    for source, rows, keep in parts:
        builder = _SplitBuilder(len(rows), image_size, keep)
        _fill_coco(source, rows, builder, class_of)
        splits.append(builder.build())
    return SegmentationData(splits[0], splits[1], len(ids) + 1, names, data)


@lru_cache(maxsize=2)
def _load_cpu(data: str, val_data: str, image_size: int, num_classes: int, canvases: int, max_digits: int,
              data_seed: int, split_seed: int, val_fraction: float, train_split: str,
              val_split: str) -> SegmentationData:
    """The splits on the CPU (cached: a worker builds the task once per configuration)."""
    _check_num_classes(num_classes)
    if data == "digits":
        if val_data:
            raise GpLossError(f"val_data {val_data} is only read with a COCO .json data file: the built-in "
                              f"digits are split by val_fraction")
        return _digits(image_size, num_classes, canvases, max_digits, data_seed, split_seed, val_fraction)
    if data.lower().endswith(".json"):
        return _coco(data, val_data, image_size, num_classes, split_seed, val_fraction)
    if val_data:
        raise GpLossError(f"val_data {val_data} is only read with a COCO .json data file: a VOC folder's "
                          f"validation images are its val_split list ({val_split})")
    return _voc(data, image_size, num_classes, train_split, val_split)


def load_segmentation_data(data: str, val_data: str, image_size: int, num_classes: int, canvases: int,
                           max_digits: int, data_seed: int, split_seed: int, val_fraction: float,
                           train_split: str, val_split: str, device: torch.device) -> SegmentationData:
    """The task's data on ``device`` (see the module docstring)."""
    cpu = _load_cpu(data, val_data, image_size, num_classes, canvases, max_digits, data_seed, split_seed,
                    val_fraction, train_split, val_split)
    if device.type == "cpu":
        return cpu

    def move(split: SegmentationSplit) -> SegmentationSplit:
        targets = None if split.targets is None else [t.to(device) for t in split.targets]
        return SegmentationSplit(split.images.to(device), split.labels.to(device), targets, split.content,
                                 split.names)
    return SegmentationData(move(cpu.train), move(cpu.val), cpu.num_classes, cpu.class_names, cpu.source)
