"""One sample batch per kind, as the search feeds a branch: the validity stage's probe.

Also what ``gp-loss check`` and the tests evaluate losses on. Every batch keeps the
prediction as a leaf tensor (``requires_grad``) so gradients can be taken with
respect to it, and can rebuild its inputs for another target. A builder takes a
seeded generator, the device and the sizes ``n`` (rows), ``classes`` and ``size``
(pixels a side), ignoring those its kind has not (boxes have no classes);
:meth:`gp_loss.kinds.KindSpec.sample_batch` seeds and calls it.

The ``bcls`` and ``reg`` batches are shaped as a detector's branches see them
(:mod:`gp_loss.tasks.detection`): ``bcls`` many anchors, nearly all background,
logits around the focal-loss prior; ``reg`` decoded boxes of 4 to 300 px, some
missing their target entirely (``i = 0``), some partly on it, some nearly on it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from gp_loss.probes.boxes import convert, paired_areas
from gp_loss.probes.digits import dense_one_hot, iou_like


@dataclass
class SampleBatch:
    """Inputs of one kind, in argument order, built from a prediction and a target.

    ``make(prediction, target)`` returns the input tuple; ``prediction`` is a
    leaf tensor, so ``loss(*batch.inputs())`` can be differentiated against it.
    ``confident`` is a prediction of the same shape as a model makes late in
    training (large logits, right or wrong; boxes almost on their targets), where
    a loss that divides by a vanishing quantity blows up.
    """

    prediction: torch.Tensor
    target: object
    make: Callable[[torch.Tensor, object], tuple[torch.Tensor, ...]]
    other_target: object  # a different target of the same shape
    confident: torch.Tensor

    def inputs(self, target=None) -> tuple[torch.Tensor, ...]:
        return self.make(self.prediction, self.target if target is None else target)


# Logits this many times the sample's (standard deviation 2): softmax probabilities within
# e**-40 of 0 or 1, as a model reaches on easy samples late in training.
CONFIDENT_SCALE = 8.0
# Predicted boxes this fraction of their sample offset away from their targets (IoU 0.9 or more,
# about 0.99 for the boxes that overlap their targets in the sample).
CONFIDENT_BOX_OFFSET = 0.01

# ``bcls``: rows (anchors) per n, one row in this many foreground (the rest background), and
# the initial logit of a focal-loss detector head (bias -log((1 - 0.01) / 0.01): sigmoid 0.01).
ANCHORS_PER_SAMPLE = 8
FOREGROUND_EVERY = 16
PRIOR_LOGIT = -math.log(99)
# The IoU weight of a foreground anchor whose box misses its ground truth (detectors clamp at it).
IOU_FLOOR = 1e-7
# ``reg``: the smallest and largest box scale (square root of the area, pixels).
BOX_SCALES = (4.0, 300.0)

# (generator, device, n, classes, size) -> batch
SampleBuilder = Callable[[torch.Generator, str | torch.device, int, int, int], SampleBatch]


def softmax_batch(g: torch.Generator, device: str | torch.device, n: int, classes: int, size: int) -> SampleBatch:
    """``cls``: logits ``x`` n×classes, one-hot ``y``; the last class is background.

    ``w`` is the IoU of a positive's box (>= 1e-7) and 1 for background, over every class.
    """
    c = classes
    labels = torch.randint(0, c, (n,), generator=g).to(device)
    iou = iou_like((n,), g).to(device)
    x = (2 * torch.randn(n, c, generator=g)).to(device).requires_grad_()

    def make(pred, lab):
        y = F.one_hot(lab, c).to(pred.dtype)
        w = torch.where((lab < c - 1)[:, None], iou[:, None].clamp(min=1e-7), torch.ones_like(iou)[:, None])
        return pred, y, w.expand(n, c)

    return SampleBatch(x, labels, make, (labels + 1) % c, CONFIDENT_SCALE * x.detach())


def sigmoid_batch(g: torch.Generator, device: str | torch.device, n: int, classes: int, size: int) -> SampleBatch:
    """``bcls``: a dense detector's classification branch: logits ``x`` (A×classes), binary ``y``, ``w``.

    A = :data:`ANCHORS_PER_SAMPLE` × n anchors (rows), as a dense head scores many
    locations per object. Label ``classes`` is background (an all-zero row of ``y``);
    one row in :data:`FOREGROUND_EVERY` (at least 2 rows) is foreground, at random
    places, and as many background rows carry a false positive. ``w`` is the IoU of a foreground anchor's decoded box with its ground
    truth at the target class (uniform, the first foreground row at the floor 1e-7:
    a box that misses its object), 0 elsewhere.

    The logits are those of a head whose bias starts at the focal-loss prior
    (:data:`PRIOR_LOGIT`, sigmoid 0.01, as FCOS and RetinaNet initialise it) early in
    training: every logit the prior plus noise (sd 1.5), except a foreground row's
    target logit, anywhere from missed to found (uniform in [-6, 6]), and one class
    of some background rows, false positives (uniform in [-2, 6]). All within ±10,
    so the confident prediction (× :data:`CONFIDENT_SCALE`) stays within ±80, where
    float32 and bfloat16 still resolve a sigmoid: background confidently right
    (about -37), false positives and missed objects confidently wrong.
    """
    c = classes
    rows = ANCHORS_PER_SAMPLE * n
    fg = max(2, rows // FOREGROUND_EVERY)
    places = torch.randperm(rows, generator=g)
    labels = torch.full((rows,), c, dtype=torch.long)
    labels[places[:fg]] = torch.randint(0, c, (fg,), generator=g)
    iou = iou_like((rows,), g, low=IOU_FLOOR)
    iou[places[0]] = IOU_FLOOR
    x = PRIOR_LOGIT + 1.5 * torch.randn(rows, c, generator=g)
    x[places[:fg], labels[places[:fg]]] = -6 + 12 * torch.rand(fg, generator=g)
    false_positives = places[fg:fg + max(1, rows // FOREGROUND_EVERY)]
    x[false_positives, torch.randint(0, c, (len(false_positives),), generator=g)] = (
        -2 + 8 * torch.rand(len(false_positives), generator=g))
    x = x.clamp(-10, 10).to(device).requires_grad_()
    labels, iou = labels.to(device), iou.to(device)

    def make(pred, lab):
        y = F.one_hot(lab, c + 1)[:, :c].to(pred.dtype)
        return pred, y, y * iou[:, None]

    return SampleBatch(x, labels, make, (labels + 1) % (c + 1), CONFIDENT_SCALE * x.detach())


def box_batch(g: torch.Generator, device: str | torch.device, n: int, classes: int, size: int) -> SampleBatch:
    """``reg``: n decoded predicted boxes and their ground truth; inputs ``i, u, e`` (each n).

    As a detector's regression branch sees them over training: the targets' scales
    (square root of the area) log-spaced from :data:`BOX_SCALES` [0] to [1] px, at
    random aspect ratios (1:√2 to √2:1) and shuffled over three groups of pairs:

    * the first n/4: predicted boxes that miss their target (``i = 0``, as early in
      training), up to about two box sizes away, their own size off by up to e^±0.5;
    * the last n/4: boxes nearly on their targets (corners off by 2% of the box
      size, standard deviation: IoU about 0.9 to 0.97), as late in training;
    * the rest: partly overlapping (centres up to 0.6 box sizes away, sizes off by up
      to e^±0.4: IoU from a few hundredths to about 0.9).

    Targets lie within two box sizes of the origin: ``i, u, e`` do not depend on
    where a pair is, and coordinates of the box's own scale keep bfloat16 (the range
    stage's autocast pass rounds the prediction to 8 significant bits) from
    rounding a small box away or making a missing pair touch.
    """
    scale = torch.logspace(math.log10(BOX_SCALES[0]), math.log10(BOX_SCALES[1]), n, dtype=torch.float32)
    scale = scale[torch.randperm(n, generator=g)]
    aspect = torch.exp(math.log(2) / 4 * (2 * torch.rand(n, generator=g) - 1))
    wh = torch.stack([scale * aspect, scale / aspect], 1)
    centre = wh * (0.5 + torch.rand(n, 2, generator=g))
    target = convert(torch.cat([centre, wh], 1), "cxcywh", "xyxy")

    missing = min(max(1, n // 4), n)
    near = min(max(1, n // 4), n - missing)
    partial = n - missing - near
    # Missing: pred size off by e^±0.5, moved along a random direction until clear of the target.
    pwh = wh[:missing] * torch.exp(torch.rand(missing, 2, generator=g) - 0.5)
    angle = 2 * math.pi * torch.rand(missing, generator=g)
    direction = torch.stack([torch.cos(angle), torch.sin(angle)], 1)
    # The distance along ``direction`` at which the boxes stop overlapping on either axis, then beyond it.
    clear = ((wh[:missing] + pwh) / 2 / direction.abs().clamp(min=1e-6)).min(1).values
    shift = direction * (clear * (1.2 + 0.8 * torch.rand(missing, generator=g)))[:, None]
    pred_missing = torch.cat([centre[:missing] + shift, pwh], 1)
    # Partial: centre up to 0.6 sizes off on each axis, size off by e^±0.4.
    k = slice(missing, missing + partial)
    offset = wh[k] * 0.6 * (2 * torch.rand(partial, 2, generator=g) - 1)
    pwh = wh[k] * torch.exp(0.4 * (2 * torch.rand(partial, 2, generator=g) - 1))
    pred_partial = torch.cat([centre[k] + offset, pwh], 1)
    pred = convert(torch.cat([pred_missing, pred_partial]), "cxcywh", "xyxy")
    # Near: corners off by 2% of the size (standard deviation).
    jitter = 0.02 * wh[missing + partial:].repeat(1, 2) * torch.randn(near, 4, generator=g)
    pred = torch.cat([pred, target[missing + partial:] + jitter])

    target, wh = target.to(device), wh.to(device)
    pred = pred.to(device).requires_grad_()
    shifted = target + 0.3 * wh.repeat(1, 2)
    confident = target + CONFIDENT_BOX_OFFSET * (pred.detach() - target)
    return SampleBatch(pred, target, paired_areas, shifted, confident)


def dense_batch(g: torch.Generator, device: str | torch.device, n: int, classes: int, size: int) -> SampleBatch:
    """``zero``: ``yhat`` = softmax probabilities and one-hot ``y``, each N×classes×size×size, N = n/8 (at least 2).

    The prediction (the leaf) is the logits, as the tasks' networks output them; ``yhat``
    is their softmax over the classes, as the tasks pass it. Fewer images than rows
    elsewhere: each carries size×size pixels.
    """
    images = max(2, n // 8)
    labels = torch.randint(0, classes, (images, size, size), generator=g).to(device)
    logits = torch.randn(images, classes, size, size, generator=g).to(device).requires_grad_()

    def make(pred, lab):
        return torch.softmax(pred, -3), dense_one_hot(lab, classes).to(pred.dtype)

    return SampleBatch(logits, labels, make, (labels + 1) % classes, CONFIDENT_SCALE * logits.detach())
