"""Every paper loss parses, compiles and equals a hand-written torch reference."""
import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import box_iou, generalized_box_iou_loss, sigmoid_focal_loss

from gp_loss.kinds import kind_spec
from gp_loss.language import compile_loss, parse_formula
from gp_loss.paper_losses import PAPER_LOSSES
from primitives import get_kind


def _erf01(t):
    return (torch.erf(t * math.sqrt(math.pi) / 4) + 1) / 2


def _gd01(t):
    z = t * math.pi / 4
    return (2 * torch.atan(torch.tanh(z / 2)) * 2 / math.pi + 1) / 2


def _cls_inputs(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(32, 6, generator=g, dtype=torch.float64) * 2
    labels = torch.randint(0, 6, (32,), generator=g)
    y = F.one_hot(labels, 6).double()
    w = torch.rand(32, 1, generator=g, dtype=torch.float64).expand(32, 6) * 0.9 + 0.1
    return x, y, w, labels


def _boxes(seed):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(20, 2, generator=g, dtype=torch.float64) * 50
    wh = torch.rand(20, 2, generator=g, dtype=torch.float64) * 20 + 5
    target = torch.cat([xy, xy + wh], 1)
    pred = target + torch.randn(20, 4, generator=g, dtype=torch.float64) * 3
    pred = torch.cat([pred[:, :2], torch.max(pred[:, 2:], pred[:, :2] + 1)], 1)
    return pred, target


def _reg_inputs(pred, target):
    from gp_loss.probes.boxes import paired_areas
    return paired_areas(pred, target)


def _loss(name, *inputs):
    p = PAPER_LOSSES[name]
    kind = get_kind(p.kind)
    return compile_loss(kind, parse_formula(kind, p.formula))(*inputs)


@pytest.mark.parametrize("seed", [0, 1])
def test_cls_losses_match_references(seed):
    x, y, w, labels = _cls_inputs(seed)
    logp = F.log_softmax(x, 1)
    p = logp.exp()
    torch.testing.assert_close(_loss("ce", x, y, w), F.cross_entropy(x, labels), rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(_loss("cei", x, y, w), -(w * y * logp).sum(1).mean(), rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(_loss("cse_autoloss_a_cls", x, y, w),
                               -((1 + torch.sin(w)) * y * logp).sum(1).mean(), rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(_loss("focal", x, y, w), -(y * (1 - p) ** 2 * logp).sum(1).mean(),
                               rtol=1e-7, atol=1e-9)
    # Label smoothing 0.1 over 10 classes (as the digits task has): 0.01 per class.
    g = torch.Generator().manual_seed(seed + 100)
    x10, labels10 = 2 * torch.randn(32, 10, generator=g, dtype=torch.float64), torch.randint(0, 10, (32,), generator=g)
    y10 = F.one_hot(labels10, 10).double()
    smooth = F.cross_entropy(x10, labels10, label_smoothing=0.1)
    torch.testing.assert_close(_loss("label_smoothing_ce", x10, y10, y10), smooth, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("seed", [0, 1])
def test_bcls_losses_match_references(seed):
    x, y, w, _ = _cls_inputs(seed)
    n = x.shape[0]
    w = w * y
    torch.testing.assert_close(_loss("bce", x, y, w),
                               F.binary_cross_entropy_with_logits(x, y, reduction="sum") / n)
    torch.testing.assert_close(_loss("sigmoid_focal", x, y, w),
                               sigmoid_focal_loss(x, y, alpha=0.25, gamma=2, reduction="sum") / n)
    s = torch.sigmoid(x)
    ref_b = -(w * y * (1 + _erf01(torch.sigmoid(1 - y))) * torch.log(s)
              + (_gd01(x) - w * y) * (s - w * y) * torch.log(1 - s)).sum() / n
    torch.testing.assert_close(_loss("cse_autoloss_b_cls", x, y, w), ref_b)


@pytest.mark.parametrize("seed", [0, 1])
def test_reg_losses_match_references(seed):
    pred, target = _boxes(seed)
    i, u, e = _reg_inputs(pred, target)
    iou = box_iou(pred, target).diagonal()
    torch.testing.assert_close(_loss("iou", i, u, e), (1 - iou).mean())
    torch.testing.assert_close(_loss("giou", i, u, e), generalized_box_iou_loss(pred, target, reduction="mean"))
    torch.testing.assert_close(_loss("neg_log_iou", i, u, e), -torch.log(iou).mean())
    torch.testing.assert_close(_loss("cse_autoloss_a_reg", i, u, e),
                               ((1 - i / u) + (1 - (i + 2) / e)).mean())
    ref_b = ((3 * e * u + 12 * e + 3 * i + 3 * u + 18)
             / (-3 * e * u + i * u + u ** 2 - 15 * e + 5 * i + 5 * u)).mean()
    torch.testing.assert_close(_loss("cse_autoloss_b_reg", i, u, e), ref_b)


def test_zero_ce_equals_cross_entropy_minus_log_c():
    batch = kind_spec("zero").sample_batch(seed=3)
    yhat, y = batch.inputs()
    ref = F.cross_entropy(yhat, batch.target, reduction="mean") - math.log(yhat.shape[1])
    torch.testing.assert_close(_loss("zero_ce", yhat, y), ref, rtol=1e-5, atol=1e-6)


def test_every_paper_loss_has_gradients():
    for name, p in PAPER_LOSSES.items():
        kind = get_kind(p.kind)
        batch = kind_spec(p.kind).sample_batch()
        value = compile_loss(kind, parse_formula(kind, p.formula))(*batch.inputs())
        (grad,) = torch.autograd.grad(value, batch.prediction)
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0, name
