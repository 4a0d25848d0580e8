"""The one definition of how a branch's output tensor becomes the scalar loss.

As AutoLoss-Zero Eq. 2, with no division by the number of classes (as with
cross-entropy):

- ``cls``, ``bcls``: output o is N×C (or N per sample); ``L = o.sum() / N``:
  sum over classes, mean over samples;
- ``reg``: output o is N (one value per box pair); ``L = o.mean()``;
- ``zero``: output o is N×C×H×W; ``L = o.sum() / (N*H*W)``.

``REDUCTION_SOURCE`` holds the same rules as Python text for exported code.
"""
from __future__ import annotations

import torch


def _per_sample(o: torch.Tensor) -> torch.Tensor:
    return o.sum() / o.shape[0]


def _mean(o: torch.Tensor) -> torch.Tensor:
    return o.mean()


def _per_pixel(o: torch.Tensor) -> torch.Tensor:
    return o.sum() / (o.shape[0] * o.shape[2] * o.shape[3])


REDUCTIONS = {"cls": _per_sample, "bcls": _per_sample, "reg": _mean, "zero": _per_pixel}

REDUCTION_SOURCE = {
    "cls": "o.sum() / o.shape[0]",
    "bcls": "o.sum() / o.shape[0]",
    "reg": "o.mean()",
    "zero": "o.sum() / (o.shape[0] * o.shape[2] * o.shape[3])",
}

REDUCTION_DOC = {
    "cls": "sum over classes, mean over samples",
    "bcls": "sum over classes, mean over samples",
    "reg": "mean over box pairs",
    "zero": "sum over all elements / (N*H*W)",
}


def reduction_scale(kind_name: str, shape: tuple[int, ...]) -> float:
    """The factor ``c`` with ``reduce_output(kind_name, o) == c * o.sum()`` for an output of ``shape``.

    Every reduction is a sum times a constant, so the gradient of the loss with
    respect to each output element is ``c``.
    """
    if kind_name == "reg":
        numel = 1
        for size in shape:
            numel *= size
        return 1.0 / numel
    if kind_name == "zero":
        return 1.0 / (shape[0] * shape[2] * shape[3])
    if kind_name in ("cls", "bcls"):
        return 1.0 / shape[0]
    raise KeyError(kind_name)


def reduce_output(kind_name: str, o: torch.Tensor) -> torch.Tensor:
    """Reduce a branch output ``o`` to the scalar loss of kind ``kind_name``."""
    return REDUCTIONS[kind_name](o)
