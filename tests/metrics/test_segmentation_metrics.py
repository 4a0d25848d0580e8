"""Segmentation metrics on hand-made maps whose values are known, against slow references, and on CUDA."""
import itertools

import numpy as np
import pytest
import torch

from gp_loss.metrics import segmentation as seg
from gp_loss.metrics.segmentation import (DEFAULT_BOUNDARY_TOLERANCE, METRIC_NAMES, SegmentationMeter,
                                          segmentation_metrics)

IGNORE = 255


def _split_maps(gt_cols: int, pred_cols: int) -> tuple[torch.Tensor, torch.Tensor]:
    """6×6 maps: class 0 in the first ``*_cols`` columns, class 1 to their right."""
    cols = torch.arange(6).expand(6, 6)
    return (cols >= pred_cols).long(), (cols >= gt_cols).long()


def _square(top: int, left: int, size: int = 3, hw: int = 6) -> torch.Tensor:
    """hw×hw map of class 0 with a size×size square of class 1 at (top, left)."""
    m = torch.zeros(hw, hw, dtype=torch.long)
    m[top:top + size, left:left + size] = 1
    return m


def _random_maps(seed: int, shape, num_classes: int, ignore_fraction: float = 0.15, blocky: bool = True):
    """Random pred/target maps; ``blocky`` makes regions (2×2 blocks) so boundaries are not everywhere."""
    g = torch.Generator().manual_seed(seed)
    n, h, w = shape
    if blocky:
        small = (n, (h + 1) // 2, (w + 1) // 2)
        target = torch.randint(num_classes, small, generator=g).repeat_interleave(2, 1).repeat_interleave(2, 2)
        target = target[:, :h, :w].contiguous()
    else:
        target = torch.randint(num_classes, shape, generator=g)
    # Prediction: the target with a share of pixels changed.
    noise = torch.randint(num_classes, shape, generator=g)
    pred = torch.where(torch.rand(shape, generator=g) < 0.25, noise, target)
    target = torch.where(torch.rand(shape, generator=g) < ignore_fraction, torch.full_like(target, IGNORE), target)
    return pred, target


# ---------------------------------------------------------------- hand-computed cases


def test_one_column_shift_hand_computed_region_metrics():
    # Target: class 0 in columns 0-2, class 1 in 3-5. Prediction: border one column left.
    pred, target = _split_maps(gt_cols=3, pred_cols=2)
    m = segmentation_metrics(pred, target, num_classes=2, tolerance=1)
    # Class 0: TP 12, FN 6, FP 0 -> IoU 2/3, recall 2/3. Class 1: TP 18, FP 6 -> IoU 3/4, recall 1.
    assert m["mIoU"] == pytest.approx((2 / 3 + 3 / 4) / 2)
    assert m["FWIoU"] == pytest.approx(0.5 * 2 / 3 + 0.5 * 3 / 4)  # both classes 18/36 of the pixels
    assert m["mAcc"] == pytest.approx((2 / 3 + 1) / 2)
    assert m["aAcc"] == pytest.approx(30 / 36)
    assert list(m) == list(METRIC_NAMES)


def test_one_column_shift_hand_computed_boundary_metrics():
    pred, target = _split_maps(gt_cols=3, pred_cols=2)
    # Boundaries (both classes, the masks being complements): target columns 2-3, prediction 1-2.
    # Tolerance 0: 6 of 12 boundary pixels match either way -> P = R = F1 = 1/2.
    assert segmentation_metrics(pred, target, 2, tolerance=0)["BF1"] == pytest.approx(0.5)
    # Tolerance 1: every boundary pixel has one of the other map within a column.
    assert segmentation_metrics(pred, target, 2, tolerance=1)["BF1"] == pytest.approx(1.0)
    # BIoU, d = 1: target class-0 region column 2, predicted column 1 -> disjoint (class 1 likewise: 3 vs 2).
    assert segmentation_metrics(pred, target, 2, tolerance=1)["BIoU"] == pytest.approx(0.0)
    # d = 2: class 0 regions columns 1-2 vs 0-1, class 1 columns 3-4 vs 2-3 -> 6 / 18 each.
    assert segmentation_metrics(pred, target, 2, tolerance=2)["BIoU"] == pytest.approx(1 / 3)
    # Tolerance 0 still measures BIoU one pixel wide (d = max(tolerance, 1)).
    assert segmentation_metrics(pred, target, 2, tolerance=0)["BIoU"] == pytest.approx(0.0)


def test_one_pixel_shift_of_a_square():
    target = _square(1, 1)
    pred = _square(1, 2)  # one pixel to the right
    for tolerance in (1, 2, 3):
        assert segmentation_metrics(pred, target, 2, tolerance=tolerance)["BF1"] == pytest.approx(1.0)
    # Tolerance 0: each boundary is the 5×5 ring around the square plus its inner ring (24 pixels,
    # the centre excepted); they share columns 1-4 less the two centres -> 18 / 24.
    bf1 = segmentation_metrics(pred, target, 2, tolerance=0)["BF1"]
    assert bf1 < 1.0 and bf1 == pytest.approx(0.75)


def test_square_hand_computed_biou():
    target = _square(1, 1)
    pred = _square(1, 2)
    # d = 1. Class 1: each square's 8 ring pixels (its centre has no 0 within one pixel); they
    # share columns 2-3 of rows 1 and 3 -> 4 / 12.
    t_ring = {(r, c) for r in range(1, 4) for c in range(1, 4)} - {(2, 2)}
    p_ring = {(r, c) for r in range(1, 4) for c in range(2, 5)} - {(2, 3)}
    assert (len(t_ring & p_ring), len(t_ring | p_ring)) == (4, 12)
    # Class 0: background pixels with a square pixel within one pixel, the 5×5 ring around each
    # square (16 each); they share rows 0 and 4, columns 1-4 -> 8 / 24.
    t_out = {(r, c) for r in range(0, 5) for c in range(0, 5)} - {(r, c) for r in range(1, 4) for c in range(1, 4)}
    p_out = {(r, c) for r in range(0, 5) for c in range(1, 6)} - {(r, c) for r in range(1, 4) for c in range(2, 5)}
    assert (len(t_out & p_out), len(t_out | p_out)) == (8, 24)
    meter = SegmentationMeter(2, tolerance=1)
    meter.update(pred, target)
    assert meter.biou_counts.tolist() == [[8, 4], [24, 12]]
    assert meter.compute()["BIoU"] == pytest.approx(1 / 3)


def test_perfect_prediction_scores_one_everywhere():
    _, target = _random_maps(0, (3, 16, 20), num_classes=5)
    pred = torch.where(target == IGNORE, torch.zeros_like(target), target)
    m = segmentation_metrics(pred, target, 5)
    assert all(m[name] == pytest.approx(1.0) for name in METRIC_NAMES), m
    assert segmentation_metrics(pred, target, 5, tolerance=0) == pytest.approx({k: 1.0 for k in METRIC_NAMES})


def test_a_uniform_image_has_no_boundary_and_nothing_seen_is_undefined():
    target = torch.zeros(6, 6, dtype=torch.long)
    m = segmentation_metrics(target, target, 3)
    assert m["mIoU"] == 1.0 and m["aAcc"] == 1.0 and m["FWIoU"] == 1.0 and m["mAcc"] == 1.0
    # The image border is not a boundary (replicate padding), so there is none to score.
    assert m["BF1"] is None and m["BIoU"] is None
    assert SegmentationMeter(3).compute() == {name: None for name in METRIC_NAMES}
    all_ignored = torch.full((6, 6), IGNORE)
    assert segmentation_metrics(target, all_ignored, 3) == {name: None for name in METRIC_NAMES}


def test_a_class_absent_from_target_and_prediction_is_left_out_of_the_means():
    pred, target = _split_maps(gt_cols=3, pred_cols=2)
    two = segmentation_metrics(pred, target, 2)
    five = segmentation_metrics(pred, target, 5)  # classes 2-4 never appear
    assert five == pytest.approx(two)
    # A class only predicted counts in mIoU (IoU 0) but not in mAcc (absent from the target).
    pred2 = pred.clone()
    pred2[0, 5] = 2
    m = segmentation_metrics(pred2, target, 3, tolerance=1)
    iou0, iou1, iou2 = 12 / 18, 17 / 24, 0.0  # class 1: TP 17, FP 6, FN 1
    assert m["mIoU"] == pytest.approx((iou0 + iou1 + iou2) / 3)
    assert m["mAcc"] == pytest.approx((12 / 18 + 17 / 18) / 2)
    # Its lone predicted pixel has a boundary with no ground truth near: F1 0 for class 2.
    meter = SegmentationMeter(3, tolerance=1)
    meter.update(pred2, target)
    assert meter.bf1_counts[:, 2].tolist()[1] > 0 and meter.bf1_counts[:, 2].tolist()[3] == 0


def test_a_class_with_ground_truth_boundary_but_none_predicted_scores_zero():
    target = _square(1, 1)
    pred = torch.zeros_like(target)  # the square is missed
    m = segmentation_metrics(pred, target, 2, tolerance=1)
    # Neither class has a predicted boundary: both F1 = 0.
    assert m["BF1"] == 0.0 and m["BIoU"] == 0.0
    assert m["mIoU"] == pytest.approx((27 / 36 + 0) / 2)


def test_a_class_with_only_predicted_boundary_scores_zero():
    # The reverse: a square predicted on a uniform target. No ground-truth boundary at all, but
    # both classes have a predicted one, so both count, with F1 = 0 (not "undefined").
    target = torch.zeros(6, 6, dtype=torch.long)
    m = segmentation_metrics(_square(1, 1), target, 2, tolerance=1)
    assert m["BF1"] == 0.0 and m["BIoU"] == 0.0
    assert m["mIoU"] == pytest.approx((27 / 36 + 0) / 2) and m["mAcc"] == pytest.approx(27 / 36)


def test_another_ignore_index_works_alike():
    pred, target = _random_maps(6, (2, 9, 10), num_classes=3)
    reference = segmentation_metrics(pred, target, 3)
    assert segmentation_metrics(pred, torch.where(target == IGNORE, -1, target), 3, ignore_index=-1) == reference
    # An ignore_index inside [0, C) removes that class entirely.
    shifted = torch.where(target == IGNORE, 0, target + 1)
    assert segmentation_metrics(torch.where(target == IGNORE, 0, pred + 1), shifted, 4, ignore_index=0) == reference


def test_ignored_pixels_bound_classes_alike_in_target_and_prediction():
    # Class 0 everywhere with an ignored 2×2 hole: the hole's rim is a boundary of class 0 in
    # target and prediction alike, so a perfect prediction scores 1, not "no boundary".
    target = torch.zeros(6, 6, dtype=torch.long)
    target[2:4, 2:4] = IGNORE
    pred = torch.zeros_like(target)
    meter = SegmentationMeter(2, tolerance=0)
    meter.update(pred, target)
    assert meter.bf1_counts[:, 0].tolist() == [12, 12, 12, 12]  # the 4×4 ring around the hole
    assert meter.confusion.tolist() == [[32, 0], [0, 0]]
    assert meter.compute() == pytest.approx({k: 1.0 for k in METRIC_NAMES})


def test_predictions_under_ignored_pixels_change_nothing():
    pred, target = _random_maps(1, (2, 12, 14), num_classes=4, ignore_fraction=0.3)
    ignored = target == IGNORE
    g = torch.Generator().manual_seed(5)
    other = torch.where(ignored, torch.randint(4, pred.shape, generator=g), pred)
    assert not torch.equal(other, pred)
    for tolerance in (0, 1, 3):
        a, b = SegmentationMeter(4, tolerance=tolerance), SegmentationMeter(4, tolerance=tolerance)
        a.update(pred, target)
        b.update(other, target)
        assert torch.equal(a.confusion, b.confusion)
        assert torch.equal(a.bf1_counts, b.bf1_counts) and torch.equal(a.biou_counts, b.biou_counts)
        assert a.compute() == b.compute()
    # Even values that are no class at all, under ignored pixels.
    junk = torch.where(ignored, torch.full_like(pred, 99), pred)
    assert segmentation_metrics(junk, target, 4) == segmentation_metrics(pred, target, 4)


# ---------------------------------------------------------------- accumulation


def _counts(meter: SegmentationMeter):
    return meter.confusion.clone(), meter.bf1_counts.clone(), meter.biou_counts.clone()


def test_two_updates_equal_one_batched_update():
    pred, target = _random_maps(2, (2, 10, 12), num_classes=3)
    separate, batched = SegmentationMeter(3), SegmentationMeter(3)
    separate.update(pred[0], target[0])
    separate.update(pred[1], target[1])
    batched.update(pred, target)
    for a, b in zip(_counts(separate), _counts(batched)):
        assert torch.equal(a, b)
    assert separate.compute() == batched.compute()
    # Accumulated counts are not the mean of per-image metrics.
    per_image = [segmentation_metrics(pred[i], target[i], 3)["mIoU"] for i in range(2)]
    assert batched.compute()["mIoU"] != pytest.approx(sum(per_image) / 2)
    batched.reset()
    assert batched.compute()["aAcc"] is None and int(batched.confusion.sum()) == 0


def test_chunked_batches_give_the_same_counts(monkeypatch):
    pred, target = _random_maps(3, (5, 9, 11), num_classes=4)
    whole = SegmentationMeter(4)
    whole.update(pred, target)
    monkeypatch.setattr(seg, "_MAX_CHUNK_ELEMENTS", 2 * 4 * 9 * 11)  # two images a chunk: 3 chunks
    chunked = SegmentationMeter(4)
    chunked.update(pred, target)
    for a, b in zip(_counts(whole), _counts(chunked)):
        assert torch.equal(a, b)


def test_narrow_integer_dtypes_give_the_same_result():
    pred, target = _random_maps(4, (2, 8, 8), num_classes=6)
    wide = segmentation_metrics(pred, target, 6)
    assert segmentation_metrics(pred.to(torch.uint8), target.to(torch.uint8), 6) == wide
    assert segmentation_metrics(pred.int(), target.int(), 6) == wide


# ---------------------------------------------------------------- independent references


def _numpy_region_metrics(pred: np.ndarray, target: np.ndarray, c: int) -> dict:
    valid = target != IGNORE
    tp = np.array([np.sum((target == k) & (pred == k) & valid) for k in range(c)], float)
    gt = np.array([np.sum((target == k) & valid) for k in range(c)], float)
    pr = np.array([np.sum((pred == k) & valid) for k in range(c)], float)
    union = gt + pr - tp
    iou = np.divide(tp, union, out=np.zeros(c), where=union > 0)
    acc = np.divide(tp, gt, out=np.zeros(c), where=gt > 0)
    return {"mIoU": iou[union > 0].mean(), "FWIoU": float((gt / gt.sum() * iou).sum()),
            "mAcc": acc[gt > 0].mean(), "aAcc": tp.sum() / valid.sum()}


@pytest.mark.parametrize("seed", range(4))
def test_region_metrics_match_a_numpy_reference(seed):
    c = 2 + seed * 3
    pred, target = _random_maps(10 + seed, (3, 13, 17), num_classes=c, blocky=seed % 2 == 0)
    m = segmentation_metrics(pred, target, c)
    ref = _numpy_region_metrics(pred.numpy(), target.numpy(), c)
    for name, value in ref.items():
        assert m[name] == pytest.approx(value, abs=1e-12), name


def _slow_boundary_metrics(pred, target, c: int, tolerance: int) -> dict:
    """BF1 and BIoU pixel by pixel, window by window, straight from their definitions."""
    pred, target = pred.tolist(), target.tolist()
    counts = {k: [0] * 6 for k in range(c)}  # |Pb∩near Gb|, |Pb|, |Gb∩near Pb|, |Gb|, |Gd∩Pd|, |Gd∪Pd|
    d = max(tolerance, 1)
    for p_img, t_img in zip(pred, target):
        h, w = len(t_img), len(t_img[0])
        valid = [[t_img[i][j] != IGNORE for j in range(w)] for i in range(h)]

        def clamp(i, j):  # replicate padding
            return min(max(i, 0), h - 1), min(max(j, 0), w - 1)

        def window(i, j, r):  # with replicate padding: positions clamped into the image
            return [clamp(a, b) for a in range(i - r, i + r + 1) for b in range(j - r, j + r + 1)]

        def in_image(i, j, r):  # without padding (max pooling's padding never wins)
            return [(a, b) for a in range(i - r, i + r + 1) for b in range(j - r, j + r + 1)
                    if 0 <= a < h and 0 <= b < w]

        for k in range(c):
            masks = [[[int(img[i][j] == k and valid[i][j]) for j in range(w)] for i in range(h)]
                     for img in (p_img, t_img)]
            bounds = []
            for m in masks:
                # 3×3 average differs from the pixel <=> the window's sum differs from 9 × the pixel.
                bounds.append([[valid[i][j] and sum(m[a][b] for a, b in window(i, j, 1)) != 9 * m[i][j]
                                for j in range(w)] for i in range(h)])
            pb, gb = bounds
            for i, j in itertools.product(range(h), range(w)):
                if pb[i][j]:
                    counts[k][1] += 1
                    counts[k][0] += any(gb[a][b] for a, b in in_image(i, j, tolerance))
                if gb[i][j]:
                    counts[k][3] += 1
                    counts[k][2] += any(pb[a][b] for a, b in in_image(i, j, tolerance))
                # Boundary region: a mask pixel whose eroded value (min over the window) is 0.
                pd, gd = (m[i][j] == 1 and min(m[a][b] for a, b in window(i, j, d)) == 0 for m in masks)
                counts[k][4] += pd and gd
                counts[k][5] += pd or gd
    f1s, ious = [], []
    for k in range(c):
        pm, pn, gm, gn, inter, union = counts[k]
        if pn + gn:
            p = pm / pn if pn else 0.0
            r = gm / gn if gn else 0.0
            f1s.append(2 * p * r / (p + r) if p + r else 0.0)
        if union:
            ious.append(inter / union)
    return {"BF1": sum(f1s) / len(f1s) if f1s else None, "BIoU": sum(ious) / len(ious) if ious else None,
            "counts": counts}


@pytest.mark.parametrize("tolerance", [0, 1, 2, 4])
@pytest.mark.parametrize("seed", [0, 1])
def test_boundary_metrics_match_a_slow_pixel_loop_reference(seed, tolerance):
    c = 3 + seed
    pred, target = _random_maps(20 + seed, (2, 7, 9), num_classes=c, ignore_fraction=0.1, blocky=seed == 0)
    meter = SegmentationMeter(c, tolerance=tolerance)
    meter.update(pred, target)
    ref = _slow_boundary_metrics(pred, target, c, tolerance)
    for k in range(c):
        assert meter.bf1_counts[:, k].tolist() == ref["counts"][k][:4], k
        assert meter.biou_counts[:, k].tolist() == ref["counts"][k][4:], k
    m = meter.compute()
    assert m["BF1"] == pytest.approx(ref["BF1"]) and m["BIoU"] == pytest.approx(ref["BIoU"])


# ---------------------------------------------------------------- errors and devices


def test_an_invalid_target_value_raises_and_names_it():
    pred, target = _split_maps(3, 2)
    target[2, 2] = 7
    with pytest.raises(ValueError, match=r"\b7\b"):
        segmentation_metrics(pred, target, 2)
    target[2, 2] = -1
    with pytest.raises(ValueError, match="-1"):
        segmentation_metrics(pred, target, 2)
    pred, target = _split_maps(3, 2)
    pred[0, 0] = 4
    with pytest.raises(ValueError, match=r"pred value 4"):
        segmentation_metrics(pred, target, 2)


def test_bad_arguments_raise():
    with pytest.raises(ValueError):
        SegmentationMeter(2, tolerance=-1)
    with pytest.raises(ValueError):
        SegmentationMeter(0)
    with pytest.raises(ValueError, match="shapes"):
        segmentation_metrics(torch.zeros(4, 4, dtype=torch.long), torch.zeros(4, 5, dtype=torch.long), 2)
    with pytest.raises(TypeError):
        segmentation_metrics(torch.zeros(4, 4), torch.zeros(4, 4, dtype=torch.long), 2)
    assert DEFAULT_BOUNDARY_TOLERANCE == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
def test_cuda_counts_stay_on_the_device_and_match_cpu():
    pred, target = _random_maps(30, (3, 40, 48), num_classes=7)
    cpu = SegmentationMeter(7)
    cpu.update(pred, target)
    gpu = SegmentationMeter(7)
    gpu.update(pred[:1].cuda(), target[:1].cuda())
    gpu.update(pred[1:].cuda(), target[1:])  # a CPU target is moved to the meter's device
    assert gpu.confusion.is_cuda and gpu.bf1_counts.is_cuda and gpu.biou_counts.is_cuda
    assert gpu.confusion.dtype == torch.int64
    for a, b in zip(_counts(cpu), _counts(gpu)):
        assert torch.equal(a, b.cpu())
    assert gpu.compute() == cpu.compute()
