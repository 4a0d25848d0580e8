"""Semantic-segmentation metrics, computed on the device and accumulated image by image.

``SegmentationMeter(C)`` gathers, over a validation set, a C×C confusion matrix and
per-class boundary counts; ``compute()`` turns them into six metrics, fractions in
[0, 1] (``None`` where a metric has nothing to measure, e.g. before any pixel was seen):

Region metrics (from the confusion matrix ``M[t, p]`` of valid pixels; a pixel is valid
where the target is not ``ignore_index``, and ignored pixels count nowhere):

* ``mIoU`` -- mean over the classes present in the target *or* the prediction
  (union > 0) of IoU_c = TP_c / (TP_c + FP_c + FN_c) (Everingham et al., "The PASCAL
  Visual Object Classes Challenge", IJCV 2010). A class absent from both is left out
  of the mean, not counted as 0 or 1.
* ``FWIoU`` -- frequency-weighted IoU, sum_c f_c * IoU_c with f_c the share of valid
  pixels whose target is c (Long, Shelhamer & Darrell, "Fully Convolutional Networks
  for Semantic Segmentation", CVPR 2015).
* ``mAcc`` -- mean over the classes present in the target of per-class pixel accuracy
  (recall) TP_c / (TP_c + FN_c) (Long et al. 2015, "mean accuracy").
* ``aAcc`` -- global pixel accuracy, sum_c TP_c / number of valid pixels.

Boundary metrics. For each class c, binary masks ``pred == c`` and ``target == c`` are
formed with ignored pixels set to 0 in both (an ignored pixel belongs to no class, in
the prediction and the target alike, so what a model predicts under it cannot matter):

* ``BF1`` -- boundary F1 as Auto Seg-Loss computes it (Li, Tao, Zhu, Wang, Huang & Dai,
  "Auto Seg-Loss: Searching Metric Surrogates for Semantic Segmentation", ICLR 2021;
  the measure itself is Csurka, Larlus & Perronnin, "What is a good evaluation measure
  for semantic segmentation?", BMVC 2013). A pixel is on a mask's boundary where a 3×3
  average pool of the mask differs from the pixel, i.e. some 3×3 neighbour has the other
  value; the image border is padded by replication, so it is not a boundary. Only
  boundary pixels at valid positions are kept. Each boundary map is dilated by a
  (2*tolerance+1)² max pool, so a boundary pixel is matched when the other map has a
  boundary pixel within ``tolerance`` pixels (Chebyshev distance). Per class, four counts
  are summed over all images: |Pb ∩ dilate(Gb)|, |Pb|, |Gb ∩ dilate(Pb)|, |Gb|
  (Pb / Gb: predicted / ground-truth boundary). Then P_c = |Pb ∩ dilate(Gb)| / |Pb|,
  R_c = |Gb ∩ dilate(Pb)| / |Gb| (0 where the denominator is 0), F1_c = 2 P_c R_c /
  (P_c + R_c) (0 where P_c + R_c = 0), averaged over the classes with a boundary in the
  target or the prediction. A class with ground-truth boundary but none predicted (or
  the reverse) scores F1 = 0.
* ``BIoU`` -- Boundary IoU (Cheng, Girshick, Dollár, Berg & Kirillov, "Boundary IoU:
  Improving Object-Centric Image Segmentation Evaluation", CVPR 2021). The boundary
  region of a mask is its pixels within d pixels of its contour, mask AND NOT erode(mask),
  the erosion being a (2d+1)² min pool (replicate padding: the image border is not a
  contour, as for BF1, whereas Cheng et al.'s reference pads with zeros and counts it;
  ignored pixels, being 0, are a contour). Per class, |Gd ∩ Pd| and |Gd ∪ Pd| are summed
  over images and BIoU is the mean over classes with a non-empty union of their ratio.
  d = max(tolerance, 1): a zero-width region would be empty, and Cheng et al.'s
  reference implementation likewise never erodes by less than one pixel.

Tolerance. Auto Seg-Loss scores boundaries at PASCAL VOC / Cityscapes resolution with a
tolerance of a few pixels, and Cheng et al. take d = 2% of the image diagonal (about 14
pixels at 512×512). The default here, ``DEFAULT_BOUNDARY_TOLERANCE = 2``, suits the
small images (~64-128 px) that a loss search trains on; pass ``tolerance`` to match a
benchmark at another resolution (tolerance 0: a boundary pixel must be matched exactly).

Implementation: all work is batched over images and classes as N×C×H×W one-hot bool
masks (predictions and targets stacked along the class axis), so one update is a
handful of tensor ops on the inputs' device and no Python loop runs over pixels or
classes. The pools above act on 0/1 maps, so they are computed as the equivalent
binary morphology (dilations by shifted ORs over the in-image window; see ``_dilate``),
which is exact and much cheaper than float pooling. A large batch is processed in
chunks of images so that a chunk's N*C*H*W stays under ``_MAX_CHUNK_ELEMENTS``. Counts
stay on the device as int64; ``compute()`` copies them to the CPU once.
"""
from __future__ import annotations

import torch

# Order for printing.
METRIC_NAMES = ("mIoU", "FWIoU", "mAcc", "aAcc", "BIoU", "BF1")

# Pixels; see the module docstring.
DEFAULT_BOUNDARY_TOLERANCE = 2

# Upper bound on N*C*H*W for one chunk's one-hot masks (C=200 at 512×512 fits 2 images).
_MAX_CHUNK_ELEMENTS = 2 ** 27

# Rows of ``SegmentationMeter.bf1_counts``.
_PRED_MATCHED, _PRED_BOUNDARY, _GT_MATCHED, _GT_BOUNDARY = range(4)


class SegmentationMeter:
    """Accumulates confusion matrix and boundary counts; compute() returns the metrics.

    State (int64, on the device of the first update, or ``device`` if given):

    * ``confusion``: C×C, ``confusion[t, p]`` = valid pixels with target t predicted p;
    * ``bf1_counts``: 4×C, rows |Pb ∩ dilate(Gb)|, |Pb|, |Gb ∩ dilate(Pb)|, |Gb|;
    * ``biou_counts``: 2×C, rows |Gd ∩ Pd|, |Gd ∪ Pd|.
    """

    def __init__(self, num_classes: int, ignore_index: int | None = 255,
                 tolerance: int = DEFAULT_BOUNDARY_TOLERANCE, device: torch.device | str | None = None):
        if int(num_classes) != num_classes or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        if int(tolerance) != tolerance or tolerance < 0:
            raise ValueError(f"tolerance must be an integer >= 0 (pixels), got {tolerance!r}")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.tolerance = int(tolerance)
        self.device = torch.device(device) if device is not None else None
        self.confusion: torch.Tensor | None = None
        self.bf1_counts: torch.Tensor | None = None
        self.biou_counts: torch.Tensor | None = None
        if self.device is not None:
            self.reset()

    def reset(self) -> None:
        """Forget everything seen (keeps the device)."""
        c, dev = self.num_classes, self.device
        if dev is None:
            self.confusion = self.bf1_counts = self.biou_counts = None
            return
        self.confusion = torch.zeros(c, c, dtype=torch.int64, device=dev)
        self.bf1_counts = torch.zeros(4, c, dtype=torch.int64, device=dev)
        self.biou_counts = torch.zeros(2, c, dtype=torch.int64, device=dev)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """pred, target: H×W or N×H×W integer class maps (same shape). target == ignore_index pixels are left out.

        A target value other than ``ignore_index`` outside [0, C), or a prediction outside
        [0, C) at a valid pixel, raises ``ValueError``.
        """
        if pred.shape != target.shape:
            raise ValueError(f"pred and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")
        if pred.dim() not in (2, 3):
            raise ValueError(f"expected H×W or N×H×W class maps, got shape {tuple(pred.shape)}")
        for name, t in (("pred", pred), ("target", target)):
            if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
                raise TypeError(f"{name} must be an integer class map, got dtype {t.dtype}")
        if self.device is None:
            self.device = target.device
            self.reset()
        pred = pred.to(self.device)
        target = target.to(self.device)
        if pred.dim() == 2:
            pred, target = pred.unsqueeze(0), target.unsqueeze(0)
        n, h, w = target.shape
        if n == 0 or h == 0 or w == 0:
            return
        # int64 so that C*t + p cannot overflow a narrow dtype (uint8 maps).
        pred, target = pred.long(), target.long()
        if self.ignore_index is None:
            valid = torch.ones_like(target, dtype=torch.bool)
        else:
            valid = target != self.ignore_index
        self._check_values(pred, target, valid)
        per_chunk = max(1, _MAX_CHUNK_ELEMENTS // (self.num_classes * h * w))
        for start in range(0, n, per_chunk):
            sl = slice(start, start + per_chunk)
            self._update_chunk(pred[sl], target[sl], valid[sl])

    def _check_values(self, pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> None:
        """Raise ValueError naming an out-of-range value (one device sync when all is well)."""
        c = self.num_classes
        bad_target = valid & ((target < 0) | (target >= c))
        bad_pred = valid & ((pred < 0) | (pred >= c))
        if not bool((bad_target | bad_pred).any()):
            return
        if bool(bad_target.any()):
            value = int(target[bad_target][0])
            raise ValueError(f"target value {value} is neither a class in [0, {c}) nor ignore_index "
                             f"({self.ignore_index})")
        value = int(pred[bad_pred][0])
        raise ValueError(f"pred value {value} is not a class in [0, {c})")

    def _update_chunk(self, pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> None:
        """pred, target: n×H×W int64 (in range where valid); valid: n×H×W bool."""
        c = self.num_classes
        # Confusion: invalid pixels go to an extra bin C*C that is dropped, rather than being
        # removed by boolean indexing (a data-dependent copy).
        index = torch.where(valid, target * c + pred, torch.full_like(target, c * c))
        self.confusion += torch.bincount(index.flatten(), minlength=c * c + 1)[: c * c].view(c, c)

        # One-hot masks, predictions in channels [0, C), targets in [C, 2C): n×2C×H×W, so
        # every morphological step below is one pass for both. Ignored pixels are 0 in both.
        classes = torch.arange(c, device=pred.device).view(1, c, 1, 1)
        valid4 = valid.unsqueeze(1)
        masks = torch.cat([(pred.unsqueeze(1) == classes) & valid4,
                           (target.unsqueeze(1) == classes) & valid4], 1)
        outside = ~masks  # where the mask is 0 (ignored pixels included)
        has_zero = _dilate(outside, 1)  # a 0 within the 3×3 in-image window

        # BF1. A 3×3 average pool with replicate padding differs from the pixel exactly when
        # the in-image 3×3 window holds both a 0 and a 1 (the pixel itself is in it).
        boundary = _dilate(masks, 1) & has_zero & valid4
        t = self.tolerance
        near = _dilate(boundary, t)  # = max pool (2t+1)², padding t
        pred_b, gt_b = boundary[:, :c], boundary[:, c:]
        pred_near, gt_near = near[:, :c], near[:, c:]
        dims = (0, 2, 3)
        self.bf1_counts += torch.stack([
            (pred_b & gt_near).sum(dims, dtype=torch.int64),
            pred_b.sum(dims, dtype=torch.int64),
            (gt_b & pred_near).sum(dims, dtype=torch.int64),
            gt_b.sum(dims, dtype=torch.int64),
        ])
        del boundary, near, pred_b, gt_b, pred_near, gt_near

        # BIoU. Erosion by a (2d+1)² min pool with replicate padding is 0 exactly where the
        # in-image window holds a 0, so mask AND NOT erode(mask) = mask AND dilate(NOT mask).
        d = max(t, 1)
        region = masks & (has_zero if d == 1 else _dilate(outside, d))  # 0 where ignored
        pred_r, gt_r = region[:, :c], region[:, c:]
        self.biou_counts += torch.stack([
            (pred_r & gt_r).sum(dims, dtype=torch.int64),
            (pred_r | gt_r).sum(dims, dtype=torch.int64),
        ])

    def compute(self) -> dict[str, float | None]:
        """{"mIoU", "FWIoU", "mAcc", "aAcc", "BIoU", "BF1"} as fractions in [0, 1].

        ``None`` where a metric is undefined (e.g. nothing seen, or no boundary for BF1 / BIoU).
        """
        if self.confusion is None:
            return {name: None for name in METRIC_NAMES}
        c = self.num_classes
        # One transfer for all the counts.
        flat = torch.cat([self.confusion.flatten(), self.bf1_counts.flatten(), self.biou_counts.flatten()]).cpu()
        flat = flat.double()
        confusion = flat[: c * c].view(c, c)
        bf1 = flat[c * c: c * c + 4 * c].view(4, c)
        biou = flat[c * c + 4 * c:].view(2, c)

        tp = confusion.diagonal()
        gt_count = confusion.sum(1)
        pred_count = confusion.sum(0)
        total = gt_count.sum()
        union = gt_count + pred_count - tp
        iou = tp / union.clamp(min=1)
        out: dict[str, float | None] = {}
        out["mIoU"] = _mean_where(iou, union > 0)
        out["FWIoU"] = float((gt_count / total * iou).sum()) if total > 0 else None
        out["mAcc"] = _mean_where(tp / gt_count.clamp(min=1), gt_count > 0)
        out["aAcc"] = float(tp.sum() / total) if total > 0 else None

        out["BIoU"] = _mean_where(biou[0] / biou[1].clamp(min=1), biou[1] > 0)

        precision = bf1[_PRED_MATCHED] / bf1[_PRED_BOUNDARY].clamp(min=1)
        recall = bf1[_GT_MATCHED] / bf1[_GT_BOUNDARY].clamp(min=1)
        f1 = 2 * precision * recall / (precision + recall).clamp(min=1e-300)
        out["BF1"] = _mean_where(f1, (bf1[_PRED_BOUNDARY] + bf1[_GT_BOUNDARY]) > 0)
        return {name: out[name] for name in METRIC_NAMES}


def _mean_where(values: torch.Tensor, keep: torch.Tensor) -> float | None:
    """Mean of ``values[keep]`` (C, float64 on the CPU), ``None`` if nothing is kept."""
    return float(values[keep].mean()) if bool(keep.any()) else None


def _dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Binary dilation of ``mask`` (bool, ...×H×W) by a (2·radius+1)² square, inside the image.

    out[i, j] = any(mask[a, b]) over in-image (a, b) with |a - i| <= radius and |b - j| <= radius,
    i.e. ``max_pool2d(mask, 2·radius+1, stride=1, padding=radius)``. Done separably as shifted
    in-place ORs on bool (2·radius per axis): exact, a quarter of float32's memory, and on the
    CPU much faster than ``max_pool2d``, whose float pooling would dominate an update.
    """
    out = mask
    for dim in (-2, -1):
        size = mask.shape[dim]
        src, out = out, out.clone()
        for shift in range(1, min(radius, size - 1) + 1):
            out.narrow(dim, shift, size - shift).logical_or_(src.narrow(dim, 0, size - shift))
            out.narrow(dim, 0, size - shift).logical_or_(src.narrow(dim, shift, size - shift))
    return out


def segmentation_metrics(pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int | None = 255,
                         tolerance: int = DEFAULT_BOUNDARY_TOLERANCE) -> dict[str, float | None]:
    """The metrics of one batch: pred, target H×W or N×H×W class maps (see ``SegmentationMeter``)."""
    meter = SegmentationMeter(num_classes, ignore_index=ignore_index, tolerance=tolerance)
    meter.update(pred, target)
    return meter.compute()
