"""Parameterized AP Loss (Tao et al., NeurIPS 2021) in a detector head: one ranking loss in place of
the ``cls`` and ``reg`` branches.

:class:`PAPSettings` holds its parameters and options (:func:`pap_settings` checks them),
:func:`paired_giou` the positives' box quality it ranks with.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from gp_loss.errors import GpLossError
from gp_loss.pap.loss import DEFAULT_TOP_K, pap_loss
from gp_loss.pap.substitutions import PAPParameters
from gp_loss.probes.boxes import paired_areas

def paired_giou(pred: Tensor, target: Tensor) -> Tensor:
    """GIoU of box pairs, row k of ``pred`` (P×4, xyxy) with row k of ``target``, differentiable with
    respect to ``pred``: ``i/u − (e − u)/e`` from :func:`~gp_loss.probes.boxes.paired_areas` (float32),
    the same areas a ``reg`` branch sees. P values in [−1, 1]."""
    i, u, e = paired_areas(pred.float(), target.float())
    return i / u - (e - u) / e


@dataclass(frozen=True)
class PAPSettings:
    """How a head trains with Parameterized AP Loss (:func:`gp_loss.pap.loss.pap_loss`).

    ``params``: the substitutions and the regression gradient scale; ``top_k``: candidates kept
    per ranking; ``block_h1_gradient``: detach the rank's H1 term (the paper's default; ``False`` is
    the ablation); ``per_image``: rank within each image (the mean over the images with positives)
    instead of over the whole batch.
    """

    params: PAPParameters
    top_k: int = DEFAULT_TOP_K
    block_h1_gradient: bool = True
    per_image: bool = False

    def loss(self, logits: Tensor, targets: Tensor, ious: Tensor, image_index: Tensor) -> Tensor:
        """The loss of ``logits`` (any shape), ``targets`` (+1/0/−1, same shape), ``ious`` (the
        positives' GIoU in flattened order) and ``image_index`` (same shape as the logits; used in
        per-image mode only)."""
        return pap_loss(logits, targets, ious, self.params, self.top_k, self.block_h1_gradient,
                        image_index if self.per_image else None)


def pap_settings(params: PAPParameters | None, top_k: int = DEFAULT_TOP_K, block_h1_gradient: bool = True,
                 per_image: bool = False) -> PAPSettings | None:
    """Checked :class:`PAPSettings` (``None`` when ``params`` is: PAP off).

    Raises:
        GpLossError: parameters that are not :class:`PAPParameters`, a ``top_k`` that is not a
            positive integer, flags that are not booleans (one line each).
    """
    if params is None:
        return None
    if not isinstance(params, PAPParameters):
        raise GpLossError(f"PAP-Loss needs PAPParameters, got {type(params).__name__}")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise GpLossError(f"PAP-Loss top_k must be a positive integer, got {top_k!r}")
    for name, flag in (("block_h1_gradient", block_h1_gradient), ("per_image", per_image)):
        if not isinstance(flag, bool):
            raise GpLossError(f"PAP-Loss {name} must be True or False, got {flag!r}")
    return PAPSettings(params, top_k, block_h1_gradient, per_image)
