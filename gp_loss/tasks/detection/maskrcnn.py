"""Mask R-CNN (He, Gkioxari, Dollár, Girshick, "Mask R-CNN", ICCV 2017) with five searchable loss branches.

Faster R-CNN's four (:mod:`.faster_rcnn`: ``rpn_cls``, ``rpn_reg``, ``rcnn_cls``, ``rcnn_reg``)
plus ``mask`` (kind ``bcls``), the five branches AutoLoss-Zero (Li et al., CVPR 2022) searches
for instance segmentation.

- :class:`GenomeMaskRPN`: :class:`~.faster_rcnn.GenomeRegionProposalNetwork` checked against
  the five-branch layout.
- :class:`GenomeMaskRoIHeads`: :class:`~.faster_rcnn.GenomeRoIHeads` with torchvision's mask
  head: in training the box losses as Faster R-CNN's, and ``mask`` in place of torchvision's
  ``maskrcnn_loss``. The branch sees, for every positive sampled RoI, the M×M mask logits of
  its ground-truth class (torchvision's predictor: M = 28) flattened to one row, and its
  ground-truth mask cropped to the proposal and resampled to M×M by torchvision's own
  ``project_masks_on_boxes``: ``x`` R×M² logits, ``y`` R×M² targets in [0, 1] (RoIAlign's
  bilinear resampling of the 0/1 mask: 0 or 1 away from its edges), ``w`` R×M² ones
  (every pixel a labelled sample, as in image classification: ``bcls``' convention without
  boxes). The raw output is summed and divided by R·M², the mean that torchvision's BCE takes,
  so the ``bce`` formula gives torchvision's ``loss_mask``.

The mask branch is element-wise, so the ``bcls`` kind's operators, probes (N×C logits against
0/1 targets) and sweeps fit it as they are. A soft Dice loss (Milletari, Navab, Ahmadi, "V-Net",
3DV 2016) sums over each RoI's pixels, which no ``bcls`` operator does: it is a code loss
(:data:`MASK_LOSSES`, ``set_mask_loss``) that trains the mask in place of the branch.

``set_pap`` (Parameterized AP Loss) replaces the four box branches as in Faster R-CNN; the
mask keeps its own loss (the genome's, the code loss, or torchvision's BCE).

Labels: 1..C as Faster R-CNN's (0 is background). Targets carry ``masks``: G×H×W uint8 (0/1)
in the (letterboxed) image's pixels, one per box.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor
from torchvision.models.detection.roi_heads import RoIHeads, maskrcnn_loss, project_masks_on_boxes

from gp_loss.errors import GpLossError
from gp_loss.language.compile import CompiledTree
from gp_loss.language.genome import Genome
from gp_loss.tasks.detection.branches import compile_branches
from gp_loss.tasks.detection.faster_rcnn import (BRANCHES as FASTER_RCNN_BRANCHES,
                                                 LOSS_TERMS as FASTER_RCNN_LOSS_TERMS, RCNN_PAP_TERM, RPN_PAP_TERM,
                                                 GenomeRegionProposalNetwork, GenomeRoIHeads)
from gp_loss.tasks.detection.normalisation import normalised_sum

BRANCHES: dict[str, str] = {**FASTER_RCNN_BRANCHES, "mask": "bcls"}
MASK_TERM = "loss_mask"
LOSS_TERMS: dict[str, str | None] = {**FASTER_RCNN_LOSS_TERMS, MASK_TERM: "mask"}
PAP_TERMS = (RPN_PAP_TERM, RCNN_PAP_TERM, MASK_TERM)
# Code losses that may train the mask in place of the ``mask`` branch.
MASK_LOSSES = ("dice",)
# The soft Dice loss's smoothing: an empty target and an all-negative prediction score 0, not 0/0.
DICE_SMOOTH = 1.0


def _compile(genome: Genome | None) -> dict[str, CompiledTree] | None:
    """All five branches, checked against Mask R-CNN's layout (each module uses its own)."""
    return compile_branches(genome, BRANCHES, "maskrcnn")


def check_mask_loss(mask_loss: str | None) -> None:
    """Raise a one-line :class:`GpLossError` unless ``mask_loss`` is ``None`` or one of :data:`MASK_LOSSES`."""
    if mask_loss is not None and mask_loss not in MASK_LOSSES:
        raise GpLossError(f"unknown mask loss {mask_loss!r}; choose one of {', '.join(MASK_LOSSES)} (or none)")


def dice_loss_rows(logits: Tensor, targets: Tensor) -> Tensor:
    """Soft Dice loss per RoI: ``1 - (2 sum(p y) + s) / (sum(p) + sum(y) + s)``, p = sigmoid(logits), s = 1.

    Args:
        logits: R×P mask logits (P pixels per RoI); targets: R×P in [0, 1].

    Returns:
        R values in [0, 1].
    """
    p = torch.sigmoid(logits.float())
    y = targets.float()
    return 1 - (2 * (p * y).sum(1) + DICE_SMOOTH) / (p.sum(1) + y.sum(1) + DICE_SMOOTH)


class GenomeMaskRPN(GenomeRegionProposalNetwork):
    """Faster R-CNN's searchable RPN, taking Mask R-CNN's five-branch genome (it uses ``rpn_cls``, ``rpn_reg``)."""

    def set_genome(self, genome: Genome | None) -> None:
        """Use ``genome``'s losses from now on (``None``: torchvision's own)."""
        self.branches = _compile(genome)


class GenomeMaskRoIHeads(GenomeRoIHeads):
    """torchvision's ``RoIHeads`` with a mask head, whose box and mask losses come from a genome.

    Takes :class:`RoIHeads`'s arguments (the mask modules included), plus ``genome`` (the five
    branches; this module uses ``rcnn_cls``, ``rcnn_reg`` and ``mask``). With ``genome``,
    PAP and the code mask loss all ``None``, training runs torchvision's forward untouched;
    evaluation always does.
    """

    def __init__(self, *args, genome: Genome | None = None, **kwargs) -> None:
        self.mask_loss: str | None = None
        super().__init__(*args, genome=genome, **kwargs)

    def set_genome(self, genome: Genome | None) -> None:
        """Use ``genome``'s losses from now on (``None``: torchvision's own)."""
        self.branches = _compile(genome)

    def set_mask_loss(self, mask_loss: str | None) -> None:
        """Train the mask with a code loss of :data:`MASK_LOSSES` in place of the ``mask`` branch (``None``:
        the branch)."""
        check_mask_loss(mask_loss)
        self.mask_loss = mask_loss

    def forward(self, features: dict[str, Tensor], proposals: list[Tensor], image_shapes: list[tuple[int, int]],
                targets: Optional[list[dict[str, Tensor]]] = None) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        """torchvision's forward; in training with a genome (or PAP, or a code mask loss), its steps with our losses.

        Returns:
            detections with ``masks`` (evaluation: per image D×1×h×w probabilities at the RoI-pooled
            size, pasted into the image by the transform) or ``[]`` (training), and the losses
            ``loss_classifier``, ``loss_box_reg`` (PAP mode: ``rcnn_pap``) and ``loss_mask``.
        """
        if not self.training or (self.branches is None and self.pap is None and self.mask_loss is None):
            return RoIHeads.forward(self, features, proposals, image_shapes, targets)
        if targets is None:
            raise ValueError("targets should not be None in training")
        sampled = self.sampled_boxes(features, proposals, image_shapes, targets)
        losses = self.box_losses(sampled)

        # The mask head on the positive sampled RoIs, as torchvision's forward runs it.
        mask_proposals, pos_matched_idxs = [], []
        for p, m, lab in zip(sampled.proposals, sampled.matched_idxs, sampled.labels):
            pos = torch.where(lab > 0)[0]
            mask_proposals.append(p[pos])
            pos_matched_idxs.append(m[pos])
        mask_logits = self.mask_predictor(self.mask_head(self.mask_roi_pool(features, mask_proposals, image_shapes)))
        gt_masks = [t["masks"] for t in targets]
        gt_labels = [t["labels"] for t in targets]
        losses[MASK_TERM] = self.mask_branch_loss(mask_logits, mask_proposals, gt_masks, gt_labels, pos_matched_idxs)
        return [], losses

    def mask_branch_loss(self, mask_logits: Tensor, proposals: list[Tensor], gt_masks: list[Tensor],
                         gt_labels: list[Tensor], matched_idxs: list[Tensor]) -> Tensor:
        """The replacement of torchvision's ``maskrcnn_loss`` (same arguments).

        Args:
            mask_logits: R×(C+1)×M×M, the positive sampled RoIs of every image in turn.
            proposals: per image its positive RoIs (P_n×4, xyxy).
            gt_masks: per image G_n×H×W ground-truth masks.
            gt_labels: per image G_n labels (1..C).
            matched_idxs: per image P_n indices into its ground truth.

        Returns:
            The ``mask`` branch's raw output summed / (R·M²) (the code loss: its mean over RoIs);
            with no positive RoI, 0 that still depends on the logits (as torchvision's).
        """
        if self.branches is None and self.mask_loss is None:
            return maskrcnn_loss(mask_logits, proposals, gt_masks, gt_labels, matched_idxs)
        m = mask_logits.shape[-1]
        labels = torch.cat([gl[i] for gl, i in zip(gt_labels, matched_idxs)])
        targets = torch.cat([project_masks_on_boxes(gm, p, i, m)
                             for gm, p, i in zip(gt_masks, proposals, matched_idxs)])
        if targets.numel() == 0:
            return mask_logits.sum() * 0
        r = labels.shape[0]
        x = mask_logits[torch.arange(r, device=labels.device), labels].flatten(1).float()  # R×M²
        y = targets.flatten(1).to(x.dtype)  # R×M²
        if self.mask_loss == "dice":
            return dice_loss_rows(x, y).mean()
        return normalised_sum(self.branches["mask"](x, y, torch.ones_like(x)), x.numel())


def set_mask_loss(model: torch.nn.Module, mask_loss: str | None) -> None:
    """Train a built Mask R-CNN's mask with the code loss ``mask_loss`` (:data:`MASK_LOSSES`; ``None``: its branch).

    Raises:
        GpLossError: a model without Mask R-CNN's searchable RoI heads, or an unknown loss (one line).
    """
    heads = [m for m in model.modules() if isinstance(m, GenomeMaskRoIHeads)]
    if not heads:
        raise GpLossError(f"{type(model).__name__} has no searchable mask head (build maskrcnn with build_detector)")
    for m in heads:
        m.set_mask_loss(mask_loss)
