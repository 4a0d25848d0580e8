"""The CSE-Autoloss loss kinds (Liu et al., ICLR 2021): ``cls``, ``bcls`` and ``reg``."""
from __future__ import annotations

from primitives.cse_ops import BINARY_CLASS_EXCLUDED, OPERATORS, REGRESSION_EXCLUDED
from primitives.kind import Kind, build_kind

SEARCH_CONSTANTS = (1, 2, 3)


def _without(names: tuple[str, ...]):
    return {k: v for k, v in OPERATORS.items() if k not in names}


CLS: Kind = build_kind(
    "cls",
    "multi-class (softmax) classification, e.g. the Faster R-CNN box head",
    {
        "x": "logits, N×C",
        "y": "one-hot labels, N×C",
        "w": "sample weight, N×C: in detection the IoU of the sample's box with its ground truth "
             "(detached, >= 1e-7), broadcast over classes for positives, 1 for background; "
             "1 in image classification (no boxes)",
    },
    prediction="x",
    operators=dict(OPERATORS),
    search_constants=SEARCH_CONSTANTS,
)

BCLS: Kind = build_kind(
    "bcls",
    "binary (sigmoid) classification, e.g. FCOS, RetinaNet, RPN",
    {
        "x": "logits, N×C",
        "y": "binary targets, N×C",
        "w": "sample weight, N×C: in detection the IoU at the ground-truth class of positive samples, "
             "0 elsewhere; 1 in image classification (no boxes)",
    },
    prediction="x",
    operators=_without(BINARY_CLASS_EXCLUDED),
    search_constants=SEARCH_CONSTANTS,
)

REG: Kind = build_kind(
    "reg",
    "box regression on the areas of predicted and target boxes",
    {
        "i": "intersection area of predicted and target box, N",
        "u": "union area + 1e-7, N",
        "e": "area of the smallest enclosing box + 1e-7, N",
    },
    prediction="i",
    operators=_without(REGRESSION_EXCLUDED),
    search_constants=SEARCH_CONSTANTS,
)
