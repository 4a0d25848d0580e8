"""The samples of the loss-rejection protocol, one probe per kind.

AutoLoss-Zero (Li et al., CVPR 2022, Eq. 3) judges a candidate on B samples of
its task: the predictions of a randomly initialised network and their targets.
A probe says, for one kind of loss branch, what those samples are, how the
kind's loss inputs are built from a prediction, and which evaluation metric the
search cares about. The protocol (:mod:`gp_loss.filters.rejection`) optimises
the predictions themselves under a candidate loss and compares the metric before
and after, so a new task (detection, segmentation, ...) plugs in by implementing
:class:`RejectionProbe`.

Every sample is a small batch (N images, boxes, ...), and the B samples are
stacked along a new leading dimension: a prediction tensor is B×S, where S
is the prediction shape of one sample (N×C logits, N×4 box deltas,
N×C×H×W dense logits).

The probes, all deterministic for a seed and built without touching the global
random state:

- ``cls``: logits of a random :class:`SmallCNN` on digits; metric accuracy;
- ``bcls``: the same logits seen as per-class sigmoid scores; metric AP;
- ``reg``: boxes decoded from deltas around perturbed targets; metric mean IoU;
- ``zero``: per-pixel logits of a random dense :class:`SmallCNN` on digits,
  3 classes by pixel intensity; metric mIoU.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, runtime_checkable

import torch
import torch.nn.functional as F

from gp_loss.data.digits import NUM_CLASSES
from gp_loss.probes.boxes import convert, decode, paired_areas
from gp_loss.probes.digits import (
    INTENSITY_CLASSES, dense_one_hot, digit_batches, intensity_classes, iou_like, random_network,
)
from gp_loss.probes.metrics import accuracy, average_precision, mean_box_iou, mean_iou

B = 5  # samples per probe, as in AutoLoss-Zero


@dataclass(frozen=True)
class RejectionSamples:
    """B samples of one probe, stacked; everything the protocol needs.

    Attributes:
        kind_name: the loss kind these samples feed.
        prediction: initial predictions B×S (detached); the protocol optimises
            a copy of it.
        make_inputs: ``make_inputs(prediction B×S) -> inputs``: the kind's loss
            inputs in argument order, each B×N×... (differentiable with
            respect to ``prediction``).
        metric_fn: ``metric_fn(prediction B×S) -> B``: the evaluation metric of
            each sample (higher is better).
        lr: Adam step size suited to the scale of the prediction.
    """

    kind_name: str
    prediction: torch.Tensor
    make_inputs: Callable[[torch.Tensor], tuple[torch.Tensor, ...]]
    metric_fn: Callable[[torch.Tensor], torch.Tensor]
    lr: float

    @property
    def size(self) -> int:
        """B, the number of samples."""
        return self.prediction.shape[0]

    def metric(self, prediction: torch.Tensor) -> torch.Tensor:
        """Per-sample metric (B) of a B×S prediction."""
        with torch.no_grad():
            return self.metric_fn(prediction)


@runtime_checkable
class RejectionProbe(Protocol):
    """The rejection protocol's probe for one loss kind.

    ``make_samples(seed)`` returns the B samples; their evaluation metric is
    ``samples.metric(prediction B×S) -> B`` (it lives on the samples because
    it needs their targets). Probes are small dataclasses (see below).
    """

    kind_name: str

    def make_samples(self, seed: int) -> RejectionSamples:
        """The B samples (deterministic for ``seed``)."""
        ...


def _iou_weights(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    """IoU-like weights in [0.3, 1] from their own generator (the network and data use ``seed``)."""
    return iou_like(shape, torch.Generator().manual_seed(seed + 7919))


def _random_logits(seed: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits B×n×10 of a random SmallCNN on B batches of n digits, and labels B×n."""
    images, labels = digit_batches(seed, B, n)
    with torch.no_grad():
        logits = random_network(seed).forward(images.reshape(-1, 1, 8, 8))
    return logits.reshape(B, n, NUM_CLASSES), labels


@dataclass
class ClassificationProbe:
    """``cls``: softmax classification of digits.

    Prediction B×N×C: logits of a random SmallCNN on N digits per sample;
    ``y`` one-hot; ``w`` an IoU-like weight per image in [0.3, 1] broadcast
    over the classes (so that ``w``-weighted losses differ from plain ones);
    metric: accuracy.
    """

    n: int = 16
    lr: float = 0.1
    kind_name: str = "cls"

    def make_samples(self, seed: int) -> RejectionSamples:
        logits, labels = _random_logits(seed, self.n)
        y = F.one_hot(labels, NUM_CLASSES).float()
        w = _iou_weights(seed, (B, self.n, 1)).expand(B, self.n, NUM_CLASSES)
        return RejectionSamples(
            self.kind_name, logits, lambda x: (x, y, w), lambda x: accuracy(x, labels), self.lr)


@dataclass
class BinaryClassificationProbe:
    """``bcls``: per-class sigmoid scores of digits (as a dense detector's head).

    Prediction B×N×C: logits of a random SmallCNN; ``y`` one-hot binary
    targets; ``w = y * IoU-like`` weight; metric: average precision of the
    N*C scores of each sample.
    """

    n: int = 16
    lr: float = 0.1
    kind_name: str = "bcls"

    def make_samples(self, seed: int) -> RejectionSamples:
        logits, labels = _random_logits(seed, self.n)
        y = F.one_hot(labels, NUM_CLASSES).float()
        w = y * _iou_weights(seed, (B, self.n, 1))
        flat_y = y.reshape(B, -1)
        return RejectionSamples(
            self.kind_name, logits, lambda x: (x, y, w),
            lambda x: average_precision(x.reshape(B, -1), flat_y), self.lr)


@dataclass
class BoxRegressionProbe:
    """``reg``: box regression in pixel units.

    Targets: N random boxes (sides 16 to 96 px) per sample. The prediction
    B×N×4 holds box deltas (as a detector's regression head outputs) around
    anchors that are the targets randomly shifted and rescaled; the initial
    deltas are small random values (a random head). The loss sees
    ``i, u, e`` of the decoded boxes (:func:`~gp_loss.probes.boxes.paired_areas`);
    metric: mean IoU.
    """

    n: int = 16
    lr: float = 0.05
    kind_name: str = "reg"

    def make_samples(self, seed: int) -> RejectionSamples:
        g = torch.Generator().manual_seed(seed)
        n = self.n
        xy = 200 * torch.rand(B, n, 2, generator=g)
        wh = 16 + 80 * torch.rand(B, n, 2, generator=g)
        target = convert(torch.cat([xy, wh], -1), "xywh", "xyxy")
        shift = 0.2 * wh * torch.randn(B, n, 2, generator=g)
        scale = torch.exp(0.3 * torch.randn(B, n, 2, generator=g))
        anchors = torch.cat([xy + 0.5 * wh + shift, wh * scale], -1)  # (cx, cy, w, h)
        deltas = 0.1 * torch.randn(B, n, 4, generator=g)
        flat_target = target.reshape(-1, 4)

        def make_inputs(d: torch.Tensor) -> tuple[torch.Tensor, ...]:
            boxes = decode(anchors, d).reshape(-1, 4)
            return tuple(a.reshape(B, n) for a in paired_areas(boxes, flat_target))

        def metric(d: torch.Tensor) -> torch.Tensor:
            i, u, _ = make_inputs(d)
            return mean_box_iou(i, u)

        return RejectionSamples(self.kind_name, deltas, make_inputs, metric, self.lr)


@dataclass
class SegmentationProbe:
    """``zero``: dense segmentation of digits by pixel intensity (:func:`~gp_loss.probes.digits.intensity_classes`).

    Prediction B×N×C×8×8: per-pixel logits of a random dense SmallCNN (the inputs: ``yhat``
    their softmax over C, ``y`` one-hot N×C×H×W per sample); metric: mIoU.
    """

    n: int = 4
    lr: float = 0.1
    kind_name: str = "zero"

    def make_samples(self, seed: int) -> RejectionSamples:
        classes = INTENSITY_CLASSES
        images, _ = digit_batches(seed, B, self.n)
        flat = images.reshape(-1, 1, 8, 8)
        with torch.no_grad():
            logits = random_network(seed, classes=classes, dense=True).forward(flat)
        logits = logits.reshape(B, self.n, classes, 8, 8)
        labels = intensity_classes(images)  # B×N×8×8
        # Contiguous: the protocol hands the loss the whole stack (the kind stacks samples,
        # :attr:`~gp_loss.kinds.KindSpec.stacks_samples`), or, for a task's own normaliser,
        # each sample's slice on its own.
        y = dense_one_hot(labels, classes).contiguous()
        # yhat = the softmax over the classes of the optimised logits, as the tasks pass it.
        return RejectionSamples(
            self.kind_name, logits, lambda p: (torch.softmax(p, -3), y), lambda p: mean_iou(p, labels, classes), self.lr)
