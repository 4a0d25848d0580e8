"""torchvision's coordinate losses on the encoded box deltas, in place of a head's ``reg`` branch.

For the baselines that pair a searched (or paper) classification loss with them: the ``reg``
kind sees box areas only (i, u, e), in which L1 on coordinates cannot be written. Smooth L1
uses beta = 1/9, as torchvision's Faster R-CNN.
"""
from __future__ import annotations

import torch
from torch import Tensor

from gp_loss.errors import GpLossError

BOX_LOSSES = ("l1", "smooth_l1")
SMOOTH_L1_BETA = 1.0 / 9


def check_box_loss(box_loss: str | None) -> None:
    """Raise a one-line :class:`GpLossError` unless ``box_loss`` is ``None`` or one of :data:`BOX_LOSSES`."""
    if box_loss is not None and box_loss not in BOX_LOSSES:
        raise GpLossError(f"unknown box loss {box_loss!r}; choose one of {', '.join(BOX_LOSSES)} (or none)")


def box_loss_rows(box_loss: str, pred_deltas: Tensor, target_deltas: Tensor) -> Tensor:
    """Per-row ``l1`` or ``smooth_l1`` of P×4 predicted deltas against the P×4 encoded targets: P values."""
    f = torch.nn.functional
    if box_loss == "l1":
        return f.l1_loss(pred_deltas.float(), target_deltas.float(), reduction="none").sum(1)
    return f.smooth_l1_loss(pred_deltas.float(), target_deltas.float(), reduction="none",
                            beta=SMOOTH_L1_BETA).sum(1)
