"""COCO keypoint metrics with ``pycocotools``: OKS AP, AP50, AP75, by size, and the recalls.

``keypoint_metrics(ground_truth, predictions, sigmas)`` runs ``COCOeval`` with
``iouType="keypoints"``: a prediction matches a ground-truth instance by its object keypoint
similarity, OKS = mean over labelled keypoints of exp(-d² / (2 s² (2σ)²)), d the distance,
s² the instance's ``area`` and σ the keypoint's sigma (``params.kpt_oks_sigmas``). COCO's
person keypoints have their own 17 sigmas (:data:`~gp_loss.data.keypoints.COCO_PERSON_SIGMAS`);
any other K keypoints take the sigmas given.
"""
from __future__ import annotations

import numpy as np

from gp_loss.metrics.detection import coco_evaluate, coco_ground_truth

# COCOeval.stats of iouType "keypoints", in order.
METRIC_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")


def keypoint_metrics(ground_truth, predictions: list[dict], sigmas: list[float] | tuple[float, ...],
                     image_ids: list[int] | None = None) -> dict[str, float | None]:
    """COCO keypoint metrics of ``predictions`` against ``ground_truth`` (a ``COCO`` object or a dataset dict).

    ``predictions``: ``{"image_id", "category_id", "keypoints": [x1, y1, v1, ...] (3K), "score"}`` each.
    ``sigmas``: K OKS sigmas. ``image_ids``: the images evaluated (default: all of the ground truth).
    A metric is ``None`` where no ground truth falls in its range (COCO reports -1); no
    predictions at all score 0.
    """
    gt = coco_ground_truth(ground_truth) if isinstance(ground_truth, dict) else ground_truth
    if not predictions:
        return {name: 0.0 for name in METRIC_NAMES}
    return coco_evaluate(gt, predictions, "keypoints", METRIC_NAMES, image_ids,
                         kpt_oks_sigmas=np.asarray(sigmas, dtype=np.float64))
