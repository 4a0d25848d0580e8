"""How a detector head reduces a branch's raw output to its loss term: the detector's own normalisation.

FCOS and Faster R-CNN divide a sum by a count (:func:`normalised_sum`); RetinaNet takes the
mean over images of each image's sum over its foreground count (:func:`per_image_mean` of
:func:`row_sums`). Non-finite values are never masked: a NaN row makes its term NaN, and
the training loop stops on it.
"""
from __future__ import annotations

from torch import Tensor

def row_sums(o: Tensor, rows: int) -> Tensor:
    """A branch's raw output summed over everything but its rows.

    Args:
        o: the raw output: M×C, M×1 (per-row formulas) or M (``reg``); anything that broadcasts to
            ``rows`` leading rows.
        rows: M.

    Returns:
        M values.
    """
    if o.dim() == 0 or o.shape[0] != rows:  # a formula whose output broadcasts over the rows
        o = o.expand(rows, *o.shape[1:]) if o.dim() else o.expand(rows)
    return o if o.dim() == 1 else o.flatten(1).sum(dim=1)  # (flatten, not reshape: M may be 0)


def normalised_sum(o: Tensor, count: int | Tensor) -> Tensor:
    """``o.sum() / max(1, count)``: FCOS's (per foreground location) and Faster R-CNN's (per sample).

    Args:
        o: a branch's raw output (any shape).
        count: the normaliser (number of foreground locations, or of sampled anchors/RoIs).
    """
    if isinstance(count, Tensor):
        return o.sum() / count.clamp(min=1).to(o.dtype)
    return o.sum() / max(1, count)


def per_image_mean(row_values: Tensor, row_image: Tensor, image_counts: Tensor) -> Tensor:
    """RetinaNet's normalisation: per image the sum over its rows / its foreground count, then the mean.

    Args:
        row_values: M per-row losses (:func:`row_sums`).
        row_image: M image indices (0..N-1) of the rows.
        image_counts: N foreground counts (integers).

    Returns:
        A scalar: ``mean_n(sum_{rows of n} row_values / max(1, count_n))``.
    """
    n = image_counts.shape[0]
    # index_add keeps NaN/Inf: a non-finite row makes its image's term, and the mean, non-finite.
    per_image = row_values.new_zeros(n).index_add(0, row_image, row_values)
    return (per_image / image_counts.clamp(min=1).to(row_values.dtype)).sum() / max(1, n)
