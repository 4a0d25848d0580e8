"""Box geometry of the probes: paired areas (the ``reg`` branch inputs) and box decoding.

Boxes are (x1, y1, x2, y2) unless said otherwise. Format conversions are
``torchvision.ops.box_convert``'s. torchvision is imported on first use: its import
is slow (it pulls in torch._dynamo), and every filter and search worker imports
this module.
"""
from __future__ import annotations

import math

import torch

AREA_EPS = 1e-7
# Detectors clamp the log-scale deltas dw, dh at ln(1000/16) (torchvision's
# BoxCoder default), so that a runaway prediction cannot overflow exp.
SCALE_CLAMP = math.log(1000 / 16)


def convert(boxes: torch.Tensor, in_fmt: str, out_fmt: str) -> torch.Tensor:
    """``torchvision.ops.box_convert`` of ...×4 boxes (formats ``xyxy``, ``xywh``, ``cxcywh``)."""
    from torchvision.ops import box_convert

    return box_convert(boxes, in_fmt, out_fmt)


def paired_areas(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Intersection, union + 1e-7 and enclosing-box area + 1e-7 of box pairs.

    Args:
        pred, target: N×4 boxes, row k of one paired with row k of the other
            (``torchvision.ops.box_iou`` and ``generalized_box_iou`` are all-pairs).

    Returns:
        ``(i, u, e)``, each of shape N, differentiable with respect to ``pred``.
    """
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


def decode(anchors: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """Boxes from anchors and Faster R-CNN's ``(dx, dy, dw, dh)`` deltas, as detectors decode them.

    The centre moves by ``(dx, dy)`` anchor widths and heights, the size is scaled
    by ``e^dw, e^dh`` (clamped at :data:`SCALE_CLAMP`); torchvision's ``BoxCoder``
    with unit weights, except that anchors come as centre and size (``cxcywh``).

    Args:
        anchors: ...×4 anchors ``(cx, cy, w, h)``.
        deltas: ...×4.

    Returns:
        boxes ...×4 (x1, y1, x2, y2), never with a negative width or height.
    """
    centre = anchors[..., :2] + deltas[..., :2] * anchors[..., 2:]
    size = anchors[..., 2:] * torch.exp(deltas[..., 2:].clamp(max=SCALE_CLAMP))
    return convert(torch.cat([centre, size], -1), "cxcywh", "xyxy")
