"""Paired box geometry: the regression branch inputs ``i, u, e`` from boxes."""
from __future__ import annotations

import torch

AREA_EPS = 1e-7


def paired_areas(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Intersection, union + 1e-7 and enclosing-box area + 1e-7 of box pairs.

    Args:
        pred, target: N×4 boxes (x1, y1, x2, y2), row k of one paired with row k
            of the other (unlike ``torchvision.ops.box_iou``, which is all-pairs).

    Returns:
        ``(i, u, e)``, each of shape N, differentiable with respect to ``pred``.
    """
    # Imported here: torchvision takes about two seconds to import (it pulls in
    # torch._dynamo), and every filter and search worker imports this module.
    from torchvision.ops import box_area

    lt = torch.max(pred[:, :2], target[:, :2])
    rb = torch.min(pred[:, 2:], target[:, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[:, 0] * wh[:, 1]
    union = box_area(pred) + box_area(target) - inter + AREA_EPS
    elt = torch.min(pred[:, :2], target[:, :2])
    erb = torch.max(pred[:, 2:], target[:, 2:])
    ewh = (erb - elt).clamp(min=0)
    enclose = ewh[:, 0] * ewh[:, 1] + AREA_EPS
    return inter, union, enclose
