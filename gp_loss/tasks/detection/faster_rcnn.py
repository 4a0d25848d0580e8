"""Faster R-CNN (Ren et al., "Faster R-CNN: Towards Real-Time Object Detection with Region Proposal
Networks", NeurIPS 2015) with four searchable loss branches.

- :class:`GenomeRegionProposalNetwork`: torchvision's RPN whose objectness loss is branch
  ``rpn_cls`` (kind ``bcls``, objectness as one class) and whose box loss is ``rpn_reg``
  (kind ``reg``, on the positive anchors' boxes decoded from the predicted deltas).
  torchvision's ``forward`` hands ``compute_loss`` only the encoded regression
  targets, so the subclass's ``forward`` repeats torchvision's steps and also passes the
  anchors and their matched ground-truth boxes.
- :class:`GenomeRoIHeads`: torchvision's ``RoIHeads`` whose box-head losses are ``rcnn_cls``
  (kind ``cls``) and ``rcnn_reg`` (kind ``reg``). torchvision's ``fastrcnn_loss`` never
  sees the proposals, so the subclass's training ``forward`` keeps them and decodes the
  ground-truth class's deltas against them (the box coder's weights 10, 10, 5, 5).

``rcnn_cls`` mapping: torchvision's box predictor puts background in logit column 0 and the
foreground classes in 1..C; the ``cls`` kind wants background LAST. The branch sees
``x = [logits[:, 1:], logits[:, :1]]`` (columns 1..C, then 0) and labels ``(label - 1) mod (C+1)``
(foreground label k in 1..C -> k-1, background 0 -> C). Softmax over all C+1 columns is
unchanged by the permutation, so cross-entropy reads the same.

Normalisation as torchvision's heads: RPN terms are sums over the sampled anchors (256 per
image, half positive at most) divided by their number; box-head terms are sums over the
sampled RoIs divided by their number. Sampling uses torchvision's samplers in torchvision's
order, so with the same RNG state the same anchors and RoIs are drawn.

Parameterized AP Loss (``set_pap`` on either module; Tao et al., NeurIPS 2021) replaces each
module's two branches by one loss term: ``rpn_pap``, the objectness logits of the RPN's sampled
anchors ranked as one class (the sampled positives +1, the sampled negatives 0) with the GIoU of
the positives' proposals decoded from their deltas against their anchors; ``rcnn_pap``, the C
non-background class logits of the sampled RoIs (+1 at a positive RoI's ground-truth class, 0
elsewhere) with the GIoU of the box decoded for that class against the proposal. The background
logit gets no gradient then; inference is torchvision's, unchanged (softmax over all C+1 logits).

Labels: Faster R-CNN's targets use 1..C (0 is background).
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import Tensor
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import RoIHeads, fastrcnn_loss
from torchvision.models.detection.rpn import RegionProposalNetwork, concat_box_prediction_layers

from gp_loss.errors import GpLossError
from gp_loss.language.compile import CompiledTree
from gp_loss.language.genome import Genome
from gp_loss.pap.loss import DEFAULT_TOP_K
from gp_loss.pap.substitutions import PAPParameters
from gp_loss.tasks.detection.branch_inputs import bcls_inputs, cls_inputs, paired_iou, reg_inputs
from gp_loss.tasks.detection.branches import compile_branches
from gp_loss.tasks.detection.normalisation import normalised_sum
from gp_loss.tasks.detection.pap_settings import PAPSettings, paired_giou, pap_settings

BRANCHES: dict[str, str] = {"rpn_cls": "bcls", "rpn_reg": "reg", "rcnn_cls": "cls", "rcnn_reg": "reg"}
LOSS_TERMS: dict[str, str | None] = {"loss_objectness": "rpn_cls", "loss_rpn_box_reg": "rpn_reg",
                                     "loss_classifier": "rcnn_cls", "loss_box_reg": "rcnn_reg"}
# The loss terms of the PAP mode (one per module).
RPN_PAP_TERM = "rpn_pap"
RCNN_PAP_TERM = "rcnn_pap"


def _compile(genome: Genome | None) -> dict[str, CompiledTree] | None:
    """All four branches, checked against Faster R-CNN's layout (each module uses its two)."""
    return compile_branches(genome, BRANCHES, "fasterrcnn")


class GenomeRegionProposalNetwork(RegionProposalNetwork):
    """torchvision's RPN with the objectness and box losses taken from a genome.

    Takes :class:`RegionProposalNetwork`'s arguments, plus ``genome`` (Faster R-CNN's four
    branches; this module uses ``rpn_cls`` and ``rpn_reg``). ``None`` keeps torchvision's
    forward and loss untouched. :meth:`like` wraps the RPN a :class:`FasterRCNN` built.
    """

    def __init__(self, *args, genome: Genome | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.pap: PAPSettings | None = None
        self.set_genome(genome)

    @classmethod
    def like(cls, rpn: RegionProposalNetwork, genome: Genome | None = None) -> "GenomeRegionProposalNetwork":
        """The same RPN (the very same anchor generator and head modules, same settings) with ``genome``."""
        new = cls(rpn.anchor_generator, rpn.head, rpn.proposal_matcher.high_threshold,
                  rpn.proposal_matcher.low_threshold, rpn.fg_bg_sampler.batch_size_per_image,
                  rpn.fg_bg_sampler.positive_fraction, dict(rpn._pre_nms_top_n), dict(rpn._post_nms_top_n),
                  rpn.nms_thresh, rpn.score_thresh, genome=genome)
        new.box_coder, new.min_size = rpn.box_coder, rpn.min_size
        return new

    def set_genome(self, genome: Genome | None) -> None:
        """Use ``genome``'s losses from now on (``None``: torchvision's own)."""
        self.branches = _compile(genome)

    def set_pap(self, params: PAPParameters | None, top_k: int = DEFAULT_TOP_K, block_h1_gradient: bool = True,
                per_image: bool = False) -> None:
        """Train the RPN with Parameterized AP Loss from now on (``None``: off). See
        :class:`~.pap_settings.PAPSettings`."""
        self.pap = pap_settings(params, top_k, block_h1_gradient, per_image)

    def forward(self, images: ImageList, features: dict[str, Tensor],
                targets: Optional[list[dict[str, Tensor]]] = None) -> tuple[list[Tensor], dict[str, Tensor]]:
        """torchvision's RPN forward; in training with a genome, the loss also gets anchors and matched boxes.

        Returns:
            per image the proposals (P×4) and the losses ``loss_objectness``, ``loss_rpn_box_reg``
            (PAP mode: ``rpn_pap``; empty outside training).
        """
        if (self.branches is None and self.pap is None) or not self.training:
            return super().forward(images, features, targets)
        # The steps of RegionProposalNetwork.forward, in its order (the sampler draws the same anchors).
        feature_maps = list(features.values())
        objectness, pred_bbox_deltas = self.head(feature_maps)
        anchors = self.anchor_generator(images, feature_maps)
        num_images = len(anchors)
        num_anchors_per_level = [o[0].shape[0] * o[0].shape[1] * o[0].shape[2] for o in objectness]
        objectness, pred_bbox_deltas = concat_box_prediction_layers(objectness, pred_bbox_deltas)
        proposals = self.box_coder.decode(pred_bbox_deltas.detach(), anchors).view(num_images, -1, 4)
        boxes, _ = self.filter_proposals(proposals, objectness, images.image_sizes, num_anchors_per_level)
        if targets is None:
            raise ValueError("targets should not be None")
        labels, matched_gt_boxes = self.assign_targets_to_anchors(anchors, targets)
        if self.pap is not None:
            return boxes, {RPN_PAP_TERM: self.pap_loss(objectness, pred_bbox_deltas, labels, anchors,
                                                        matched_gt_boxes)}
        loss_objectness, loss_rpn_box_reg = self.compute_loss(objectness, pred_bbox_deltas, labels, None,
                                                              anchors=anchors, matched_gt_boxes=matched_gt_boxes)
        return boxes, {"loss_objectness": loss_objectness, "loss_rpn_box_reg": loss_rpn_box_reg}

    def compute_loss(self, objectness: Tensor, pred_bbox_deltas: Tensor, labels: list[Tensor],
                     regression_targets: Optional[list[Tensor]], anchors: Optional[list[Tensor]] = None,
                     matched_gt_boxes: Optional[list[Tensor]] = None) -> tuple[Tensor, Tensor]:
        """Objectness and box losses over the sampled anchors.

        Args:
            objectness: (N·A)×1 logits; pred_bbox_deltas: (N·A)×4, image-major as torchvision
                concatenates them.
            labels: per image A anchor labels (1 positive, 0 negative, -1 ignored).
            regression_targets: per image A×4 encoded targets (torchvision's loss only).
            anchors, matched_gt_boxes: per image A×4 (the genome's loss needs them).

        Returns:
            ``(objectness loss, box loss)``, each a sum over the sampled anchors / their number.
        """
        if self.branches is None:
            return super().compute_loss(objectness, pred_bbox_deltas, labels, regression_targets)
        if anchors is None or matched_gt_boxes is None:
            raise ValueError("the genome's RPN loss needs the anchors and their matched ground-truth boxes")
        sampled_pos, sampled_neg = self.fg_bg_sampler(labels)
        pos = torch.where(torch.cat(sampled_pos, dim=0))[0]
        neg = torch.where(torch.cat(sampled_neg, dim=0))[0]
        num_sampled = pos.numel() + neg.numel()

        pred_pos = self.box_coder.decode_single(pred_bbox_deltas[pos], torch.cat(anchors)[pos])  # P×4
        gt_pos = torch.cat(matched_gt_boxes)[pos]

        # Objectness as a one-class bcls: the positives are the first P sampled rows.
        logits = objectness.flatten()[torch.cat([pos, neg])][:, None]  # M×1
        x, y, w = bcls_inputs(logits, torch.arange(pos.numel(), device=logits.device),
                              torch.zeros_like(pos), paired_iou(pred_pos, gt_pos))
        loss_objectness = normalised_sum(self.branches["rpn_cls"](x, y, w), num_sampled)
        loss_box = normalised_sum(self.branches["rpn_reg"](*reg_inputs(pred_pos, gt_pos)), num_sampled)
        return loss_objectness, loss_box

    def pap_loss(self, objectness: Tensor, pred_bbox_deltas: Tensor, labels: list[Tensor], anchors: list[Tensor],
                 matched_gt_boxes: list[Tensor]) -> Tensor:
        """Parameterized AP Loss over the sampled anchors (the arguments as :meth:`compute_loss`'s).

        torchvision's sampler draws the anchors (as for its own loss); their objectness logits are
        one class, the sampled positives first (targets +1, in anchor order), then the sampled
        negatives (0); the positives' qualities: the GIoU of their proposals (deltas decoded
        against their anchors) with their matched ground truth.
        """
        if self.pap is None:
            raise ValueError("pap_loss: PAP-Loss is off (set_pap)")
        sampled_pos, sampled_neg = self.fg_bg_sampler(labels)
        pos = torch.where(torch.cat(sampled_pos, dim=0))[0]
        neg = torch.where(torch.cat(sampled_neg, dim=0))[0]
        rows = torch.cat([pos, neg])
        logits = objectness.flatten()[rows]  # M: one class
        targets = torch.zeros(rows.shape, dtype=torch.int8, device=logits.device)
        targets[:pos.numel()] = 1
        pred_pos = self.box_coder.decode_single(pred_bbox_deltas[pos].float(), torch.cat(anchors)[pos].float())
        ious = paired_giou(pred_pos, torch.cat(matched_gt_boxes)[pos])
        image = torch.div(rows, max(1, objectness.shape[0] // max(1, len(anchors))), rounding_mode="floor")
        return self.pap.loss(logits, targets, ious, image)


class SampledBoxes(NamedTuple):
    """The box head's training inputs and outputs, per image where a list: the sampled RoIs (xyxy), their
    matched ground-truth indices, labels (0 background) and regression targets; the head's R×(C+1) class
    logits and R×((C+1)·4) deltas; the ground-truth box matched to each sampled RoI."""

    proposals: list[Tensor]
    matched_idxs: list[Tensor]
    labels: list[Tensor]
    regression_targets: list[Tensor]
    class_logits: Tensor
    box_regression: Tensor
    matched_gt_boxes: list[Tensor]


class GenomeRoIHeads(RoIHeads):
    """torchvision's ``RoIHeads`` (box head only) with the box losses taken from a genome.

    Takes :class:`RoIHeads`'s arguments, plus ``genome`` (Faster R-CNN's four branches;
    this module uses ``rcnn_cls`` and ``rcnn_reg``). ``None`` keeps torchvision's forward
    and ``fastrcnn_loss`` untouched; so does evaluation mode. :meth:`like` wraps the
    ``RoIHeads`` a :class:`FasterRCNN` built.
    """

    def __init__(self, *args, genome: Genome | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.pap: PAPSettings | None = None
        self.set_genome(genome)

    @classmethod
    def like(cls, roi_heads: RoIHeads, genome: Genome | None = None) -> "GenomeRoIHeads":
        """The same box head (the very same modules, same settings) with ``genome``."""
        new = cls(roi_heads.box_roi_pool, roi_heads.box_head, roi_heads.box_predictor,
                  roi_heads.proposal_matcher.high_threshold, roi_heads.proposal_matcher.low_threshold,
                  roi_heads.fg_bg_sampler.batch_size_per_image, roi_heads.fg_bg_sampler.positive_fraction,
                  roi_heads.box_coder.weights, roi_heads.score_thresh, roi_heads.nms_thresh,
                  roi_heads.detections_per_img,
                  roi_heads.mask_roi_pool, roi_heads.mask_head, roi_heads.mask_predictor,
                  roi_heads.keypoint_roi_pool, roi_heads.keypoint_head, roi_heads.keypoint_predictor,
                  genome=genome)
        new.box_coder = roi_heads.box_coder
        return new

    def set_genome(self, genome: Genome | None) -> None:
        """Use ``genome``'s losses from now on (``None``: torchvision's own)."""
        self.branches = _compile(genome)

    def set_pap(self, params: PAPParameters | None, top_k: int = DEFAULT_TOP_K, block_h1_gradient: bool = True,
                per_image: bool = False) -> None:
        """Train the box head with Parameterized AP Loss from now on (``None``: off). See
        :class:`~.pap_settings.PAPSettings`."""
        self.pap = pap_settings(params, top_k, block_h1_gradient, per_image)

    def forward(self, features: dict[str, Tensor], proposals: list[Tensor], image_shapes: list[tuple[int, int]],
                targets: Optional[list[dict[str, Tensor]]] = None) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        """torchvision's forward; in training with a genome, the box losses see the sampled proposals.

        Returns:
            detections (evaluation) or ``[]`` (training), and the losses ``loss_classifier``,
            ``loss_box_reg`` (training only; PAP mode: ``rcnn_pap``).
        """
        if (self.branches is None and self.pap is None) or not self.training:
            return super().forward(features, proposals, image_shapes, targets)
        if self.has_mask() or self.has_keypoint():
            raise GpLossError("searchable RoI heads cover Faster R-CNN's box head only (no mask or keypoint head)")
        return [], self.box_losses(self.sampled_boxes(features, proposals, image_shapes, targets))

    def sampled_boxes(self, features: dict[str, Tensor], proposals: list[Tensor],
                      image_shapes: list[tuple[int, int]], targets: list[dict[str, Tensor]]) -> SampledBoxes:
        """torchvision's training steps up to the box losses: its target checks, the RoI sampling and the box
        head on the sampled RoIs."""
        for t in targets or []:  # torchvision's checks
            if t["boxes"].dtype not in (torch.float, torch.double, torch.half):
                raise TypeError(f"target boxes must of float type, instead got {t['boxes'].dtype}")
            if t["labels"].dtype != torch.int64:
                raise TypeError(f"target labels must of int64 type, instead got {t['labels'].dtype}")
        proposals, matched_idxs, labels, regression_targets = self.select_training_samples(proposals, targets)
        box_features = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(box_features)
        matched_gt_boxes = [
            (t["boxes"] if t["boxes"].numel() else t["boxes"].new_zeros(1, 4)).to(p.dtype)[m]
            for t, m, p in zip(targets, matched_idxs, proposals)]
        return SampledBoxes(proposals, matched_idxs, labels, regression_targets, class_logits, box_regression,
                            matched_gt_boxes)

    def box_losses(self, s: SampledBoxes) -> dict[str, Tensor]:
        """The box head's losses: PAP-Loss's ``rcnn_pap``, the genome's ``loss_classifier`` and ``loss_box_reg``,
        or (no genome) torchvision's ``fastrcnn_loss``."""
        if self.pap is not None:
            return {RCNN_PAP_TERM: self.pap_box_loss(s.class_logits, s.box_regression, s.labels, s.proposals,
                                                     s.matched_gt_boxes)}
        if self.branches is None:
            loss_classifier, loss_box_reg = fastrcnn_loss(s.class_logits, s.box_regression, s.labels,
                                                          s.regression_targets)
        else:
            loss_classifier, loss_box_reg = self.box_loss(s.class_logits, s.box_regression, s.labels, s.proposals,
                                                          s.matched_gt_boxes)
        return {"loss_classifier": loss_classifier, "loss_box_reg": loss_box_reg}

    def box_loss(self, class_logits: Tensor, box_regression: Tensor, labels: list[Tensor],
                 proposals: list[Tensor], matched_gt_boxes: list[Tensor]) -> tuple[Tensor, Tensor]:
        """The genome's replacement of torchvision's ``fastrcnn_loss``, with the proposals.

        Args:
            class_logits: R×(C+1), background in column 0 (torchvision's predictor).
            box_regression: R×((C+1)·4) deltas per class.
            labels: per image its sampled RoIs' labels (0 background, 1..C).
            proposals: per image its sampled RoIs (xyxy).
            matched_gt_boxes: per image the ground-truth box matched to each sampled RoI.

        Returns:
            ``(classification loss, box loss)``, each a sum over the sampled RoIs / their number.
        """
        r, k = class_logits.shape
        labels_all, pos, pred_pos, gt_pos = self._positive_boxes(box_regression, labels, proposals, matched_gt_boxes)

        iou = torch.zeros(r, device=class_logits.device)
        iou[pos] = paired_iou(pred_pos, gt_pos)
        # Background last for the cls kind: columns 1..C then 0; label 0 -> C, k -> k-1.
        logits = torch.cat([class_logits[:, 1:], class_logits[:, :1]], dim=1)
        x, y, w = cls_inputs(logits, (labels_all - 1) % k, iou)
        loss_classifier = normalised_sum(self.branches["rcnn_cls"](x, y, w), r)
        loss_box_reg = normalised_sum(self.branches["rcnn_reg"](*reg_inputs(pred_pos, gt_pos)), r)
        return loss_classifier, loss_box_reg

    def _positive_boxes(self, box_regression: Tensor, labels: list[Tensor], proposals: list[Tensor],
                        matched_gt_boxes: list[Tensor], as_float: bool = False
                        ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(labels R, positive rows P, their decoded boxes P×4, their ground truth P×4)`` of the sampled RoIs.

        A positive RoI's box is decoded from its ground-truth class's deltas against its proposal
        (``as_float``: in float32, whatever the autocast dtype).
        """
        labels_all = torch.cat(labels)  # R
        proposals_all = torch.cat(proposals)
        pos = torch.where(labels_all > 0)[0]
        deltas = box_regression.reshape(labels_all.shape[0], -1, 4)[pos, labels_all[pos]]
        anchors = proposals_all[pos]
        if as_float:
            deltas, anchors = deltas.float(), anchors.float()
        return labels_all, pos, self.box_coder.decode_single(deltas, anchors), torch.cat(matched_gt_boxes)[pos]

    def pap_box_loss(self, class_logits: Tensor, box_regression: Tensor, labels: list[Tensor],
                     proposals: list[Tensor], matched_gt_boxes: list[Tensor]) -> Tensor:
        """Parameterized AP Loss of the box head (the arguments as :meth:`box_loss`'s).

        The logits: the C non-background columns of the sampled RoIs (R×C, flattened); targets +1
        at a positive RoI's ground-truth class, 0 elsewhere; the positives' qualities (in RoI
        order, their flattened order): the GIoU of the box decoded for their ground-truth class
        against their proposal with the ground truth.
        """
        if self.pap is None:
            raise ValueError("pap_box_loss: PAP-Loss is off (set_pap)")
        r, k = class_logits.shape
        labels_all, pos, pred_pos, gt_pos = self._positive_boxes(box_regression, labels, proposals, matched_gt_boxes,
                                                                 as_float=True)
        ious = paired_giou(pred_pos, gt_pos)
        targets = torch.zeros((r, k - 1), dtype=torch.int8, device=class_logits.device)
        targets[pos, labels_all[pos] - 1] = 1
        counts = torch.tensor([len(x) for x in labels], device=class_logits.device)
        image = torch.repeat_interleave(torch.arange(len(labels), device=class_logits.device), counts)
        return self.pap.loss(class_logits[:, 1:], targets, ious, image[:, None].expand(r, k - 1))
