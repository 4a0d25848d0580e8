"""Object detection: torchvision's FCOS, RetinaNet, Faster R-CNN and Mask R-CNN with searchable loss branches.

One module per detector's searchable heads (:mod:`.fcos`, :mod:`.retinanet`, :mod:`.faster_rcnn`,
:mod:`.maskrcnn`),
the parts they share (:mod:`.branches` checks and compiles a genome's branches, :mod:`.branch_inputs`
builds their inputs, :mod:`.normalisation` reduces them, :mod:`.box_losses` holds torchvision's
coordinate losses, :mod:`.pap_settings` Parameterized AP Loss's), and in :mod:`.models` the
registry of detectors (:data:`DETECTORS`) and :func:`build_detector`.
"""
from __future__ import annotations

from gp_loss.tasks.detection.models import (BACKBONES, BOX_DETECTORS, DETECTORS, DetectorSpec, build_detector, category_index,
                                            detector_spec, load_weights, set_genome, target_labels)

__all__ = ["BACKBONES", "BOX_DETECTORS", "DETECTORS", "DetectorSpec", "build_detector", "category_index", "detector_spec",
           "load_weights", "set_genome", "target_labels"]
