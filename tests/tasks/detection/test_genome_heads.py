"""Genome heads: layout checks, NaN propagation, gradient flow, detached IoU weights."""
import pytest
import torch

from gp_loss.errors import GpLossError
from gp_loss.language.genome import Genome
from gp_loss.tasks.detection import DETECTORS, build_detector, set_genome
from gp_loss.tasks.detection.fcos import GenomeFCOSHead

# Losses that are NaN everywhere: sqrt of a negative number.
NAN_BCLS = "sqrt(neg(exp(x)))"
NAN_CLS = "sqrt(neg(softmax(x)))"
NAN_REG = "sqrt(neg(u))"


def _with(genome: Genome, **formulas) -> Genome:
    """``genome`` with some branches' formulas replaced."""
    return Genome.from_formulas([(b.name, b.kind.name, formulas.get(b.name, b.formula)) for b in genome])


@pytest.mark.parametrize("detector", list(DETECTORS))
def test_wrong_branches_are_a_one_line_error_naming_the_expected_ones(det, detector):
    expected = ", ".join(f"{n} ({k})" for n, k in DETECTORS[detector].branches.items())
    wrong_name = Genome.from_formulas([("cls", "cls", det.paper("ce"))])
    wrong_kind = Genome.from_formulas([(n, "reg", det.paper("giou")) for n in DETECTORS[detector].branches])
    for genome in (wrong_name, wrong_kind):
        with pytest.raises(GpLossError) as err:
            build_detector(detector, 3, backbone="small", image_size=64, genome=genome)
        message = str(err.value)
        assert expected in message and detector in message and "\n" not in message


def test_a_head_built_directly_checks_its_genome(det):
    with pytest.raises(GpLossError, match=r"cls \(bcls\), reg \(reg\)"):
        GenomeFCOSHead(64, 1, 3, 2, genome=det.FASTER_RCNN_GENOME)
    model = det.small_model("fcos")
    with pytest.raises(GpLossError, match="fcos expects"):
        set_genome(model, det.FASTER_RCNN_GENOME)


@pytest.mark.parametrize("detector", list(DETECTORS))
def test_a_nan_loss_gives_a_nan_term_not_a_masked_one(det, detector):
    base = det.GENOMES[detector]
    nan = {b.name: {"cls": NAN_CLS, "bcls": NAN_BCLS, "reg": NAN_REG}[b.kind.name] for b in base}
    model = det.small_model(detector, _with(base, **nan))
    images, targets = det.make_batch(detector)
    losses = model(images, targets)
    terms = DETECTORS[detector].loss_terms
    for key, value in losses.items():
        if terms[key] is None:  # FCOS's centerness: not a branch, stays finite
            assert torch.isfinite(value)
        else:
            assert torch.isnan(value), key


@pytest.mark.parametrize("detector", list(DETECTORS))
def test_gradients_flow_from_each_branch_into_its_head(det, detector):
    model = det.small_model(detector, det.GENOMES[detector])
    images, targets = det.make_batch(detector)
    losses = model(images, targets)
    if detector in ("fasterrcnn", "maskrcnn"):
        heads = {"loss_objectness": model.rpn.head.cls_logits.weight,
                 "loss_rpn_box_reg": model.rpn.head.bbox_pred.weight,
                 "loss_classifier": model.roi_heads.box_predictor.cls_score.weight,
                 "loss_box_reg": model.roi_heads.box_predictor.bbox_pred.weight}
        if detector == "maskrcnn":
            heads["loss_mask"] = model.roi_heads.mask_predictor.mask_fcn_logits.weight
    else:
        heads = {"classification": model.head.classification_head.cls_logits.weight,
                 "bbox_regression": model.head.regression_head.bbox_reg.weight}
    for key, parameter in heads.items():
        (grad,) = torch.autograd.grad(losses[key], parameter, retain_graph=True)
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0, key


@pytest.mark.parametrize("detector", ["fcos", "retinanet"])
def test_the_iou_weight_is_detached(det, detector):
    """A classification loss that reads only w (the IoU) sends no gradient into box regression."""
    genome = _with(det.FOCAL_GIOU, cls=f"add({det.paper('sigmoid_focal')}, mul(w, x))")
    model = det.small_model(detector, genome)
    images, targets = det.make_batch(detector)
    losses = model(images, targets)
    box = model.head.regression_head.bbox_reg.weight
    (grad,) = torch.autograd.grad(losses["classification"], box, allow_unused=True)
    assert grad is None or not grad.any()


@pytest.mark.parametrize("detector", list(DETECTORS))
def test_setting_the_genome_to_none_restores_torchvision_losses(det, detector):
    model = det.small_model(detector)
    images, targets = det.make_batch(detector)
    torch.manual_seed(1)
    before = model(images, targets)
    set_genome(model, det.GENOMES[detector])
    set_genome(model, None)
    torch.manual_seed(1)
    after = model(images, targets)
    for key in before:
        assert torch.equal(before[key], after[key]), key


@pytest.mark.parametrize("detector", list(DETECTORS))
def test_images_without_boxes_train_as_with_torchvision(det, detector):
    """An image with no ground truth is all background; a batch of them has no regression term."""
    genome_model = det.small_model(detector, det.GENOMES[detector])
    torchvision_model = det.small_model(detector)
    images, targets = det.make_batch(detector)
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    if detector == "maskrcnn":
        empty["masks"] = torch.zeros(0, det.SIZE, det.SIZE, dtype=torch.uint8)
    classification = {"fcos": ["classification", "bbox_ctrness"], "retinanet": ["classification"],
                      "fasterrcnn": ["loss_objectness", "loss_classifier"],
                      "maskrcnn": ["loss_objectness", "loss_classifier"]}[detector]
    for batch_targets in ([targets[0], empty], [empty, empty]):
        torch.manual_seed(1)
        got = genome_model(images, batch_targets)
        torch.manual_seed(1)
        want = torchvision_model(images, batch_targets)
        sum(got.values()).backward()
        for key in classification:
            torch.testing.assert_close(got[key], want[key], rtol=1e-5, atol=0)
        if batch_targets[0] is empty:
            assert all(got[k].item() == 0 for k in got if k not in classification)
