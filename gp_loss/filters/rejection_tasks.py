"""Tasks of the loss-rejection protocol (AutoLoss-Zero, seed 002, Eq. 3).

A task says, for one kind of loss branch, what the B samples are (the
predictions of a randomly initialised network and their targets), how the
kind's loss inputs are built from a prediction, and which evaluation metric
the search cares about. The protocol (:mod:`gp_loss.filters.rejection`)
optimises the predictions themselves under a candidate loss and compares the
metric before and after, so a new task (detection, segmentation, ...) plugs in
by implementing :class:`RejectionTask`.

Every sample is a small batch (N images, boxes, ...), and the B samples are
stacked along a new leading dimension: a prediction tensor is B×S, where S
is the prediction shape of one sample (N×C logits, N×4 box deltas,
N×C×H×W dense logits).

Default tasks (:func:`default_task`), all deterministic for a seed and built
without touching the global random state:

- ``cls``: logits of a random :class:`SmallCNN` on digits; metric accuracy;
- ``bcls``: the same logits seen as per-class sigmoid scores; metric AP;
- ``reg``: boxes decoded from deltas around perturbed targets; metric mean IoU;
- ``zero``: per-pixel logits of a random dense :class:`SmallCNN` on digits,
  3 classes by pixel intensity; metric mIoU.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F

from gp_loss.boxes import paired_areas
from gp_loss.data.digits import NUM_CLASSES, digits_tensors
from gp_loss.language.compile import ReducedLoss
from gp_loss.language.reduction import reduction_scale
from gp_loss.models.small_cnn import SmallCNN

B = 5  # samples per task, as in AutoLoss-Zero

LossFn = Callable[..., torch.Tensor]


@dataclass
class RejectionSamples:
    """B samples of one task, stacked; everything the protocol needs.

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
        mixes_batch: True if the kind's operators aggregate over the batch
            dimension (``zero``: ``mean_nhw``); the samples are then evaluated
            one by one, otherwise all at once with the batch dimensions merged.
    """

    kind_name: str
    prediction: torch.Tensor
    make_inputs: Callable[[torch.Tensor], tuple[torch.Tensor, ...]]
    metric_fn: Callable[[torch.Tensor], torch.Tensor]
    lr: float
    mixes_batch: bool = False

    @property
    def size(self) -> int:
        """B, the number of samples."""
        return self.prediction.shape[0]

    def metric(self, prediction: torch.Tensor) -> torch.Tensor:
        """Per-sample metric (B) of a B×S prediction."""
        with torch.no_grad():
            return self.metric_fn(prediction)

    def total_loss(self, loss: LossFn, prediction: torch.Tensor) -> torch.Tensor:
        """Sum over the B samples of the candidate's loss on each sample (scalar).

        Because every sample's loss depends on its own prediction only, the
        gradient of this sum with respect to ``prediction`` (B×S) holds in row
        b exactly the gradient of sample b's own loss.
        """
        inputs = self.make_inputs(prediction)
        b = self.size
        if self.mixes_batch:
            # mean_nhw would mix samples merged into one batch: one call each.
            total = loss(*(t[0] for t in inputs))
            for k in range(1, b):
                total = total + loss(*(t[k] for t in inputs))
            return total
        # cls/bcls/reg operators work row by row (softmax and dot over classes
        # only) and the reductions are means over rows, so one call on the
        # B*N merged rows is the mean of the B sample losses: times B gives
        # their sum. One call instead of B keeps the protocol cheap.
        return loss(*_merged(inputs)) * b

    def loss_and_grad(self, loss: LossFn, prediction: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(total loss, d total / d prediction (B×S))`` at ``prediction``.

        Raises ``ValueError`` if the loss is not a scalar or does not depend
        on the prediction.
        """
        if isinstance(loss, ReducedLoss) and not self.mixes_batch:
            return self._raw_loss_and_grad(loss, prediction)
        with torch.enable_grad():  # also when called under torch.no_grad()
            p = prediction.detach().requires_grad_(True)
            total = self.total_loss(loss, p)
        if not isinstance(total, torch.Tensor) or total.dim() != 0:
            raise ValueError("loss is not a scalar")
        if not total.requires_grad:
            raise ValueError("loss does not depend on the prediction")
        (grad,) = torch.autograd.grad(total, p, allow_unused=True)
        if grad is None:
            raise ValueError("loss does not depend on the prediction")
        return total.detach(), grad


    def _raw_loss_and_grad(self, loss: ReducedLoss, prediction: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`loss_and_grad` of a compiled loss, differentiating its raw output.

        The total is ``c * sum(o)`` for the raw output ``o`` on the merged rows
        (``c``: the reduction's factor times B, see :meth:`total_loss`), so its
        gradient is that of ``o`` with every element's upstream gradient ``c``.
        Autograd then starts at the tree's root, without the reduction's three
        scalar nodes: about a sixth of the protocol's time on a random tree.
        """
        b = self.size
        with torch.enable_grad():
            p = prediction.detach().requires_grad_(True)
            out = loss.raw(*_merged(self.make_inputs(p)))
        if not isinstance(out, torch.Tensor) or out.dim() == 0:
            raise ValueError("loss is not a scalar")
        if not out.requires_grad:
            raise ValueError("loss does not depend on the prediction")
        scale = reduction_scale(loss.kind_name, tuple(out.shape)) * b
        total = out.detach().sum() * scale
        (grad,) = torch.autograd.grad(out, p, grad_outputs=torch.full_like(out, scale), allow_unused=True)
        if grad is None:
            raise ValueError("loss does not depend on the prediction")
        return total, grad


def _merged(inputs: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
    """Each B×N×... input with its first two dimensions merged: (B*N)×..."""
    return [t.flatten(0, 1) for t in inputs]


@runtime_checkable
class RejectionTask(Protocol):
    """A task of the rejection protocol for one loss kind.

    ``make_samples(seed)`` returns the B samples; their evaluation metric is
    ``samples.metric(prediction B×S) -> B`` (it lives on the samples because
    it needs their targets). Tasks are small dataclasses (see below).
    """

    kind_name: str

    def make_samples(self, seed: int) -> RejectionSamples:
        """The B samples (deterministic for ``seed``)."""
        ...


# --------------------------------------------------------------------------- helpers


def _random_network(seed: int, **kwargs) -> SmallCNN:
    """A randomly initialised SmallCNN; the global RNG state is left as it was.

    Weights are He (Kaiming-normal, fan-in) initialised and biases zero: with
    torch's default init the logits of this small net are ~0.1 and nearly the
    same for every image (std across images ~0.002), so every loss would be
    judged only near x = 0, where many different losses look linear and alike.
    He init keeps activations at unit scale through the ReLUs.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = SmallCNN(**kwargs)
        for module in net.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                torch.nn.init.zeros_(module.bias)
    return net.eval()


def _digit_batches(seed: int, b: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``b`` disjoint batches of ``n`` digits: images b×n×1×8×8 and labels b×n."""
    images, labels = digits_tensors()
    pick = torch.from_numpy(np.random.default_rng(seed).choice(len(labels), b * n, replace=False))
    return images[pick].reshape(b, n, 1, 8, 8), labels[pick].reshape(b, n)


def _iou_like(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    """IoU-like weights in [0.3, 1] (as detectors' positives carry)."""
    g = torch.Generator().manual_seed(seed + 7919)
    return 0.3 + 0.7 * torch.rand(shape, generator=g)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample accuracy: logits B×N×C, labels B×N -> B."""
    return (logits.argmax(-1) == labels).float().mean(-1)


def average_precision(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-row average precision, exactly as ``sklearn.metrics.average_precision_score``.

    ``AP = sum_n (R_n - R_{n-1}) P_n`` over the distinct score thresholds
    (tied scores form one threshold). Equivalently: the mean, over the
    positives, of the precision at the end of the positive's tie group.

    Args:
        scores: B×M scores (higher = more confident).
        targets: B×M binary targets; every row needs at least one positive.

    Returns:
        B average precisions.
    """
    order = torch.argsort(scores, dim=1, descending=True)
    s = torch.gather(scores, 1, order)
    t = torch.gather(targets.to(scores.dtype), 1, order)
    m = s.shape[1]
    tp = torch.cumsum(t, 1)
    rank = torch.arange(1, m + 1, dtype=s.dtype, device=s.device)
    precision = tp / rank
    # Index of the last element of each tie group: an element ends its group
    # when the next score differs; a reversed running minimum over the group
    # ends spreads that index back over the group.
    ends = torch.ones_like(s, dtype=torch.bool)
    ends[:, :-1] = s[:, :-1] != s[:, 1:]
    idx = torch.where(ends, torch.arange(m, device=s.device).expand_as(s), torch.full_like(order, m))
    group_end = torch.flip(torch.cummin(torch.flip(idx, [1]), 1).values, [1])
    return (t * torch.gather(precision, 1, group_end)).sum(1) / t.sum(1)


def mean_iou(logits: torch.Tensor, labels: torch.Tensor, classes: int) -> torch.Tensor:
    """Per-sample mIoU of dense logits B×N×C×H×W against labels B×N×H×W -> B.

    Per sample, IoU per class over all its pixels, averaged over the classes
    present in the target or the prediction.
    """
    pred = logits.argmax(2)
    b = pred.shape[0]
    pred, labels = pred.reshape(b, -1), labels.reshape(b, -1)
    ious = []
    present = []
    for c in range(classes):
        p, t = pred == c, labels == c
        inter = (p & t).sum(1).float()
        union = (p | t).sum(1).float()
        ious.append(inter / union.clamp(min=1))
        present.append((union > 0).float())
    iou, pres = torch.stack(ious, 1), torch.stack(present, 1)
    return (iou * pres).sum(1) / pres.sum(1).clamp(min=1)


# --------------------------------------------------------------------------- tasks


def _random_logits(seed: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits B×n×10 of a random SmallCNN on B batches of n digits, and labels B×n."""
    images, labels = _digit_batches(seed, B, n)
    with torch.no_grad():
        logits = _random_network(seed).forward(images.reshape(-1, 1, 8, 8))
    return logits.reshape(B, n, NUM_CLASSES), labels


@dataclass
class ClassificationTask:
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
        w = _iou_like(seed, (B, self.n, 1)).expand(B, self.n, NUM_CLASSES)

        return RejectionSamples(
            self.kind_name, logits, lambda x: (x, y, w), lambda x: accuracy(x, labels), self.lr)


@dataclass
class BinaryClassificationTask:
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
        w = y * _iou_like(seed, (B, self.n, 1))
        flat_y = y.reshape(B, -1)

        return RejectionSamples(
            self.kind_name, logits, lambda x: (x, y, w),
            lambda x: average_precision(x.reshape(B, -1), flat_y), self.lr)


_DW_MAX = 4.135  # ln(1000/16), the detectors' clamp of dw, dh


def decode_boxes(centre: torch.Tensor, size: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """Boxes from anchors and (dx, dy, dw, dh) deltas, as Faster R-CNN decodes them.

    Args:
        centre, size: anchor centres and (width, height), ...×2.
        deltas: ...×4; ``dw, dh`` clamped at ln(1000/16) as detectors do.

    Returns:
        boxes ...×4 (x1, y1, x2, y2), always with positive width and height.
    """
    c = centre + deltas[..., :2] * size
    half = (0.5 * size) * torch.exp(deltas[..., 2:].clamp(max=_DW_MAX))
    return torch.cat([c - half, c + half], -1)


@dataclass
class RegressionTask:
    """``reg``: box regression in pixel units.

    Targets: N random boxes (sides 16 to 96 px) per sample. The prediction
    B×N×4 holds box deltas (as a detector's regression head outputs) around
    anchors that are the targets randomly shifted and rescaled; the initial
    deltas are small random values (a random head). The loss sees
    ``i, u, e`` of the decoded boxes (:func:`gp_loss.boxes.paired_areas`);
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
        target = torch.cat([xy, xy + wh], -1)
        shift = 0.2 * wh * torch.randn(B, n, 2, generator=g)
        scale = torch.exp(0.3 * torch.randn(B, n, 2, generator=g))
        centre, size = xy + 0.5 * wh + shift, wh * scale  # the anchors
        deltas = 0.1 * torch.randn(B, n, 4, generator=g)
        flat_target = target.reshape(-1, 4)

        def make_inputs(d: torch.Tensor) -> tuple[torch.Tensor, ...]:
            boxes = decode_boxes(centre, size, d).reshape(-1, 4)
            return tuple(a.reshape(B, n) for a in paired_areas(boxes, flat_target))

        def metric(d: torch.Tensor) -> torch.Tensor:
            i, u, _ = make_inputs(d)
            return (i / u).mean(1)

        return RejectionSamples(self.kind_name, deltas, make_inputs, metric, self.lr)


@dataclass
class SegmentationTask:
    """``zero``: dense 3-class segmentation of digits by pixel intensity.

    Classes: background (< 0.25), faint stroke (< 0.75), strong stroke.
    Prediction B×N×C×8×8: per-pixel logits of a random dense SmallCNN;
    ``y`` one-hot N×C×H×W per sample; metric: mIoU.
    """

    n: int = 4
    lr: float = 0.1
    classes: int = 3
    kind_name: str = "zero"

    def make_samples(self, seed: int) -> RejectionSamples:
        images, _ = _digit_batches(seed, B, self.n)
        flat = images.reshape(-1, 1, 8, 8)
        with torch.no_grad():
            logits = _random_network(seed, classes=self.classes, dense=True).forward(flat)
        logits = logits.reshape(B, self.n, self.classes, 8, 8)
        labels = torch.bucketize(images[:, :, 0], torch.tensor([0.25, 0.75]))  # B×N×8×8
        y = F.one_hot(labels, self.classes).permute(0, 1, 4, 2, 3).float().contiguous()

        return RejectionSamples(
            self.kind_name, logits, lambda p: (p, y),
            lambda p: mean_iou(p, labels, self.classes), self.lr, mixes_batch=True)


DEFAULT_TASKS: dict[str, Callable[[], RejectionTask]] = {
    "cls": ClassificationTask,
    "bcls": BinaryClassificationTask,
    "reg": RegressionTask,
    "zero": SegmentationTask,
}


def default_task(kind_name: str) -> RejectionTask:
    """The default task of a kind (``cls``, ``bcls``, ``reg``, ``zero``)."""
    try:
        return DEFAULT_TASKS[kind_name]()
    except KeyError:
        raise ValueError(f"no rejection task for kind {kind_name!r}") from None
