"""Parameterized AP Loss in the detectors' heads: the loss the heads compute against ``pap_loss`` on
their outputs, where the gradient goes, the gradient scale, the switch on and off, and proxy trainings."""
import copy
import math

import pytest
import torch
from torchvision.ops import generalized_box_iou

from gp_loss.errors import GpLossError
from gp_loss.pap import THETA_SIZE, PAPParameters, pap_loss
from gp_loss.pap.substitutions import IDENTITY_FUNCTION_THETA
from gp_loss.tasks import make_task
from gp_loss.tasks.detection.models import DETECTORS, set_genome, set_pap
from gp_loss.tasks.detection.task import DetectionLoss, baseline_loss, baseline_texts, DetectionOptions

TINY = {"image_size": 64, "canvases": 16, "batch_size": 4, "proxy_steps": 2, "final_steps": 2,
        "warmup_steps": 1, "eval_batch_size": 8}


def _capture(model):
    """Record the arguments of the dense head's ``compute_loss`` (called by the model's own)."""
    seen = {}
    original = model.head.compute_loss

    def wrapped(targets, head_outputs, anchors, matched_idxs):
        seen.update(targets=targets, head_outputs=head_outputs, anchors=anchors, matched_idxs=matched_idxs)
        return original(targets, head_outputs, anchors, matched_idxs)

    model.head.compute_loss = wrapped
    return seen


def _retinanet_reference(model, seen, params, top_k, block, per_image):
    """``pap_loss`` from the head's outputs, the targets and ious built one anchor at a time."""
    logits = seen["head_outputs"]["cls_logits"]
    deltas = seen["head_outputs"]["bbox_regression"]
    n, a, c = logits.shape
    targets = torch.zeros(n, a, c)
    ious = []
    coder = model.head.regression_head.box_coder
    for i, (t, matched, anchors) in enumerate(zip(seen["targets"], seen["matched_idxs"], seen["anchors"])):
        for k in range(a):
            g = int(matched[k])
            if g == -2:  # between the matcher's thresholds: ignored, every class
                targets[i, k, :] = -1
            elif g >= 0:
                targets[i, k, int(t["labels"][g])] = 1
                box = coder.decode_single(deltas[i, k:k + 1], anchors[k:k + 1])
                ious.append(generalized_box_iou(box, t["boxes"][g:g + 1])[0, 0])
    image = torch.arange(n)[:, None, None].expand(n, a, c) if per_image else None
    return pap_loss(logits, targets, torch.stack(ious), params, top_k, block, image), targets


@pytest.mark.parametrize("params, top_k, block, per_image", [
    (PAPParameters.identity(), 100_000, True, False),
    (PAPParameters.named("searched_retinanet_coco"), 400, True, False),
    (PAPParameters.named("square"), 100_000, False, False),
    (PAPParameters.named("sigmoid"), 300, True, True),
])
def test_retinanet_pap_is_pap_loss_of_the_head_outputs(det, params, top_k, block, per_image):
    model = det.small_model("retinanet")
    set_pap(model, params, top_k=top_k, block_h1_gradient=block, per_image=per_image)
    seen = _capture(model)
    images, targets = det.make_batch("retinanet", images=2, boxes=3)
    losses = model(images, targets)
    assert set(losses) == {"pap"} == set(DETECTORS["retinanet"].pap_loss_terms)
    want, labels = _retinanet_reference(model, seen, params, top_k, block, per_image)
    matched = torch.stack(seen["matched_idxs"])
    assert (matched == -2).any() and (matched >= 0).any(), "case: ignored and foreground anchors"
    assert (labels == -1).sum() == (matched == -2).sum() * det.CLASSES
    torch.testing.assert_close(losses["pap"], want, rtol=1e-6, atol=1e-7)
    # and the same gradient into the logits and the deltas
    outputs = [seen["head_outputs"]["cls_logits"], seen["head_outputs"]["bbox_regression"]]
    got_grads = torch.autograd.grad(losses["pap"], outputs, retain_graph=True)
    want_grads = torch.autograd.grad(want, outputs)
    for got, ref in zip(got_grads, want_grads):
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-8)
        assert got.abs().sum() > 0


def test_fcos_pap_is_pap_loss_of_the_head_outputs_and_keeps_the_centerness_term(det):
    model = det.small_model("fcos", det.FOCAL_GIOU)
    reference = copy.deepcopy(model)
    params = PAPParameters.named("searched_retinanet_coco")
    set_pap(model, params, top_k=500)
    seen = _capture(model)
    images, targets = det.make_batch("fcos")
    losses = model(images, targets)
    assert set(losses) == {"pap", "bbox_ctrness"} == set(DETECTORS["fcos"].pap_loss_terms)
    logits = seen["head_outputs"]["cls_logits"]
    n, a, c = logits.shape
    labels = torch.zeros(n, a, c)
    ious = []
    for i, (t, matched, anchors) in enumerate(zip(seen["targets"], seen["matched_idxs"], seen["anchors"])):
        for k in (matched >= 0).nonzero().flatten().tolist():
            g = int(matched[k])
            labels[i, k, int(t["labels"][g])] = 1
            box = model.head.box_coder.decode(seen["head_outputs"]["bbox_regression"][i, k:k + 1], anchors[k:k + 1])
            ious.append(generalized_box_iou(box, t["boxes"][g:g + 1])[0, 0])
    assert len(ious) > 0
    torch.testing.assert_close(losses["pap"], pap_loss(logits, labels, torch.stack(ious), params, 500),
                               rtol=1e-6, atol=1e-7)
    # the centerness term is the genome path's (torchvision's) own
    torch.testing.assert_close(losses["bbox_ctrness"], reference(images, targets)["bbox_ctrness"])


def _grads(model, images, targets):
    model.zero_grad(set_to_none=True)
    sum(model(images, targets).values()).backward()
    return {name: (p.grad.clone() if p.grad is not None else None) for name, p in model.named_parameters()}


@pytest.mark.parametrize("detector, cls_params, reg_params", [
    ("retinanet", "head.classification_head.", "head.regression_head."),
    ("fcos", "head.classification_head.cls_logits", "head.regression_head.bbox_reg"),
    ("fasterrcnn", "roi_heads.box_predictor.cls_score", "roi_heads.box_predictor.bbox_pred"),
])
def test_gradients_reach_classification_and_regression_and_scale_with_grad_scale(det, detector, cls_params,
                                                                                 reg_params):
    one = PAPParameters.from_theta(list(IDENTITY_FUNCTION_THETA) * 5 + [0.5])
    big = PAPParameters.from_theta(list(IDENTITY_FUNCTION_THETA) * 5 + [0.9])
    assert one.grad_scale == 1.0 and big.grad_scale == pytest.approx(10 ** 0.8)
    model = det.small_model(detector)
    images, targets = det.make_batch(detector)
    grads = {}
    for label, params in (("one", one), ("big", big)):
        set_pap(model, params)
        torch.manual_seed(1)  # Faster R-CNN's samplers draw the same anchors and RoIs
        grads[label] = _grads(model, images, targets)
    cls_names = [n for n in grads["one"] if n.startswith(cls_params)]
    reg_names = [n for n in grads["one"] if n.startswith(reg_params)]
    assert cls_names and reg_names
    for name in cls_names + reg_names + ["backbone.fpn.layer_blocks.0.0.weight"]:
        assert grads["one"][name] is not None and grads["one"][name].abs().sum() > 0, name
    for name in cls_names:  # the scores learn from the ranking alone: untouched by the scale
        torch.testing.assert_close(grads["big"][name], grads["one"][name])
    for name in reg_names:  # the boxes learn only through the GIoU: scaled
        torch.testing.assert_close(grads["big"][name], grads["one"][name] * 10 ** 0.8, rtol=1e-4, atol=1e-9)


def test_faster_rcnn_rpn_pap_ranks_the_sampled_anchors(det):
    model = det.small_model("fasterrcnn")
    rpn = model.rpn
    set_pap(model, PAPParameters.named("square"), top_k=7)
    g = torch.Generator().manual_seed(0)
    images, per_image = 2, 50
    objectness = torch.randn(images * per_image, 1, generator=g, requires_grad=True)
    deltas = (0.1 * torch.randn(images * per_image, 4, generator=g)).requires_grad_()
    anchors = [torch.tensor([[4.0, 4.0, 20.0, 24.0]]).repeat(per_image, 1) + k for k in range(images)]
    gt = [torch.tensor([[6.0, 5.0, 22.0, 20.0]]).repeat(per_image, 1) for _ in range(images)]
    labels = [torch.full((per_image,), -1.0) for _ in range(images)]
    labels[0][:3], labels[0][3:10], labels[1][5:7], labels[1][40:45] = 1, 0, 1, 0  # few enough: all are sampled
    got = rpn.pap_loss(objectness, deltas, labels, anchors, gt)
    rows = torch.cat([torch.tensor([0, 1, 2, 55, 56]), torch.tensor([3, 4, 5, 6, 7, 8, 9, 90, 91, 92, 93, 94])])
    targets = torch.tensor([1.0] * 5 + [0.0] * 12)
    pred = rpn.box_coder.decode_single(deltas[rows[:5]], torch.cat(anchors)[rows[:5]])
    ious = torch.stack([generalized_box_iou(pred[k:k + 1], torch.cat(gt)[rows[k]][None])[0, 0] for k in range(5)])
    want = pap_loss(objectness.flatten()[rows], targets, ious, PAPParameters.named("square"), 7)
    torch.testing.assert_close(got, want)


def test_faster_rcnn_box_head_pap_ranks_the_foreground_classes(det):
    model = det.small_model("fasterrcnn")
    heads = model.roi_heads
    params = PAPParameters.named("searched_retinanet_coco")
    set_pap(model, params, per_image=True)
    g = torch.Generator().manual_seed(1)
    r, c = 12, det.CLASSES
    class_logits = torch.randn(r, c + 1, generator=g, requires_grad=True)
    box_regression = (0.1 * torch.randn(r, 4 * (c + 1), generator=g)).requires_grad_()
    labels = [torch.tensor([2, 0, 1, 0, 0, 3, 0]), torch.tensor([0, 1, 1, 0, 0])]
    proposals = [10 * torch.rand(7, 4, generator=g).cumsum(1), 10 * torch.rand(5, 4, generator=g).cumsum(1)]
    gt = [p + 2 * torch.rand(len(p), 1, generator=g) for p in proposals]  # shifted boxes
    got = heads.pap_box_loss(class_logits, box_regression, labels, proposals, gt)
    labels_all, props, gts = torch.cat(labels), torch.cat(proposals), torch.cat(gt)
    targets = torch.zeros(r, c)
    ious = []
    for k in range(r):
        if labels_all[k] > 0:
            targets[k, labels_all[k] - 1] = 1
            d = box_regression.reshape(r, -1, 4)[k, labels_all[k]][None]
            box = heads.box_coder.decode_single(d, props[k:k + 1])
            ious.append(generalized_box_iou(box, gts[k:k + 1])[0, 0])
    image = torch.tensor([0] * 7 + [1] * 5)[:, None].expand(r, c)
    want = pap_loss(class_logits[:, 1:], targets, torch.stack(ious), params, image_index=image)
    torch.testing.assert_close(got, want)
    got.backward()
    assert class_logits.grad[:, 0].abs().sum() == 0 and class_logits.grad[:, 1:].abs().sum() > 0


@pytest.mark.parametrize("detector", ["fcos", "retinanet", "fasterrcnn"])
def test_pap_off_gives_back_the_genome_losses_unchanged(det, detector):
    model = det.small_model(detector, det.GENOMES[detector])
    images, targets = det.make_batch(detector)
    torch.manual_seed(3)
    before = model(images, targets)
    set_pap(model, PAPParameters.identity())
    torch.manual_seed(3)
    assert set(model(images, targets)) == set(DETECTORS[detector].pap_loss_terms)
    set_pap(model, None)
    torch.manual_seed(3)
    after = model(images, targets)
    assert set(after) == set(before)
    for key in before:
        assert torch.equal(after[key], before[key]), key
    set_genome(model, None)  # and torchvision's own, with PAP off
    torch.manual_seed(3)
    assert set(model(images, targets)) == set(before)


def test_detection_loss_and_set_pap_check_their_settings(det):
    pap = PAPParameters.identity()
    with pytest.raises(GpLossError, match="PAP-Loss replaces every loss branch"):
        DetectionLoss(det.FOCAL_GIOU, pap=pap)
    with pytest.raises(GpLossError, match="top_k must be a positive integer"):
        DetectionLoss(None, pap=pap, pap_top_k=0)
    with pytest.raises(GpLossError, match="needs PAPParameters"):
        set_pap(det.small_model("retinanet"), [0.5] * THETA_SIZE)
    with pytest.raises(GpLossError, match="no searchable loss head"):
        set_pap(torch.nn.Linear(2, 2), pap)


def test_pap_baselines_by_name():
    for model in ("fcos", "retinanet", "fasterrcnn"):
        assert {"pap", "pap_unblocked"} <= set(DETECTORS[model].baselines)
        blocked, unblocked = baseline_loss(model, "pap"), baseline_loss(model, "pap_unblocked")
        assert blocked.genome is None and blocked.pap.name == "identity" and blocked.pap_block_h1
        assert unblocked.pap == blocked.pap and not unblocked.pap_block_h1
        texts = baseline_texts(DetectionOptions(model=model))
        assert set(texts["pap"].values()) == {"PAP-Loss, identity substitutions"}
        assert "not blocked" in texts["pap_unblocked"][next(iter(texts["pap_unblocked"]))]


@pytest.fixture(scope="module")
def retinanet_task():
    return make_task("detection", {**TINY, "model": "retinanet"})


def test_a_proxy_training_with_pap_reports_metrics_and_its_loss_term(retinanet_task):
    out = retinanet_task.proxy_fitness("pap", seed=0)
    assert out.status == "ok" and out.steps == 2, out
    assert set(out.metrics) == {"AP", "AP50", "AP75", "APs", "APm", "APl"}
    assert set(out.losses) == {"pap"} and 0 < out.losses["pap"] < 2
    custom = DetectionLoss(None, pap=PAPParameters.named("sigmoid"), pap_top_k=1000, pap_per_image=True)
    again = retinanet_task.proxy_fitness(custom, seed=0)
    assert again.status == "ok" and set(again.losses) == {"pap"}
    model = retinanet_task.build(custom, seed=0)
    assert model.head.pap.top_k == 1000 and model.head.pap.per_image and model.head.pap.params.name == "sigmoid"


@pytest.mark.parametrize("detector, terms", [("fcos", {"pap", "bbox_ctrness"}),
                                             ("fasterrcnn", {"rpn_pap", "rcnn_pap"})])
def test_fcos_and_faster_rcnn_train_with_pap_with_finite_losses(detector, terms):
    task = make_task("detection", {**TINY, "model": detector})
    for name in ("pap", "pap_unblocked"):
        out = task.proxy_fitness(name, seed=0)
        assert out.status == "ok" and out.steps == 2, out
        assert set(out.losses) == terms and all(math.isfinite(v) for v in out.losses.values()), out.losses


def test_a_non_finite_pap_loss_stops_training_naming_its_term(retinanet_task, monkeypatch):
    from gp_loss.tasks.detection.pap_settings import PAPSettings

    monkeypatch.setattr(PAPSettings, "loss", lambda self, logits, *rest: logits.sum() * float("nan"))
    out = retinanet_task.proxy_fitness("pap", seed=0)
    assert out.status == "non-finite" and out.score == 0.0
    assert out.reason.startswith("loss of branch 'pap' is nan at step 0"), out.reason
