"""Object detection: torchvision's FCOS, RetinaNet and Faster R-CNN with searchable loss branches.

One module per detector (:mod:`.fcos`, :mod:`.retinanet`, :mod:`.faster_rcnn`), shared
helpers in :mod:`._utils`, and :func:`build_detector` in :mod:`.models`.
"""
from __future__ import annotations

from gp_loss.tasks.detection.models import (BACKBONES, BRANCH_LAYOUTS, DETECTORS, LOSS_TERMS, build_detector,
                                            category_index, load_weights, set_genome, target_labels)

__all__ = ["BACKBONES", "BRANCH_LAYOUTS", "DETECTORS", "LOSS_TERMS", "build_detector", "category_index",
           "load_weights", "set_genome", "target_labels"]
