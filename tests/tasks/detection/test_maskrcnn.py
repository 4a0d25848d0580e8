"""Mask R-CNN's five branches: with no genome its losses are torchvision's; BCE written in the loss language
gives torchvision's mask loss; the mask branch moves only the mask term; the Dice code loss."""
import copy

import pytest
import torch
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork

from gp_loss.errors import GpLossError
from gp_loss.language.genome import Genome
from gp_loss.tasks.detection import DETECTORS, set_genome
from gp_loss.tasks.detection.maskrcnn import dice_loss_rows, set_mask_loss

RTOL = 1e-5
TERMS = ["loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_mask"]


def _losses(model, images, targets, seed=1):
    torch.manual_seed(seed)  # the RPN's and RoI heads' samplers draw from the global RNG
    return model(images, targets)


def _plain_torchvision(model):
    """A copy of ``model`` whose RPN and RoI heads are torchvision's own classes over the same modules."""
    reference = copy.deepcopy(model)
    rpn, roi = reference.rpn, reference.roi_heads
    plain_rpn = RegionProposalNetwork(rpn.anchor_generator, rpn.head, rpn.proposal_matcher.high_threshold,
                                      rpn.proposal_matcher.low_threshold, rpn.fg_bg_sampler.batch_size_per_image,
                                      rpn.fg_bg_sampler.positive_fraction, dict(rpn._pre_nms_top_n),
                                      dict(rpn._post_nms_top_n), rpn.nms_thresh, rpn.score_thresh)
    plain_rpn.box_coder, plain_rpn.min_size = rpn.box_coder, rpn.min_size
    plain_roi = RoIHeads(roi.box_roi_pool, roi.box_head, roi.box_predictor, roi.proposal_matcher.high_threshold,
                         roi.proposal_matcher.low_threshold, roi.fg_bg_sampler.batch_size_per_image,
                         roi.fg_bg_sampler.positive_fraction, roi.box_coder.weights, roi.score_thresh,
                         roi.nms_thresh, roi.detections_per_img, roi.mask_roi_pool, roi.mask_head,
                         roi.mask_predictor)
    reference.rpn, reference.roi_heads = plain_rpn, plain_roi
    return reference


def _with_mask(genome: Genome, formula: str) -> Genome:
    return Genome.from_formulas([(b.name, b.kind.name, formula if b.name == "mask" else b.formula) for b in genome])


def test_the_record_has_five_branches_and_the_named_baselines():
    spec = DETECTORS["maskrcnn"]
    assert dict(spec.branches) == {"rpn_cls": "bcls", "rpn_reg": "reg", "rcnn_cls": "cls", "rcnn_reg": "reg",
                                   "mask": "bcls"}
    assert set(spec.loss_terms) == set(TERMS) and spec.label_offset == 1
    assert {"torchvision", "fl_giou", "dice"} <= set(spec.baselines)


def test_no_genome_gives_torchvisions_five_losses(det):
    model = det.small_model("maskrcnn")
    reference = _plain_torchvision(model)
    for seed in (0, 1):
        images, targets = det.make_batch("maskrcnn", seed=seed)
        got, want = _losses(model, images, targets), _losses(reference, images, targets)
        assert set(got) == set(want) == set(TERMS)
        for k in TERMS:
            assert want[k].detach() > 0, k  # a real term, not an empty one
            torch.testing.assert_close(got[k], want[k], rtol=RTOL, atol=0, msg=lambda m: f"{k}: {m}")


def test_bce_in_the_loss_language_gives_torchvisions_mask_loss(det):
    model = det.small_model("maskrcnn", det.MASK_RCNN_GENOME)
    reference = _plain_torchvision(model)
    for seed in (0, 1):
        images, targets = det.make_batch("maskrcnn", seed=seed)
        got, want = _losses(model, images, targets), _losses(reference, images, targets)
        # Same RNG state, same sampled anchors and RoIs: objectness BCE, box-head CE and the mask BCE agree
        # (the GIoU box terms are checked against hand-computed GIoU for Faster R-CNN, the same code).
        for k in ("loss_objectness", "loss_classifier", "loss_mask"):
            assert want[k].detach() > 0, k
            torch.testing.assert_close(got[k], want[k], rtol=RTOL, atol=0, msg=lambda m: f"{k}: {m}")


def test_the_mask_branch_changes_the_mask_term_only(det):
    focal = det.paper("sigmoid_focal")
    images, targets = det.make_batch("maskrcnn")
    bce = _losses(det.small_model("maskrcnn", det.MASK_RCNN_GENOME), images, targets)
    model = det.small_model("maskrcnn", _with_mask(det.MASK_RCNN_GENOME, focal))
    other = _losses(model, images, targets)
    for k in TERMS[:4]:
        assert torch.equal(other[k], bce[k]), k
    assert not torch.allclose(other["loss_mask"], bce["loss_mask"])
    (grad,) = torch.autograd.grad(other["loss_mask"], model.roi_heads.mask_predictor.mask_fcn_logits.weight)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_the_dice_code_loss_trains_the_mask_in_place_of_the_branch(det):
    model = det.small_model("maskrcnn", det.MASK_RCNN_GENOME)
    images, targets = det.make_batch("maskrcnn")
    bce = _losses(model, images, targets)
    set_mask_loss(model, "dice")
    dice = _losses(model, images, targets)
    for k in TERMS[:4]:
        assert torch.equal(dice[k], bce[k]), k
    assert 0 < dice["loss_mask"].item() < 1 and dice["loss_mask"].item() != bce["loss_mask"].item()
    set_mask_loss(model, None)
    assert torch.equal(_losses(model, images, targets)["loss_mask"], bce["loss_mask"])
    with pytest.raises(GpLossError, match="unknown mask loss 'jaccard'"):
        set_mask_loss(model, "jaccard")


def test_dice_rows_by_hand():
    logits = torch.tensor([[20.0, 20.0, -20.0, -20.0], [0.0, 0.0, 0.0, 0.0]])
    targets = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    rows = dice_loss_rows(logits, targets)
    assert rows[0].item() == pytest.approx(0.0, abs=1e-6)  # perfect: 1 - (4 + 1) / (2 + 2 + 1)
    assert rows[1].item() == pytest.approx(1 - (2 * 0.5 + 1) / (2.0 + 1 + 1))


def test_setting_no_genome_restores_torchvision(det):
    model = det.small_model("maskrcnn", det.MASK_RCNN_GENOME)
    reference = _plain_torchvision(model)
    set_genome(model, None)
    images, targets = det.make_batch("maskrcnn", seed=2)
    got, want = _losses(model, images, targets), _losses(reference, images, targets)
    for k in TERMS:
        assert torch.equal(got[k], want[k]), k


@pytest.mark.parametrize("backbone, rois, sampling", [("small", 32, 1), ("resnet18", 512, 2)])
def test_the_cpu_scale_mask_rcnn_samples_fewer_rois_and_the_resnets_keep_torchvisions(backbone, rois, sampling):
    from gp_loss.tasks.detection.models import build_detector

    model = build_detector("maskrcnn", 3, backbone=backbone, image_size=64, genome=None)
    heads = model.roi_heads
    assert heads.fg_bg_sampler.batch_size_per_image == rois
    assert heads.box_roi_pool.sampling_ratio == heads.mask_roi_pool.sampling_ratio == sampling
    assert heads.mask_roi_pool.output_size == (14, 14)
    # Faster R-CNN's small detector is not the mask one: its sampling stays as it was.
    boxes_only = build_detector("fasterrcnn", 3, backbone="small", image_size=64, genome=None).roi_heads
    assert (boxes_only.fg_bg_sampler.batch_size_per_image, boxes_only.box_roi_pool.sampling_ratio) == (128, 2)
    # An option given by the caller still wins over the CPU-scale choice.
    given = build_detector("maskrcnn", 3, backbone=backbone, image_size=64, genome=None, box_batch_size_per_image=64)
    assert given.roi_heads.fg_bg_sampler.batch_size_per_image == 64
