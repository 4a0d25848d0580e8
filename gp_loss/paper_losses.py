"""Handcrafted and searched losses of the papers, written in the loss language.

One table for every place that needs a paper's loss by name: the tasks'
baselines (:class:`~gp_loss.tasks.base.TaskInfo`), ``runs/paper_losses.py``
and the tests. Focal losses use gamma = 2; the sigmoid focal loss uses
alpha = 0.25 as in RetinaNet (Lin et al., ICCV 2017).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PaperLoss:
    kind: str
    formula: str
    description: str


_P = "sigmoid(x)"
_WY = "mul(w, y)"
_SEG_CE = "neg(mul(y, log(yhat)))"
_SEG_FOCAL = "neg(mul(mul(y, square(add(1, neg(yhat)))), log(yhat)))"
# Per class c: dice_c = 2 sum(p_c y_c) / (sum(p_c) + sum(y_c)) (means over N, H, W: their ratio is the
# sums'); mean_c averages 1 - dice_c over the classes, and mul(y, .) keeps it once per labelled pixel.
_TWICE_PY = "add(mean_nhw(mul(yhat, y)), mean_nhw(mul(yhat, y)))"
_SEG_DICE = f"mul(y, mean_c(add(1, neg(mul({_TWICE_PY}, inv(add(mean_nhw(yhat), mean_nhw(y))))))))"

PAPER_LOSSES: dict[str, PaperLoss] = {
    "ce": PaperLoss("cls", "neg(dot(y, log(softmax(x))))", "cross-entropy"),
    "cei": PaperLoss("cls", "neg(dot(mul(w, y), log(softmax(x))))",
                     "IoU-weighted cross-entropy (CSE-Autoloss starting point)"),
    "focal": PaperLoss(
        "cls", "neg(dot(mul(y, mul(sub(1, softmax(x)), sub(1, softmax(x)))), log(softmax(x))))",
        "softmax focal loss, gamma 2"),
    "label_smoothing_ce": PaperLoss(
        "cls", "neg(dot(add(mul(0.9, y), 0.01), log(softmax(x))))",
        "cross-entropy with label smoothing 0.1 over 10 classes (0.1/10 = 0.01 per class)"),
    # Generalized Cross Entropy (Zhang & Sabuncu, NeurIPS 2018), robust to noisy labels: L_q = (1 - p_y^q) / q,
    # here q = 1/2 without the constant factor 1/q, which rescales the gradient only.
    "gce": PaperLoss("cls", "sub(1, sqrt(dot(y, softmax(x))))",
                     "generalized cross-entropy, q = 1/2: 1 - sqrt(p_y) (robust to label noise)"),
    "cse_autoloss_a_cls": PaperLoss(
        "cls", "neg(dot(mul(add(1, sin(w)), y), log(softmax(x))))", "CSE-Autoloss-A classification"),
    "bce": PaperLoss(
        "bcls", f"neg(add(mul(y, log({_P})), mul(sub(1, y), log(sub(1, {_P})))))",
        "binary cross-entropy"),
    "sigmoid_focal": PaperLoss(
        "bcls",
        f"neg(add(mul(mul(0.25, y), mul(mul(sub(1, {_P}), sub(1, {_P})), log({_P}))), "
        f"mul(mul(0.75, sub(1, y)), mul(mul({_P}, {_P}), log(sub(1, {_P}))))))",
        "sigmoid focal loss, alpha 0.25, gamma 2 (RetinaNet)"),
    "cse_autoloss_b_cls": PaperLoss(
        "bcls",
        f"neg(add(mul(mul({_WY}, add(1, erf(sigmoid(sub(1, y))))), log({_P})), "
        f"mul(mul(sub(gd(x), {_WY}), sub({_P}, {_WY})), log(sub(1, {_P})))))",
        "CSE-Autoloss-B classification"),
    "iou": PaperLoss("reg", "sub(1, div(i, u))", "IoU loss"),
    "giou": PaperLoss("reg", "add(sub(1, div(i, u)), div(sub(e, u), e))", "GIoU loss"),
    "neg_log_iou": PaperLoss("reg", "neg(log(div(i, u)))", "-log IoU (UnitBox)"),
    "cse_autoloss_a_reg": PaperLoss(
        "reg", "add(sub(1, div(i, u)), sub(1, div(add(i, 2), e)))", "CSE-Autoloss-A regression"),
    "cse_autoloss_b_reg": PaperLoss(
        "reg",
        "div(add(add(add(add(mul(3, mul(e, u)), mul(12, e)), mul(3, i)), mul(3, u)), 18), "
        "add(add(add(add(add(neg(mul(3, mul(e, u))), mul(i, u)), mul(u, u)), neg(mul(15, e))), "
        "mul(5, i)), mul(5, u)))",
        "CSE-Autoloss-B regression"),
    "zero_ce": PaperLoss("zero", "add(neg(mul(y, yhat)), mul(y, log(mean_c(exp(yhat)))))",
                         "per-pixel cross-entropy minus ln C where yhat holds logits (gp-loss's tasks pass "
                         "probabilities: seg_ce is their cross-entropy)"),
    # Segmentation losses on softmax probabilities ``yhat`` and one-hot ``y`` (N×C×H×W), reduced by
    # sum / (N*H*W): a mean over pixels. The AutoLoss-Zero set has no constant but 1, so 2a is add(a, a).
    "seg_ce": PaperLoss("zero", _SEG_CE, "per-pixel cross-entropy"),
    "seg_focal": PaperLoss("zero", _SEG_FOCAL, "per-pixel softmax focal loss, gamma 2"),
    "seg_dice": PaperLoss("zero", _SEG_DICE,
                          "soft Dice loss: 1 - the mean over classes of 2 sum(p y) / (sum(p) + sum(y)), "
                          "sums over the batch's pixels"),
    "seg_ce_dice": PaperLoss("zero", f"add({_SEG_CE}, {_SEG_DICE})", "cross-entropy + soft Dice"),
    # Pose (SimpleBaseline, Xiao et al., ECCV 2018): predicted heatmaps yhat, Gaussian targets y and the
    # keypoints' visibility weights w (N×K×H×W); the squared error of the labelled keypoints' heatmaps.
    "heatmap_mse": PaperLoss("heat", "mul(w, square(add(yhat, neg(y))))",
                             "mean squared error of the labelled keypoints' heatmaps"),
}
