"""Helpers shared by the detectors' searchable heads: branch compilation, branch inputs, normalisers.

A detector declares its loss branches as a layout ``{branch name: kind name}``
(FCOS and RetinaNet: ``cls``/``bcls`` + ``reg``/``reg``; Faster R-CNN: four).
:func:`compile_branches` checks a genome against that layout and compiles each
branch to its raw (unreduced) output; the heads then build the kind's inputs
with :func:`bcls_inputs`, :func:`cls_inputs` and :func:`reg_inputs` and reduce
the raw output with the detector's own normalisation (:func:`normalised_sum`,
:func:`per_image_mean`), never with the kind's default reduction: the Focal and
GIoU formulas then reproduce torchvision's loss values.

Everything here is vectorised over rows (anchors, locations, RoIs) and never
masks non-finite values: a NaN in a branch's output reaches its loss term, and
the training loop stops on it.

Parameterized AP Loss (:mod:`gp_loss.pap`) replaces a head's branches by one ranking loss:
:class:`PAPSettings` holds its parameters and options, :func:`paired_giou` the positives' box
quality it ranks with.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch
from torch import Tensor

from gp_loss.errors import GpLossError
from gp_loss.language.compile import CompiledTree, compile_tree
from gp_loss.language.genome import Genome
from gp_loss.pap.loss import DEFAULT_TOP_K, pap_loss
from gp_loss.pap.substitutions import PAPParameters
from gp_loss.probes.boxes import paired_areas

# The smallest weight a positive carries (the ``cls`` kind's definition: w >= 1e-7), so that a
# positive whose predicted box misses its ground truth is still told apart from background (w = 0
# for ``bcls``).
MIN_IOU_WEIGHT = 1e-7

Layout = Mapping[str, str]  # branch name -> kind name, in the detector's order


def describe_layout(layout: Layout) -> str:
    """``"cls (bcls), reg (reg)"``: the branches a detector expects, for error messages."""
    return ", ".join(f"{name} ({kind})" for name, kind in layout.items())


def compile_branches(genome: Genome | None, layout: Layout, detector: str) -> dict[str, CompiledTree] | None:
    """Each branch of ``genome`` compiled to its raw output, after checking it fits ``layout``.

    Args:
        genome: the loss genome, or ``None`` for the detector's own (torchvision's) losses.
        layout: the branches the detector expects, name -> kind name.
        detector: the detector's name, for the error message.

    Returns:
        ``{branch name: CompiledTree}`` (every branch of ``layout``), or ``None`` when ``genome`` is.

    Raises:
        GpLossError: one line naming the expected branches, when a branch is missing, extra or of
            another kind.
    """
    if genome is None:
        return None
    if not isinstance(genome, Genome):
        raise GpLossError(f"{detector}: expected a Genome or None, got {type(genome).__name__}")
    got = {b.name: b.kind.name for b in genome}
    if got != dict(layout):
        given = ", ".join(f"{n} ({k})" for n, k in got.items())
        raise GpLossError(
            f"{detector} expects the loss branches {describe_layout(layout)}; the genome has {given}")
    return {b.name: compile_tree(b.kind, b.tree) for b in genome}


def paired_iou(pred: Tensor, target: Tensor) -> Tensor:
    """Detached IoU of box pairs: row k of ``pred`` (P×4, xyxy) with row k of ``target`` (P×4).

    Computed from :func:`~gp_loss.probes.boxes.paired_areas` (so it is the ``i / u`` a ``reg``
    branch sees) on detached boxes: the IoU weight ``w`` carries no gradient.

    Returns:
        P values in [0, 1].
    """
    i, u, _ = paired_areas(pred.detach().float(), target.detach().float())
    return i / u


def bcls_inputs(logits: Tensor, fg_rows: Tensor, fg_classes: Tensor, fg_iou: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Inputs ``(x, y, w)`` of a ``bcls`` branch (sigmoid classification, one logit per class).

    Args:
        logits: M×C logits (one row per location/anchor, no background column).
        fg_rows: F row indices of the foreground rows.
        fg_classes: F class indices (0..C-1) of those rows' ground truth.
        fg_iou: F detached IoUs of those rows' decoded boxes with their ground truth.

    Returns:
        ``x`` M×C float32 logits; ``y`` M×C binary one-hot (an all-zero row for background);
        ``w`` M×C: the IoU (at least :data:`MIN_IOU_WEIGHT`) at the target class, 0 elsewhere.
    """
    x = logits.float()  # the operators are written for fp32 (under autocast logits may be bf16)
    y = torch.zeros_like(x)
    y[fg_rows, fg_classes] = 1.0
    w = torch.zeros_like(x)
    w[fg_rows, fg_classes] = fg_iou.to(x.dtype).clamp(min=MIN_IOU_WEIGHT)
    return x, y, w


def cls_inputs(logits: Tensor, labels: Tensor, fg_iou: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Inputs ``(x, y, w)`` of a ``cls`` branch (softmax over K classes, the LAST one background).

    Args:
        logits: M×K logits, background in column K-1 (the kind's convention).
        labels: M class indices in 0..K-1, K-1 for background.
        fg_iou: M detached IoUs of the rows' decoded boxes with their ground truth (read at the
            foreground rows only).

    Returns:
        ``x`` M×K float32; ``y`` M×K one-hot; ``w`` M×K: per row the IoU (at least
        :data:`MIN_IOU_WEIGHT`) for foreground, 1 for background, the same over all classes.
    """
    x = logits.float()
    k = x.shape[1]
    y = torch.nn.functional.one_hot(labels, k).to(x.dtype)
    background = labels == k - 1
    w = torch.where(background, torch.ones_like(fg_iou, dtype=x.dtype), fg_iou.to(x.dtype).clamp(min=MIN_IOU_WEIGHT))
    return x, y, w[:, None].expand(-1, k)


def reg_inputs(pred_boxes: Tensor, target_boxes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Inputs ``(i, u, e)`` of a ``reg`` branch from P decoded predicted boxes and their targets.

    Args:
        pred_boxes: P×4 decoded predicted boxes (x1, y1, x2, y2), differentiable.
        target_boxes: P×4 matched ground-truth boxes.

    Returns:
        ``i`` intersection, ``u`` union + 1e-7, ``e`` enclosing-box area + 1e-7, each P float32.
    """
    return paired_areas(pred_boxes.float(), target_boxes.float())


def row_sums(o: Tensor, rows: int) -> Tensor:
    """A branch's raw output summed over everything but its rows.

    Args:
        o: the raw output: M×C, M×1 (per-row formulas) or M (``reg``); anything that broadcasts to
            ``rows`` leading rows.
        rows: M.

    Returns:
        M values.
    """
    if o.dim() == 0 or o.shape[0] != rows:  # a formula whose output broadcasts over the rows
        o = o.expand(rows, *o.shape[1:]) if o.dim() else o.expand(rows)
    return o if o.dim() == 1 else o.flatten(1).sum(dim=1)  # (flatten, not reshape: M may be 0)


def normalised_sum(o: Tensor, count: int | Tensor) -> Tensor:
    """``o.sum() / max(1, count)``: FCOS's (per foreground location) and Faster R-CNN's (per sample).

    Args:
        o: a branch's raw output (any shape).
        count: the normaliser (number of foreground locations, or of sampled anchors/RoIs).
    """
    if isinstance(count, Tensor):
        return o.sum() / count.clamp(min=1).to(o.dtype)
    return o.sum() / max(1, count)


def per_image_mean(row_values: Tensor, row_image: Tensor, image_counts: Tensor) -> Tensor:
    """RetinaNet's normalisation: per image the sum over its rows / its foreground count, then the mean.

    Args:
        row_values: M per-row losses (:func:`row_sums`).
        row_image: M image indices (0..N-1) of the rows.
        image_counts: N foreground counts (integers).

    Returns:
        A scalar: ``mean_n(sum_{rows of n} row_values / max(1, count_n))``.
    """
    n = image_counts.shape[0]
    # index_add keeps NaN/Inf: a non-finite row makes its image's term, and the mean, non-finite.
    per_image = row_values.new_zeros(n).index_add(0, row_image, row_values)
    return (per_image / image_counts.clamp(min=1).to(row_values.dtype)).sum() / max(1, n)


# torchvision's coordinate losses on the encoded box deltas, for the baselines that pair a searched
# (or paper) classification loss with them: the ``reg`` kind sees box areas only (i, u, e), in which
# L1 on coordinates cannot be written. Smooth L1 uses beta = 1/9, as torchvision's Faster R-CNN.
BOX_LOSSES = ("l1", "smooth_l1")
SMOOTH_L1_BETA = 1.0 / 9


def check_box_loss(box_loss: str | None) -> None:
    if box_loss is not None and box_loss not in BOX_LOSSES:
        raise GpLossError(f"unknown box loss {box_loss!r}; choose one of {', '.join(BOX_LOSSES)} (or none)")


def box_loss_rows(box_loss: str, pred_deltas: Tensor, target_deltas: Tensor) -> Tensor:
    """Per-row ``l1`` or ``smooth_l1`` of P×4 predicted deltas against the P×4 encoded targets: P values."""
    f = torch.nn.functional
    if box_loss == "l1":
        return f.l1_loss(pred_deltas.float(), target_deltas.float(), reduction="none").sum(1)
    return f.smooth_l1_loss(pred_deltas.float(), target_deltas.float(), reduction="none",
                            beta=SMOOTH_L1_BETA).sum(1)


# ---------------------------------------------------------------------------------------------
# Parameterized AP Loss (gp_loss.pap) in the heads: one ranking loss in place of the cls and reg branches

def paired_giou(pred: Tensor, target: Tensor) -> Tensor:
    """GIoU of box pairs, row k of ``pred`` (P×4, xyxy) with row k of ``target``, differentiable with
    respect to ``pred``: ``i/u − (e − u)/e`` from :func:`~gp_loss.probes.boxes.paired_areas` (float32),
    the same areas a ``reg`` branch sees. P values in [−1, 1]."""
    i, u, e = paired_areas(pred.float(), target.float())
    return i / u - (e - u) / e


@dataclass(frozen=True)
class PAPSettings:
    """How a head trains with Parameterized AP Loss (:func:`gp_loss.pap.loss.pap_loss`).

    ``params``: the substitutions and the regression gradient scale; ``top_k``: candidates kept
    per ranking; ``block_h1_gradient``: detach the rank's H1 term (the paper's default; ``False`` is
    the ablation); ``per_image``: rank within each image (the mean over the images with positives)
    instead of over the whole batch.
    """

    params: PAPParameters
    top_k: int = DEFAULT_TOP_K
    block_h1_gradient: bool = True
    per_image: bool = False

    def loss(self, logits: Tensor, targets: Tensor, ious: Tensor, image_index: Tensor) -> Tensor:
        """The loss of ``logits`` (any shape), ``targets`` (+1/0/−1, same shape), ``ious`` (the
        positives' GIoU in flattened order) and ``image_index`` (same shape as the logits; used in
        per-image mode only)."""
        return pap_loss(logits, targets, ious, self.params, self.top_k, self.block_h1_gradient,
                        image_index if self.per_image else None)


def pap_settings(params: PAPParameters | None, top_k: int = DEFAULT_TOP_K, block_h1_gradient: bool = True,
                 per_image: bool = False) -> PAPSettings | None:
    """Checked :class:`PAPSettings` (``None`` when ``params`` is: PAP off).

    Raises:
        GpLossError: parameters that are not :class:`PAPParameters`, a ``top_k`` that is not a
            positive integer, flags that are not booleans (one line each).
    """
    if params is None:
        return None
    if not isinstance(params, PAPParameters):
        raise GpLossError(f"PAP-Loss needs PAPParameters, got {type(params).__name__}")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise GpLossError(f"PAP-Loss top_k must be a positive integer, got {top_k!r}")
    for name, flag in (("block_h1_gradient", block_h1_gradient), ("per_image", per_image)):
        if not isinstance(flag, bool):
            raise GpLossError(f"PAP-Loss {name} must be True or False, got {flag!r}")
    return PAPSettings(params, top_k, block_h1_gradient, per_image)
