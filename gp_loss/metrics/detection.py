"""COCO detection metrics with ``pycocotools``: AP, AP50, AP75 and AP by object size.

``coco_metrics(ground_truth, detections)`` runs ``COCOeval`` (bbox, or segm) on a
ground-truth dataset dictionary and a list of detections in COCO's result
format, silencing ``pycocotools``' printing. ``to_coco_detections`` turns a
torchvision detector's outputs on letterboxed images (:func:`gp_loss.data.coco.letterbox`)
back into the original images' coordinates and category ids first, so AP is
measured on the user's own boxes (areas included, which decide small / medium / large).
"""
from __future__ import annotations

import contextlib
import io

import torch

# COCOeval.stats[0:6], in order.
METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def coco_ground_truth(dataset: dict):
    """A ``pycocotools`` ``COCO`` object of ``dataset`` (an instances dictionary), built silently."""
    from pycocotools.coco import COCO

    gt = COCO()
    gt.dataset = {**dataset, "images": list(dataset["images"]), "annotations": list(dataset["annotations"])}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


def coco_metrics(ground_truth, detections: list[dict], image_ids: list[int] | None = None,
                 iou_type: str = "bbox") -> dict[str, float | None]:
    """COCO metrics of ``detections`` against ``ground_truth`` (a ``COCO`` object or a dataset dict).

    ``detections``: ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`` each (``iou_type``
    ``"segm"``: a ``"segmentation"`` RLE in place of the box). ``image_ids``: the images evaluated
    (default: all of the ground truth). A metric is ``None`` where no ground truth falls in its
    range (COCO reports -1); no detections at all score 0.
    """
    gt = ground_truth if not isinstance(ground_truth, dict) else coco_ground_truth(ground_truth)
    ids = sorted(gt.getImgIds()) if image_ids is None else list(image_ids)
    if not detections:
        areas = _areas_present(gt, ids)
        return {name: (0.0 if present else None) for name, present in zip(METRIC_NAMES, areas)}
    return coco_evaluate(gt, detections, iou_type, METRIC_NAMES, ids)


def coco_evaluate(gt, results: list[dict], iou_type: str, names: tuple[str, ...], image_ids: list[int] | None = None,
                  **params) -> dict[str, float | None]:
    """pycocotools' ``COCOeval`` of ``results`` (not empty; copied, since ``loadRes`` writes into them) on the
    ``COCO`` object ``gt``, silenced: ``names`` -> its ``stats`` in order, ``None`` for COCO's -1 (no ground
    truth in that range). ``params``: ``COCOeval.params`` fields to set (e.g. ``kpt_oks_sigmas``)."""
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(gt, gt.loadRes([dict(r) for r in results]), iou_type)
        if image_ids is not None:
            evaluator.params.imgIds = list(image_ids)
        for name, value in params.items():
            setattr(evaluator.params, name, value)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: (None if value < 0 else float(value)) for name, value in zip(names, evaluator.stats)}


def _areas_present(gt, ids: list[int]) -> list[bool]:
    """Whether any non-crowd ground truth of ``ids`` is in each metric's area range."""
    areas = [a["area"] for a in gt.loadAnns(gt.getAnnIds(imgIds=ids, iscrowd=False))]
    ranges = [(0, 1e10)] * 3 + [(0, 32 ** 2), (32 ** 2, 96 ** 2), (96 ** 2, 1e10)]
    return [any(lo <= a < hi for a in areas) for lo, hi in ranges]


def to_coco_detections(outputs: list[dict[str, torch.Tensor]], image_ids: list[int], scales: torch.Tensor,
                       categories: list[int]) -> list[dict]:
    """torchvision detector outputs -> COCO results in the original images' coordinates.

    ``outputs[k]``: ``boxes`` D×4 (xyxy, letterboxed pixels), ``scores`` D, ``labels`` D
    (0-based indices into ``categories``, the dataset's category ids in order);
    ``scales[k]``: the letterbox scale of image ``image_ids[k]`` (new / original).
    """
    results = []
    for out, image_id, scale in zip(outputs, image_ids, scales.tolist()):
        boxes = (out["boxes"].detach().float().cpu() / scale)
        xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1).tolist()
        for box, score, label in zip(xywh, out["scores"].tolist(), out["labels"].tolist()):
            results.append({"image_id": int(image_id), "category_id": int(categories[int(label)]),
                            "bbox": [round(v, 3) for v in box], "score": float(score)})
    return results
