"""RetinaNet (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017) with searchable losses.

:class:`GenomeRetinaNetHead` is torchvision's
:class:`~torchvision.models.detection.retinanet.RetinaNetHead` whose ``compute_loss``
takes both losses from a genome: branch ``cls`` (kind ``bcls``) and branch ``reg``
(kind ``reg``). The head, not its two sub-heads, is overridden because the
classification branch's IoU weight ``w`` needs the regression head's decoded boxes.

Normalisation as torchvision's: per image, the sum over its non-ignored anchors
(classification) or its foreground anchors (regression) divided by max(1, that
image's foreground count), then the mean over images. The regression branch sees
boxes decoded from the predicted deltas against the anchors with the regression
head's box coder, so IoU-type losses apply; torchvision's default regression loss
(L1 on the deltas, ``regression_head._loss_type == "l1"``) is what a genome
replaces. Sub-module and parameter names stay torchvision's.

Parameterized AP Loss (:meth:`GenomeRetinaNetHead.set_pap`; Tao et al., NeurIPS 2021) replaces
both branches by ONE loss term ``pap``: the logits of every anchor × class of the batch, flattened
(image, anchor, class), with targets +1 at (foreground anchor, its ground-truth class), 0 elsewhere
and −1 at every class of the anchors torchvision ignores (between the matcher's thresholds,
``matched_idxs == -2``); each positive's quality is the GIoU of its box decoded from the predicted
deltas against its anchor (the box coder's ``decode_single``) with its ground truth, in the
positives' flattened order. The boxes learn only through that GIoU (scaled by the parameters'
gradient scale).

Labels: RetinaNet's targets use class indices 0..C-1 (no background index).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn
from torchvision.models.detection.retinanet import RetinaNetHead

from gp_loss.language.genome import Genome
from gp_loss.pap.loss import DEFAULT_TOP_K
from gp_loss.pap.substitutions import PAPParameters
from gp_loss.tasks.detection.box_losses import box_loss_rows, check_box_loss
from gp_loss.tasks.detection.branch_inputs import bcls_inputs, paired_iou, reg_inputs
from gp_loss.tasks.detection.branches import compile_branches
from gp_loss.tasks.detection.normalisation import per_image_mean, row_sums
from gp_loss.tasks.detection.pap_settings import PAPSettings, paired_giou, pap_settings

BRANCHES: dict[str, str] = {"cls": "bcls", "reg": "reg"}
LOSS_TERMS: dict[str, str | None] = {"classification": "cls", "bbox_regression": "reg"}
# The loss term of the PAP mode (one loss for both branches).
PAP_TERM = "pap"


class GenomeRetinaNetHead(RetinaNetHead):
    """torchvision's RetinaNet head with the ``cls``/``reg`` losses taken from a genome.

    Args:
        in_channels, num_anchors, num_classes, norm_layer: as :class:`RetinaNetHead`
            (``num_classes`` = foreground classes, labels 0..C-1).
        genome: branches ``cls`` (``bcls``) and ``reg`` (``reg``); ``None`` keeps torchvision's
            loss code untouched (the "torchvision" baseline).
        box_loss: ``"l1"`` or ``"smooth_l1"`` on the encoded deltas in place of the ``reg`` branch
            (baselines such as Focal + L1), or ``None``.
    """

    def __init__(self, in_channels: int, num_anchors: int, num_classes: int,
                 norm_layer: Callable[..., nn.Module] | None = None, genome: Genome | None = None,
                 box_loss: str | None = None) -> None:
        super().__init__(in_channels, num_anchors, num_classes, norm_layer=norm_layer)
        self.pap: PAPSettings | None = None
        self.set_genome(genome, box_loss)

    def set_genome(self, genome: Genome | None, box_loss: str | None = None) -> None:
        """Use ``genome``'s losses from now on (``None``: torchvision's own), ``box_loss`` for ``reg`` if given."""
        check_box_loss(box_loss)
        self.branches = compile_branches(genome, BRANCHES, "retinanet")
        self.box_loss = box_loss if genome is not None else None

    def set_pap(self, params: PAPParameters | None, top_k: int = DEFAULT_TOP_K, block_h1_gradient: bool = True,
                per_image: bool = False) -> None:
        """Train with Parameterized AP Loss from now on (``None``: off, back to the genome's or
        torchvision's losses, which PAP overrides while on). See :class:`~.pap_settings.PAPSettings`."""
        self.pap = pap_settings(params, top_k, block_h1_gradient, per_image)

    def compute_loss(self, targets: list[dict[str, Tensor]], head_outputs: dict[str, Tensor],
                     anchors: list[Tensor], matched_idxs: list[Tensor]) -> dict[str, Tensor]:
        """The loss terms ``classification`` and ``bbox_regression`` (PAP mode: the one term ``pap``).

        Args:
            targets: per image ``boxes`` G×4 (xyxy) and ``labels`` G (0..C-1).
            head_outputs: ``cls_logits`` N×A×C, ``bbox_regression`` N×A×4 (deltas).
            anchors: per image A×4 anchor boxes.
            matched_idxs: per image A: ground-truth index, -1 background, -2 ignored
                (between the matcher's thresholds).
        """
        if self.pap is not None:
            return {PAP_TERM: self.pap_loss(targets, head_outputs, anchors, matched_idxs)}
        if self.branches is None:
            return super().compute_loss(targets, head_outputs, anchors, matched_idxs)
        cls_logits = head_outputs["cls_logits"]  # N×A×C
        bbox_regression = head_outputs["bbox_regression"]  # N×A×4
        n, a, num_classes = cls_logits.shape
        matched = torch.stack(matched_idxs)  # N×A
        foreground = matched >= 0

        # Matched labels and boxes per anchor (the loop is over images: their ground truths differ in size).
        gt_labels = torch.stack([t["labels"][m.clip(min=0)] if len(t["labels"]) else t["labels"].new_zeros(a)
                                 for t, m in zip(targets, matched_idxs)])  # N×A
        gt_boxes = torch.stack([t["boxes"][m.clip(min=0)] if len(t["boxes"]) else t["boxes"].new_zeros(a, 4)
                                for t, m in zip(targets, matched_idxs)])  # N×A×4
        gt_fg = gt_boxes[foreground]  # F×4, rows in (image, anchor) order
        pred_fg = self.regression_head.box_coder.decode_single(bbox_regression[foreground],
                                                               torch.stack(anchors)[foreground])  # F×4
        fg_counts = foreground.sum(dim=1)  # N
        fg_image = foreground.nonzero()[:, 0]  # F

        # cls over the non-ignored anchors of all images; rows keep (image, anchor) order, so the
        # foreground rows among them are, in order, the F foreground anchors above.
        valid = matched != self.classification_head.BETWEEN_THRESHOLDS  # N×A
        fg_rows = foreground[valid].nonzero().squeeze(1)
        x, y, w = bcls_inputs(cls_logits[valid], fg_rows, gt_labels[foreground], paired_iou(pred_fg, gt_fg))
        o_cls = self.branches["cls"](x, y, w)
        valid_image = valid.nonzero()[:, 0]
        loss_cls = per_image_mean(row_sums(o_cls, x.shape[0]), valid_image, fg_counts)

        if self.box_loss is None:
            o_reg = self.branches["reg"](*reg_inputs(pred_fg, gt_fg))
        else:  # torchvision's coordinate loss on the deltas, as its regression head's _loss_type
            target = self.regression_head.box_coder.encode_single(gt_fg, torch.stack(anchors)[foreground])
            o_reg = box_loss_rows(self.box_loss, bbox_regression[foreground], target)
        loss_reg = per_image_mean(row_sums(o_reg, pred_fg.shape[0]), fg_image, fg_counts)
        return {"classification": loss_cls, "bbox_regression": loss_reg}

    def pap_loss(self, targets: list[dict[str, Tensor]], head_outputs: dict[str, Tensor],
                 anchors: list[Tensor], matched_idxs: list[Tensor]) -> Tensor:
        """Parameterized AP Loss of the whole batch (the arguments as :meth:`compute_loss`'s).

        Logits N×A×C flattened; targets +1 at (foreground anchor, its class), −1 at every class of
        an ignored anchor (``matched_idxs == -2``), 0 elsewhere; the positives' qualities: the GIoU
        of their decoded boxes with their ground truth, in (image, anchor) order, which is the
        positives' flattened order (one positive class per foreground anchor).
        """
        if self.pap is None:
            raise ValueError("pap_loss: PAP-Loss is off (set_pap)")
        cls_logits = head_outputs["cls_logits"]  # N×A×C
        bbox_regression = head_outputs["bbox_regression"]  # N×A×4
        n, a, c = cls_logits.shape
        matched = torch.stack(matched_idxs)  # N×A
        foreground = matched >= 0
        fg = foreground.nonzero()  # F×2 (image, anchor), row-major
        gt_labels = torch.cat([t["labels"][m[m >= 0]] for t, m in zip(targets, matched_idxs)])  # F
        gt_boxes = torch.cat([t["boxes"][m[m >= 0]] for t, m in zip(targets, matched_idxs)])  # F×4
        labels = torch.zeros((n, a, c), dtype=torch.int8, device=cls_logits.device)
        labels[fg[:, 0], fg[:, 1], gt_labels] = 1
        labels[matched == self.classification_head.BETWEEN_THRESHOLDS] = -1
        pred_fg = self.regression_head.box_coder.decode_single(bbox_regression[foreground].float(),
                                                               torch.stack(anchors)[foreground].float())
        ious = paired_giou(pred_fg, gt_boxes)
        image = torch.arange(n, device=cls_logits.device)[:, None, None].expand(n, a, c)
        return self.pap.loss(cls_logits, labels, ious, image)
