"""FCOS (Tian et al., "FCOS: Fully Convolutional One-Stage Object Detection", ICCV 2019) with searchable losses.

:class:`GenomeFCOSHead` is torchvision's :class:`~torchvision.models.detection.fcos.FCOSHead`
whose ``compute_loss`` takes the classification and box-regression losses from a
genome: branch ``cls`` of kind ``bcls`` and branch ``reg`` of kind ``reg``. The
centerness loss stays exactly as torchvision computes it, and so do the target
assignment (:meth:`torchvision.models.detection.FCOS.compute_loss`) and the
normalisation: each term is a sum over locations divided by max(1, number of
foreground locations in the batch). With the genome sigmoid focal loss (Lin et al.,
ICCV 2017) + GIoU (Rezatofighi et al., CVPR 2019) the terms equal torchvision's.

Parameterized AP Loss (:meth:`GenomeFCOSHead.set_pap`; Tao et al., NeurIPS 2021) replaces the
classification and box terms by ONE loss term ``pap``: the logits of every location × class of the
batch, flattened (image, location, class), with targets +1 at (foreground location, its
ground-truth class) and 0 elsewhere (FCOS ignores no location); each positive's quality is the GIoU
of its box decoded from the predicted ltrb distances (the box coder's ``decode``, as above) with
its ground truth, in the positives' flattened order. The centerness BCE stays torchvision's, as
its own term ``bbox_ctrness``.

Labels: FCOS's targets use class indices 0..C-1 (no background index).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.models.detection.fcos import FCOSHead

from gp_loss.language.genome import Genome
from gp_loss.pap.loss import DEFAULT_TOP_K
from gp_loss.pap.substitutions import PAPParameters
from gp_loss.tasks.detection.box_losses import box_loss_rows, check_box_loss
from gp_loss.tasks.detection.branch_inputs import bcls_inputs, paired_iou, reg_inputs
from gp_loss.tasks.detection.branches import compile_branches
from gp_loss.tasks.detection.normalisation import normalised_sum
from gp_loss.tasks.detection.pap_settings import PAPSettings, paired_giou, pap_settings

BRANCHES: dict[str, str] = {"cls": "bcls", "reg": "reg"}
# The loss term each branch yields (``None``: a term the genome does not touch).
LOSS_TERMS: dict[str, str | None] = {"classification": "cls", "bbox_regression": "reg", "bbox_ctrness": None}
# The loss term of the PAP mode (one loss for cls and reg; bbox_ctrness stays).
PAP_TERM = "pap"


class GenomeFCOSHead(FCOSHead):
    """torchvision's FCOS head with the ``cls``/``reg`` losses taken from a genome.

    Args:
        in_channels, num_anchors, num_classes, num_convs: as :class:`FCOSHead`
            (``num_classes`` = foreground classes, labels 0..C-1).
        genome: branches ``cls`` (``bcls``) and ``reg`` (``reg``); ``None`` keeps
            torchvision's loss code untouched (the "torchvision" baseline).
        box_loss: ``"l1"`` or ``"smooth_l1"`` on the encoded ltrb deltas in place of the ``reg``
            branch (baselines such as Focal + L1), or ``None``.

    Parameter names are :class:`FCOSHead`'s, so state dicts load either way.
    """

    def __init__(self, in_channels: int, num_anchors: int, num_classes: int, num_convs: int = 4,
                 genome: Genome | None = None, box_loss: str | None = None) -> None:
        super().__init__(in_channels, num_anchors, num_classes, num_convs)
        self.pap: PAPSettings | None = None
        self.set_genome(genome, box_loss)

    def set_genome(self, genome: Genome | None, box_loss: str | None = None) -> None:
        """Use ``genome``'s losses from now on (``None``: torchvision's own), ``box_loss`` for ``reg`` if given."""
        check_box_loss(box_loss)
        self.branches = compile_branches(genome, BRANCHES, "fcos")
        self.box_loss = box_loss if genome is not None else None

    def set_pap(self, params: PAPParameters | None, top_k: int = DEFAULT_TOP_K, block_h1_gradient: bool = True,
                per_image: bool = False) -> None:
        """Train with Parameterized AP Loss from now on (``None``: off, back to the genome's or
        torchvision's losses, which PAP overrides while on). See :class:`~.pap_settings.PAPSettings`."""
        self.pap = pap_settings(params, top_k, block_h1_gradient, per_image)

    def compute_loss(self, targets: list[dict[str, Tensor]], head_outputs: dict[str, Tensor],
                     anchors: list[Tensor], matched_idxs: list[Tensor]) -> dict[str, Tensor]:
        """The loss terms ``classification``, ``bbox_regression``, ``bbox_ctrness`` (PAP mode: ``pap``
        and ``bbox_ctrness``).

        Args:
            targets: per image ``boxes`` G×4 (xyxy) and ``labels`` G (0..C-1).
            head_outputs: ``cls_logits`` N×A×C, ``bbox_regression`` N×A×4 (ltrb, normalised by the
                anchor size), ``bbox_ctrness`` N×A×1.
            anchors: per image A×4 anchor boxes (one per location).
            matched_idxs: per image A indices into its ground truth, -1 for background.
        """
        if self.pap is not None:
            return self.pap_loss(targets, head_outputs, anchors, matched_idxs)
        if self.branches is None:
            return super().compute_loss(targets, head_outputs, anchors, matched_idxs)
        cls_logits = head_outputs["cls_logits"]  # N×A×C
        bbox_regression = head_outputs["bbox_regression"]  # N×A×4
        bbox_ctrness = head_outputs["bbox_ctrness"]  # N×A×1

        # Ground truth per location, as torchvision builds it (the loop is over images).
        gt_classes, gt_boxes = [], []
        for targets_per_image, matched in zip(targets, matched_idxs):
            if len(targets_per_image["labels"]) == 0:
                classes = targets_per_image["labels"].new_zeros((len(matched),))
                boxes = targets_per_image["boxes"].new_zeros((len(matched), 4))
            else:
                classes = targets_per_image["labels"][matched.clip(min=0)]
                boxes = targets_per_image["boxes"][matched.clip(min=0)]
            classes[matched < 0] = -1  # background
            gt_classes.append(classes)
            gt_boxes.append(boxes)
        all_gt_boxes, all_gt_classes, all_anchors = torch.stack(gt_boxes), torch.stack(gt_classes), torch.stack(anchors)

        foreground = all_gt_classes >= 0  # N×A
        num_foreground = foreground.sum().item()

        # Decoded boxes as torchvision decodes them (float: the amp note in torchvision's head).
        pred_boxes = self.box_coder.decode(bbox_regression, all_anchors)  # N×A×4
        pred_fg = pred_boxes[foreground]  # F×4, in the same row order as the flat foreground rows below
        gt_fg = all_gt_boxes[foreground]

        # cls (bcls): every location of every image is a row; w is the detached IoU at the target class.
        num_classes = cls_logits.shape[-1]
        fg_rows = foreground.flatten().nonzero().squeeze(1)
        x, y, w = bcls_inputs(cls_logits.reshape(-1, num_classes), fg_rows,
                              all_gt_classes[foreground], paired_iou(pred_fg, gt_fg))
        loss_cls = normalised_sum(self.branches["cls"](x, y, w), num_foreground)

        # reg: on the foreground locations' decoded boxes vs their ground truth.
        if self.box_loss is None:
            loss_reg = normalised_sum(self.branches["reg"](*reg_inputs(pred_fg, gt_fg)), num_foreground)
        else:  # torchvision's coordinate loss on the ltrb deltas (BoxLinearCoder.encode(anchors, boxes))
            target = self.box_coder.encode(all_anchors[foreground], gt_fg)
            loss_reg = normalised_sum(box_loss_rows(self.box_loss, bbox_regression[foreground], target),
                                      num_foreground)

        return {
            "classification": loss_cls,
            "bbox_regression": loss_reg,
            "bbox_ctrness": _centerness_loss(self.box_coder, all_anchors, all_gt_boxes, bbox_ctrness,
                                             foreground) / max(1, num_foreground),
        }


    def pap_loss(self, targets: list[dict[str, Tensor]], head_outputs: dict[str, Tensor],
                 anchors: list[Tensor], matched_idxs: list[Tensor]) -> dict[str, Tensor]:
        """``pap`` (Parameterized AP Loss of the whole batch) and torchvision's ``bbox_ctrness``.

        Logits N×A×C flattened; targets +1 at (foreground location, its class), 0 elsewhere; the
        positives' qualities: the GIoU of their decoded boxes with their ground truth, in
        (image, location) order, the positives' flattened order (one class per location).
        """
        if self.pap is None:
            raise ValueError("pap_loss: PAP-Loss is off (set_pap)")
        cls_logits = head_outputs["cls_logits"]  # N×A×C
        bbox_regression = head_outputs["bbox_regression"]  # N×A×4
        bbox_ctrness = head_outputs["bbox_ctrness"]  # N×A×1
        n, a, c = cls_logits.shape
        gt_boxes = []
        for targets_per_image, matched in zip(targets, matched_idxs):
            if len(targets_per_image["labels"]) == 0:
                gt_boxes.append(targets_per_image["boxes"].new_zeros((len(matched), 4)))
            else:
                gt_boxes.append(targets_per_image["boxes"][matched.clip(min=0)])
        all_gt_boxes, all_anchors = torch.stack(gt_boxes), torch.stack(anchors)
        matched = torch.stack(matched_idxs)  # N×A
        foreground = matched >= 0
        num_foreground = foreground.sum().item()
        fg = foreground.nonzero()  # F×2 (image, location), row-major
        gt_labels = torch.cat([t["labels"][m[m >= 0]] for t, m in zip(targets, matched_idxs)])  # F

        labels = torch.zeros((n, a, c), dtype=torch.int8, device=cls_logits.device)
        labels[fg[:, 0], fg[:, 1], gt_labels] = 1
        pred_fg = self.box_coder.decode(bbox_regression[foreground].float(), all_anchors[foreground].float())
        ious = paired_giou(pred_fg, all_gt_boxes[foreground])
        image = torch.arange(n, device=cls_logits.device)[:, None, None].expand(n, a, c)
        return {
            PAP_TERM: self.pap.loss(cls_logits, labels, ious, image),
            "bbox_ctrness": _centerness_loss(self.box_coder, all_anchors, all_gt_boxes, bbox_ctrness,
                                             foreground) / max(1, num_foreground),
        }


def _centerness_loss(box_coder: nn.Module, anchors: Tensor, gt_boxes: Tensor, bbox_ctrness: Tensor,
                     foreground: Tensor) -> Tensor:
    """torchvision's FCOS centerness loss, line for line: BCE of the predicted centerness at
    foreground locations against sqrt(min(l,r)/max(l,r) * min(t,b)/max(t,b)), summed.

    Args:
        anchors, gt_boxes: N×A×4; bbox_ctrness: N×A×1 logits; foreground: N×A.
    """
    bbox_reg_targets = box_coder.encode(anchors, gt_boxes)
    if len(bbox_reg_targets) == 0:
        gt_ctrness_targets = bbox_reg_targets.new_zeros(bbox_reg_targets.size()[:-1])
    else:
        left_right = bbox_reg_targets[:, :, [0, 2]]
        top_bottom = bbox_reg_targets[:, :, [1, 3]]
        gt_ctrness_targets = torch.sqrt(
            (left_right.min(dim=-1)[0] / left_right.max(dim=-1)[0])
            * (top_bottom.min(dim=-1)[0] / top_bottom.max(dim=-1)[0])
        )
    pred_centerness = bbox_ctrness.squeeze(dim=2)
    return nn.functional.binary_cross_entropy_with_logits(
        pred_centerness[foreground], gt_ctrness_targets[foreground], reduction="sum")
