"""torchvision's own losses, written in the loss language, give torchvision's loss values (1e-5 relative).

Same model weights, same inputs, same RNG state (Faster R-CNN samples anchors and RoIs):
the genome's head against the untouched torchvision head.
"""
import copy
from functools import partial

import torch
from torch import nn
from torchvision.models.detection.fcos import FCOSHead
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.ops import generalized_box_iou_loss

from gp_loss.tasks.detection import set_genome

RTOL = 1e-5


def _losses(model, images, targets, seed=1):
    torch.manual_seed(seed)  # Faster R-CNN's samplers draw from the global RNG
    return model(images, targets)


def _assert_equal_terms(got, want, keys):
    assert set(got) == set(want)
    for k in keys:
        assert want[k].detach() > 0, k  # a real term, not an empty one
        torch.testing.assert_close(got[k], want[k], rtol=RTOL, atol=0, msg=lambda m: f"{k}: {m}")


def test_fcos_focal_giou_equals_torchvision(det):
    model = det.small_model("fcos", det.FOCAL_GIOU)
    reference = copy.deepcopy(model)
    head = model.head
    reference.head = FCOSHead(model.backbone.out_channels, 1, det.CLASSES,
                              num_convs=len(head.classification_head.conv) // 3)  # (conv, GroupNorm, ReLU) each
    reference.head.load_state_dict(head.state_dict())  # same parameter names: the weights load as they are
    for seed in (0, 1):
        images, targets = det.make_batch("fcos", seed=seed)
        _assert_equal_terms(_losses(model, images, targets), _losses(reference, images, targets),
                            ["classification", "bbox_regression", "bbox_ctrness"])


def test_retinanet_focal_giou_equals_torchvision_with_its_giou_box_loss(det):
    model = det.small_model("retinanet", det.FOCAL_GIOU)
    reference = copy.deepcopy(model)
    reference.head = RetinaNetHead(model.backbone.out_channels, model.anchor_generator.num_anchors_per_location()[0],
                                   det.CLASSES, norm_layer=partial(nn.GroupNorm, 16))
    reference.head.load_state_dict(model.head.state_dict())
    reference.head.regression_head._loss_type = "giou"  # torchvision's own GIoU option (RetinaNet v2)
    for seed in (0, 1):
        images, targets = det.make_batch("retinanet", seed=seed)
        _assert_equal_terms(_losses(model, images, targets), _losses(reference, images, targets),
                            ["classification", "bbox_regression"])


def _record_faster_rcnn(model):
    """Keep what torchvision's RPN and box head compute, to build the GIoU references by hand."""
    seen = {}
    rpn, roi = model.rpn, model.roi_heads

    assign = rpn.assign_targets_to_anchors
    def assign_targets_to_anchors(anchors, targets):
        labels, matched = assign(anchors, targets)
        seen.update(anchors=anchors, rpn_matched=matched)
        return labels, matched
    rpn.assign_targets_to_anchors = assign_targets_to_anchors

    rpn_loss = rpn.compute_loss
    def compute_loss(objectness, deltas, labels, regression_targets):
        seen["rpn_deltas"] = deltas
        return rpn_loss(objectness, deltas, labels, regression_targets)
    rpn.compute_loss = compute_loss

    sampler = rpn.fg_bg_sampler
    class RecordingSampler:
        def __call__(self, labels):
            pos, neg = sampler(labels)
            seen.update(rpn_pos=pos, rpn_neg=neg)
            return pos, neg
    rpn.fg_bg_sampler = RecordingSampler()

    select = roi.select_training_samples
    def select_training_samples(proposals, targets):
        out = select(proposals, targets)
        seen.update(roi_samples=out, roi_targets=targets)
        return out
    roi.select_training_samples = select_training_samples
    roi.box_predictor.register_forward_hook(lambda m, args, out: seen.update(box_regression=out[1]))
    return seen


def _rpn_giou_reference(model, seen):
    pos = torch.where(torch.cat(seen["rpn_pos"]))[0]
    neg = torch.where(torch.cat(seen["rpn_neg"]))[0]
    boxes = model.rpn.box_coder.decode_single(seen["rpn_deltas"][pos], torch.cat(seen["anchors"])[pos])
    gt = torch.cat(seen["rpn_matched"])[pos]
    assert pos.numel() > 0
    return generalized_box_iou_loss(boxes, gt, reduction="sum") / (pos.numel() + neg.numel())


def _box_head_giou_reference(model, seen):
    proposals, matched_idxs, labels, _ = seen["roi_samples"]
    labels, proposals = torch.cat(labels), torch.cat(proposals)
    gt = torch.cat([t["boxes"][m] for t, m in zip(seen["roi_targets"], matched_idxs)])
    r = labels.numel()
    pos = torch.where(labels > 0)[0]
    deltas = seen["box_regression"].reshape(r, -1, 4)[pos, labels[pos]]  # the ground-truth class's deltas
    boxes = model.roi_heads.box_coder.decode_single(deltas, proposals[pos])
    assert pos.numel() > 0
    return generalized_box_iou_loss(boxes, gt[pos], reduction="sum") / r


def test_faster_rcnn_bce_ce_equal_torchvision_and_giou_equals_hand_computed(det):
    model = det.small_model("fasterrcnn", det.FASTER_RCNN_GENOME)
    reference = copy.deepcopy(model)
    set_genome(reference, None)  # torchvision's RPN and RoIHeads code paths, untouched
    seen = _record_faster_rcnn(reference)
    for seed in (0, 1):
        images, targets = det.make_batch("fasterrcnn", seed=seed)
        want = _losses(reference, images, targets)
        got = _losses(model, images, targets)
        # Same RNG state, same sampled anchors and RoIs: objectness BCE and box-head CE agree.
        _assert_equal_terms(got, want, ["loss_objectness", "loss_classifier"])
        torch.testing.assert_close(got["loss_rpn_box_reg"], _rpn_giou_reference(reference, seen), rtol=RTOL, atol=0)
        torch.testing.assert_close(got["loss_box_reg"], _box_head_giou_reference(reference, seen), rtol=RTOL, atol=0)
