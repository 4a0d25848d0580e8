"""The detection-shaped sample batches of ``bcls`` (dense anchors, background-dominated) and ``reg``
(decoded boxes over many scales, missing, partly on and nearly on their targets)."""
import math

import pytest
import torch

from gp_loss.kinds import kind_spec
from gp_loss.probes.boxes import paired_areas
from gp_loss.probes.samples import (
    ANCHORS_PER_SAMPLE, BOX_SCALES, CONFIDENT_SCALE, IOU_FLOOR, PRIOR_LOGIT, box_batch, sigmoid_batch,
)


def _bcls(seed=0, n=16, classes=5):
    return kind_spec("bcls").sample_batch(seed=seed, n=n, classes=classes)


def _reg(seed=0, n=16):
    return kind_spec("reg").sample_batch(seed=seed, n=n)


@pytest.mark.parametrize("seed", range(5))
def test_bcls_rows_are_anchors_and_nearly_all_background(seed):
    batch = _bcls(seed)
    x, y, w = batch.inputs()
    assert x.shape == y.shape == w.shape == (ANCHORS_PER_SAMPLE * 16, 5)
    foreground = y.sum(1) > 0
    assert y.sum(1).max() == 1  # one target class per foreground anchor
    assert 2 <= int(foreground.sum()) and (~foreground).float().mean() >= 0.9


@pytest.mark.parametrize("seed", range(5))
def test_bcls_weights_are_the_iou_at_the_target_class(seed):
    x, y, w = _bcls(seed).inputs()
    assert torch.equal(w == 0, y == 0)  # 0 off the target class and on every background row
    iou = w[y > 0]
    assert iou.min() == pytest.approx(IOU_FLOOR) and bool((iou <= 1).all())  # one box misses its object
    assert iou.max() > 0.3  # and others overlap theirs


@pytest.mark.parametrize("seed", range(5))
def test_bcls_logits_sit_around_the_detector_prior_with_mistakes(seed):
    batch = _bcls(seed)
    x, y, _ = (t.detach() for t in batch.inputs())
    assert PRIOR_LOGIT == pytest.approx(math.log(0.01 / 0.99))
    background = x[y.sum(1) == 0]
    assert abs(background.median().item() - PRIOR_LOGIT) < 0.5
    assert (background > 0).any()  # false positives
    assert bool((x.abs() <= 10).all())
    target = x[y > 0]
    assert (target > 0).any() or (target > PRIOR_LOGIT + 3).any()  # some objects found
    # Late in training: background confidently right, false positives confidently wrong.
    confident = batch.confident
    assert torch.equal(confident, CONFIDENT_SCALE * x)
    assert (confident[y.sum(1) == 0] < -20).float().mean() > 0.8
    assert (confident[y.sum(1) == 0] > 0).any()


def test_bcls_other_target_moves_the_foreground():
    batch = _bcls()
    _, y, w = batch.inputs()
    _, y2, w2 = batch.inputs(batch.other_target)
    assert not torch.equal(y, y2) and not torch.equal(w, w2)
    assert int((y2.sum(1) > 0).sum()) > int((y.sum(1) > 0).sum())  # background anchors become objects


def _groups(n):
    missing = max(1, n // 4)
    return slice(0, missing), slice(missing, n - missing), slice(n - missing, n)


@pytest.mark.parametrize("seed", range(5))
def test_reg_boxes_span_detector_scales(seed):
    batch = _reg(seed)
    target = batch.target
    scale = ((target[:, 2] - target[:, 0]) * (target[:, 3] - target[:, 1])).sqrt()
    assert scale.min() == pytest.approx(BOX_SCALES[0], rel=1e-4)
    assert scale.max() == pytest.approx(BOX_SCALES[1], rel=1e-4)
    pred = batch.prediction.detach()
    assert bool((pred[:, 2:] > pred[:, :2]).all()) and bool((target[:, 2:] > target[:, :2]).all())


@pytest.mark.parametrize("seed", range(5))
def test_reg_pairs_miss_partly_overlap_and_nearly_coincide(seed):
    batch = _reg(seed)
    i, u, e = (t.detach() for t in batch.inputs())
    assert i.shape == u.shape == e.shape == (16,)
    iou = i / u
    missing, partial, near = _groups(16)
    assert bool((i[missing] == 0).all()) and bool((e[missing] > u[missing]).all())
    assert bool((iou[partial] > 0.01).all()) and bool((iou[partial] < 0.9).all())
    assert bool((iou[near] > 0.85).all())
    # The confident prediction is nearly on its target, the missing boxes too.
    ci, cu, _ = paired_areas(batch.confident, batch.target)
    assert bool((ci / cu > 0.9).all())
    # Another target changes every input.
    i2, u2, e2 = (t.detach() for t in batch.inputs(batch.other_target))
    assert not torch.equal(i, i2) and not torch.equal(u, u2) and not torch.equal(e, e2)


@pytest.mark.parametrize("seed", range(5))
def test_reg_groups_survive_bfloat16(seed):
    # The range stage evaluates the prediction rounded to bfloat16: a missing box must not come to touch
    # its target (where -log IoU's gradient is 1e20), nor a small box collapse.
    batch = _reg(seed)
    pred = batch.prediction.detach().bfloat16().float()
    i, u, _ = paired_areas(pred, batch.target)
    missing, partial, near = _groups(16)
    assert bool((i[missing] == 0).all())
    lt = torch.max(pred[missing, :2], batch.target[missing, :2])
    rb = torch.min(pred[missing, 2:], batch.target[missing, 2:])
    assert bool(((rb - lt).min(1).values < 0).all())  # clear of the target, not touching it
    assert bool((i[partial] > 0).all()) and bool((i[near] / u[near] > 0.8).all())


@pytest.mark.parametrize("n", [1, 2, 3, 5, 64])
def test_batches_of_any_size(n):
    x, y, w = _bcls(n=n).inputs()
    assert x.shape[0] == ANCHORS_PER_SAMPLE * n and int((y.sum(1) > 0).sum()) >= 2
    i, u, e = _reg(n=n).inputs()
    assert i.shape == (n,) and (i == 0).any()


@pytest.mark.parametrize("builder", [sigmoid_batch, box_batch])
def test_batches_are_a_function_of_the_generator_only(builder):
    state = torch.random.get_rng_state()
    a = builder(torch.Generator().manual_seed(3), "cpu", 16, 5, 8)
    torch.manual_seed(123)  # the global generator plays no part
    b = builder(torch.Generator().manual_seed(3), "cpu", 16, 5, 8)
    c = builder(torch.Generator().manual_seed(4), "cpu", 16, 5, 8)
    torch.random.set_rng_state(state)
    for p, q in zip(a.inputs(), b.inputs()):
        assert torch.equal(p, q)
    assert not torch.equal(a.prediction, c.prediction)
    assert a.prediction.is_leaf and a.prediction.requires_grad
