"""The inputs of a detector head's loss branches, one function per kind: ``bcls``, ``cls``, ``reg``.

The heads hand these to the compiled branches (:mod:`.branches`); with the detector's own
normalisation (:mod:`.normalisation`) the Focal and GIoU formulas then reproduce
torchvision's loss values. Everything here is vectorised over rows (anchors, locations,
RoIs) and never masks non-finite values: a NaN in a branch's output reaches its loss term,
and the training loop stops on it.
"""
from __future__ import annotations

import torch
from torch import Tensor

from gp_loss.probes.boxes import paired_areas

# The smallest weight a positive carries (the ``cls`` kind's definition: w >= 1e-7), so that a
# positive whose predicted box misses its ground truth is still told apart from background (w = 0
# for ``bcls``).
MIN_IOU_WEIGHT = 1e-7


def paired_iou(pred: Tensor, target: Tensor) -> Tensor:
    """Detached IoU of box pairs: row k of ``pred`` (P×4, xyxy) with row k of ``target`` (P×4).

    Computed from :func:`~gp_loss.probes.boxes.paired_areas` (so it is the ``i / u`` a ``reg``
    branch sees) on detached boxes: the IoU weight ``w`` carries no gradient.

    Returns:
        P values in [0, 1].
    """
    i, u, _ = paired_areas(pred.detach().float(), target.detach().float())
    return i / u


def bcls_inputs(logits: Tensor, fg_rows: Tensor, fg_classes: Tensor, fg_iou: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Inputs ``(x, y, w)`` of a ``bcls`` branch (sigmoid classification, one logit per class).

    Args:
        logits: M×C logits (one row per location/anchor, no background column).
        fg_rows: F row indices of the foreground rows.
        fg_classes: F class indices (0..C-1) of those rows' ground truth.
        fg_iou: F detached IoUs of those rows' decoded boxes with their ground truth.

    Returns:
        ``x`` M×C float32 logits; ``y`` M×C binary one-hot (an all-zero row for background);
        ``w`` M×C: the IoU (at least :data:`MIN_IOU_WEIGHT`) at the target class, 0 elsewhere.
    """
    x = logits.float()  # the operators are written for fp32 (under autocast logits may be bf16)
    y = torch.zeros_like(x)
    y[fg_rows, fg_classes] = 1.0
    w = torch.zeros_like(x)
    w[fg_rows, fg_classes] = fg_iou.to(x.dtype).clamp(min=MIN_IOU_WEIGHT)
    return x, y, w


def cls_inputs(logits: Tensor, labels: Tensor, fg_iou: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Inputs ``(x, y, w)`` of a ``cls`` branch (softmax over K classes, the LAST one background).

    Args:
        logits: M×K logits, background in column K-1 (the kind's convention).
        labels: M class indices in 0..K-1, K-1 for background.
        fg_iou: M detached IoUs of the rows' decoded boxes with their ground truth (read at the
            foreground rows only).

    Returns:
        ``x`` M×K float32; ``y`` M×K one-hot; ``w`` M×K: per row the IoU (at least
        :data:`MIN_IOU_WEIGHT`) for foreground, 1 for background, the same over all classes.
    """
    x = logits.float()
    k = x.shape[1]
    y = torch.nn.functional.one_hot(labels, k).to(x.dtype)
    background = labels == k - 1
    w = torch.where(background, torch.ones_like(fg_iou, dtype=x.dtype), fg_iou.to(x.dtype).clamp(min=MIN_IOU_WEIGHT))
    return x, y, w[:, None].expand(-1, k)


def reg_inputs(pred_boxes: Tensor, target_boxes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Inputs ``(i, u, e)`` of a ``reg`` branch from P decoded predicted boxes and their targets.

    Args:
        pred_boxes: P×4 decoded predicted boxes (x1, y1, x2, y2), differentiable.
        target_boxes: P×4 matched ground-truth boxes.

    Returns:
        ``i`` intersection, ``u`` union + 1e-7, ``e`` enclosing-box area + 1e-7, each P float32.
    """
    return paired_areas(pred_boxes.float(), target_boxes.float())
