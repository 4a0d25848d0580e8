"""The evaluation metrics of the probes, each defined once (higher is better).

Each takes a leading batch of samples and returns one value per sample, so that
the rejection protocol scores its B samples in one call; the simulation, with one
sample, reads its value in float64 as a Python float.
"""
from __future__ import annotations

import torch


def accuracy(logits: torch.Tensor, labels: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Fraction of rows whose argmax is the label: logits ...×N×C, labels ...×N -> ... (in ``dtype``)."""
    return (logits.argmax(-1) == labels).to(dtype).mean(-1)


def average_precision(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-row average precision, exactly as ``sklearn.metrics.average_precision_score``.

    ``AP = sum_n (R_n - R_{n-1}) P_n`` over the distinct score thresholds
    (tied scores form one threshold). Equivalently: the mean, over the
    positives, of the precision at the end of the positive's tie group.

    Args:
        scores: B×M scores (higher = more confident).
        targets: B×M binary targets; every row needs at least one positive.

    Returns:
        B average precisions.
    """
    order = torch.argsort(scores, dim=1, descending=True)
    s = torch.gather(scores, 1, order)
    t = torch.gather(targets.to(scores.dtype), 1, order)
    m = s.shape[1]
    tp = torch.cumsum(t, 1)
    rank = torch.arange(1, m + 1, dtype=s.dtype, device=s.device)
    precision = tp / rank
    # Index of the last element of each tie group: an element ends its group
    # when the next score differs; a reversed running minimum over the group
    # ends spreads that index back over the group.
    ends = torch.ones_like(s, dtype=torch.bool)
    ends[:, :-1] = s[:, :-1] != s[:, 1:]
    idx = torch.where(ends, torch.arange(m, device=s.device).expand_as(s), torch.full_like(order, m))
    group_end = torch.flip(torch.cummin(torch.flip(idx, [1]), 1).values, [1])
    return (t * torch.gather(precision, 1, group_end)).sum(1) / t.sum(1)


def mean_iou(logits: torch.Tensor, labels: torch.Tensor, classes: int,
             dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Per-sample mIoU of dense logits B×N×C×H×W against labels B×N×H×W -> B (in ``dtype``).

    Per sample, IoU per class over all its pixels, averaged over the classes
    present in the target or the prediction.
    """
    pred = logits.argmax(2)
    b = pred.shape[0]
    pred, labels = pred.reshape(b, -1), labels.reshape(b, -1)
    ious = []
    present = []
    for c in range(classes):
        p, t = pred == c, labels == c
        inter = (p & t).sum(1).to(dtype)
        union = (p | t).sum(1).to(dtype)
        ious.append(inter / union.clamp(min=1))
        present.append((union > 0).to(dtype))
    iou, pres = torch.stack(ious, 1), torch.stack(present, 1)
    return (iou * pres).sum(1) / pres.sum(1).clamp(min=1)


def mean_box_iou(intersection: torch.Tensor, union: torch.Tensor) -> torch.Tensor:
    """Mean IoU of paired boxes from their areas: ``i``, ``u`` ...×N -> ... (see :mod:`.boxes`)."""
    return (intersection / union).mean(-1)
