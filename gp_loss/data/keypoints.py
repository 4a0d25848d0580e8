"""COCO person-keypoints data: a keypoints JSON checked entry by entry, and the built-in digits' keypoints.

``read_keypoints(path)`` reads a COCO keypoints file (as ``person_keypoints_*.json``) through
:func:`~gp_loss.data.coco.read_instances` (ids, image sizes, boxes, areas), then checks what the
pose task needs beyond boxes:

- every category has ``keypoints``, a non-empty list of names, and all categories the same
  number K of them (one network predicts K heatmaps); ``skeleton`` (optional) lists pairs of
  keypoint numbers from 1 to K, as COCO's do;
- every annotation that is not a crowd region has ``keypoints``, a flat list ``[x1, y1, v1, ...]``
  of 3K numbers: finite coordinates within the image (up to the tolerance of
  :func:`~gp_loss.data.checks.outside_tolerance`) and a visibility ``v`` of 0 (not labelled),
  1 (labelled, hidden) or 2 (labelled, visible); ``num_keypoints`` is set to the count with v > 0
  where it is missing, and must equal it where given.

Every problem is one :class:`~gp_loss.errors.GpLossError` naming the file, the entry and its id.

``add_digit_keypoints(coco)`` gives the built-in digit canvases (:mod:`gp_loss.data.canvases`)
K = 5 keypoints per digit, derived from the ink each digit shows (its mask): the topmost,
bottommost, leftmost and rightmost ink pixels (the median one along the extreme row or column,
so a flat stroke end gives its middle) and the ink centroid, each at its pixel's centre. The
derivation has no randomness: the keypoints follow from the canvases' seed.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from gp_loss.data.checks import integer_in, number_in, outside_tolerance
from gp_loss.errors import GpLossError

# The built-in digits' keypoints, and their skeleton (1-based, as COCO's): each extreme to the centre.
DIGIT_KEYPOINTS = ("top", "bottom", "left", "right", "centre")
DIGIT_SKELETON = [[1, 5], [2, 5], [3, 5], [4, 5]]

# COCO's person keypoints, in COCO's order, and their OKS sigmas (pycocotools' COCOeval defaults;
# Lin et al., "Microsoft COCO: Common Objects in Context", ECCV 2014, keypoint evaluation).
COCO_PERSON_KEYPOINTS = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder", "left_elbow",
    "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle",
    "right_ankle")
COCO_PERSON_SIGMAS = (.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87, .89, .89)
COCO_PERSON_SIGMAS = tuple(s / 10.0 for s in COCO_PERSON_SIGMAS)

KEYPOINTS_FIX = "give keypoints as [x1, y1, v1, x2, y2, v2, ...], 3 numbers per keypoint of the category"
VISIBILITY_FIX = "give v = 0 (not labelled), 1 (labelled, not visible) or 2 (labelled and visible)"


def keypoint_names(categories: list[dict], where: str) -> tuple[list[str], list[list[int]]]:
    """The keypoint names all ``categories`` share (their number K, at least) and the first category's skeleton.

    Raises:
        GpLossError: a category without ``keypoints``, categories with different K, a bad skeleton.
    """
    names: list[str] | None = None
    skeleton: list[list[int]] = []
    for i, c in enumerate(categories):
        at = f"{where}: categories[{i}] (id {c.get('id')})"
        kp = c.get("keypoints")
        if not isinstance(kp, list) or not kp or not all(isinstance(n, str) for n in kp):
            raise GpLossError(f"{at} has no 'keypoints' (a list of keypoint names): a pose task needs the "
                              f"names of every category's keypoints, as COCO's person category has them")
        if names is None:
            names = list(kp)
        elif len(kp) != len(names):
            raise GpLossError(f"{at} has {len(kp)} keypoints but categories[0] has {len(names)}: give every "
                              f"category the same number of keypoints (one network predicts them all)")
        sk = c.get("skeleton", [])
        if not (isinstance(sk, list) and all(isinstance(p, list) and len(p) == 2 and all(
                isinstance(k, int) and not isinstance(k, bool) and 1 <= k <= len(kp) for k in p) for p in sk)):
            raise GpLossError(f"{at}: skeleton must be a list of pairs [a, b] of keypoint numbers from 1 to "
                              f"{len(kp)}, got {str(sk)[:80]}")
        if i == 0:
            skeleton = [list(p) for p in sk]
    assert names is not None  # read_instances refuses a file without categories
    return names, skeleton


def check_annotation_keypoints(a: dict, k: int, width: int, height: int, where: str) -> dict:
    """The annotation ``a`` with its ``keypoints`` checked (3K numbers, finite, inside its image, v in {0, 1, 2})
    and ``num_keypoints`` set; a crowd region without keypoints gets K unlabelled ones."""
    kp = a.get("keypoints")
    if kp is None and a.get("iscrowd", 0):
        return {**a, "keypoints": [0] * (3 * k), "num_keypoints": 0}
    if not isinstance(kp, list) or len(kp) != 3 * k:
        got = f"{len(kp)} values" if isinstance(kp, list) else ("none" if kp is None else type(kp).__name__)
        raise GpLossError(f"{where}: keypoints must be a list of 3 × {k} = {3 * k} values (x, y, v per keypoint "
                          f"of its category), got {got}: {KEYPOINTS_FIX}")
    tw, th = outside_tolerance(width), outside_tolerance(height)
    fix = f"{KEYPOINTS_FIX}, in the image's pixels (the image is {width}×{height})"
    values: list[float] = []
    for j in range(k):
        v = kp[3 * j + 2]
        if v not in (0, 1, 2) or isinstance(v, bool) or (isinstance(v, float) and not float(v).is_integer()):
            raise GpLossError(f"{where}: keypoint {j + 1} has visibility {v!r}: {VISIBILITY_FIX}")
        v = int(v)
        x = number_in(kp[3 * j], -tw, width + tw, where, f"keypoint {j + 1} x", fix)
        y = number_in(kp[3 * j + 1], -th, height + th, where, f"keypoint {j + 1} y", fix)
        values += [x, y, v]
    labelled = sum(1 for j in range(k) if values[3 * j + 2] > 0)
    if "num_keypoints" in a:
        given = integer_in(a["num_keypoints"], 0, k, where, "num_keypoints",
                           "give the number of keypoints with v > 0, or leave it out")
        if given != labelled:
            raise GpLossError(f"{where}: num_keypoints is {given} but {labelled} keypoints have v > 0: give "
                              f"the number of labelled keypoints, or leave it out")
    return {**a, "keypoints": values, "num_keypoints": labelled}


def read_keypoints(path: str | Path):
    """Read and check a COCO keypoints JSON (see the module docstring): the checked
    :class:`~gp_loss.data.coco.Instances`, the keypoint names and the skeleton."""
    from gp_loss.data.coco import read_instances

    instances = read_instances(path)
    dataset = instances.dataset
    names, skeleton = keypoint_names(dataset["categories"], str(path))
    sizes = {im["id"]: (im["width"], im["height"]) for im in dataset["images"]}
    # read_instances keeps the annotations' order and drops only those with no box; name each by its id.
    dataset["annotations"] = [
        check_annotation_keypoints(a, len(names), *sizes[a["image_id"]], f"{path}: annotation id {a['id']}")
        for a in dataset["annotations"]]
    return instances, names, skeleton


# --- the built-in digits --------------------------------------------------------------------------------------

def ink_keypoints(mask: np.ndarray) -> list[float]:
    """``[x, y, 2] × 5`` of an H×W bool ink mask (:data:`DIGIT_KEYPOINTS`), each at its pixel's centre;
    all zeros (v = 0) for an empty mask."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return [0.0] * (3 * len(DIGIT_KEYPOINTS))

    def median_of(values: np.ndarray) -> float:
        return float(np.sort(values)[(len(values) - 1) // 2])  # an ink pixel itself, not between two

    top, bottom, left, right = ys.min(), ys.max(), xs.min(), xs.max()
    points = [(median_of(xs[ys == top]), top), (median_of(xs[ys == bottom]), bottom),
              (left, median_of(ys[xs == left])), (right, median_of(ys[xs == right])),
              (float(xs.mean()), float(ys.mean()))]
    return [c for x, y in points for c in (float(x) + 0.5, float(y) + 0.5, 2)]


def add_digit_keypoints(coco: dict) -> dict:
    """``coco`` (from :func:`~gp_loss.data.canvases.draw_canvases`) with the digits' keypoints: each category's
    ``keypoints`` and ``skeleton``, each annotation's ``keypoints`` (from its RLE mask) and ``num_keypoints``."""
    from pycocotools import mask as mask_utils

    annotations = []
    for a in coco["annotations"]:
        mask = mask_utils.decode(a["segmentation"]).astype(bool)
        kp = ink_keypoints(mask)
        annotations.append({**a, "keypoints": kp, "num_keypoints": sum(1 for v in kp[2::3] if v > 0)})
    categories = [{**c, "keypoints": list(DIGIT_KEYPOINTS), "skeleton": [list(p) for p in DIGIT_SKELETON]}
                  for c in coco["categories"]]
    return {**coco, "annotations": annotations, "categories": categories}


def default_sigmas(names: list[str]) -> tuple[float, ...] | None:
    """COCO's 17 person sigmas when ``names`` are COCO's person keypoints (in its order), else ``None``."""
    return COCO_PERSON_SIGMAS if tuple(names) == COCO_PERSON_KEYPOINTS else None
