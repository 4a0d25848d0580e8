"""Paired box areas and box decoding agree with torchvision's own box ops."""
import math

import torch
from torchvision.models.detection._utils import BoxCoder
from torchvision.ops import box_convert, box_iou, generalized_box_iou

from gp_loss.probes.boxes import SCALE_CLAMP, decode, paired_areas


def _boxes(g: torch.Generator, n: int) -> torch.Tensor:
    xy = 100 * torch.rand(n, 2, generator=g, dtype=torch.float64)
    return torch.cat([xy, xy + 5 + 50 * torch.rand(n, 2, generator=g, dtype=torch.float64)], 1)


def test_paired_areas_give_torchvisions_iou_and_giou_of_each_pair():
    g = torch.Generator().manual_seed(0)
    pred, target = _boxes(g, 20), _boxes(g, 20)
    pred[:5] = target[:5] + 3  # some overlapping pairs; most do not overlap
    i, u, e = paired_areas(pred, target)
    torch.testing.assert_close(i / u, box_iou(pred, target).diagonal())
    torch.testing.assert_close(i / u - (e - u) / e, generalized_box_iou(pred, target).diagonal())
    assert (i[:5] > 0).all()


def test_decode_is_box_coder_with_unit_weights():
    g = torch.Generator().manual_seed(1)
    anchors = _boxes(g, 30)
    deltas = torch.randn(30, 4, generator=g, dtype=torch.float64)
    deltas[0, 2:] = 9.0  # beyond the clamp
    coder = BoxCoder(weights=(1.0, 1.0, 1.0, 1.0), bbox_xform_clip=SCALE_CLAMP)
    expected = coder.decode_single(deltas, anchors)
    torch.testing.assert_close(decode(box_convert(anchors, "xyxy", "cxcywh"), deltas), expected)
    assert math.isclose(SCALE_CLAMP, math.log(1000 / 16))


def test_decode_keeps_leading_dimensions_and_positive_sizes():
    anchors = torch.tensor([[10.0, 20.0, 4.0, 6.0]]).expand(3, 2, 4)
    boxes = decode(anchors, torch.zeros(3, 2, 4))
    assert boxes.shape == (3, 2, 4)
    assert torch.equal(boxes[0, 0], torch.tensor([8.0, 17.0, 12.0, 23.0]))  # zero deltas: the anchor
    for delta in (-5.0, -50.0):  # sizes shrink by e^delta but never turn negative
        boxes = decode(anchors, torch.full((3, 2, 4), delta))
        assert (boxes[..., 2:] >= boxes[..., :2]).all()
