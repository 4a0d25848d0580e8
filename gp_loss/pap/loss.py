"""Parameterized AP Loss (Tao et al., NeurIPS 2021), as the official ``mmdet/models/losses/paploss.py``.

**The formula.** Over the whole batch, classification logits are flattened over
anchors × classes with targets +1 (positive), 0 (negative), −1 (ignored). Let P be the
positives (i), u_i in [0, 1] the quality of positive i's predicted box (GIoU mapped to
``(giou + 1)/2``), u_j = 0 for a negative, and C the candidates: the ``top_k`` highest
*valid* (non-ignored) logits, positives and negatives alike, positive i itself included when
it is among them. With ``x_ji = clamp((s_j − s_i)/2 + 1/2, 0, 1)`` on the logits s:

    L = 1/|P| · Σ_{i∈P} [ (1 − I1(u_i)) + I3(u_i) · Σ_{j∈C} H2(x_ji)(1 − I2(u_j)) / Σ_{j∈C} H1(x_ji) ]

With every function the identity and H a hard step this is one minus the IoU-weighted
precision: ``1 − u_i · Σ_{j ranked above i} u_j / rank(i)`` per positive, i.e. box AP with the
IoU thresholds smoothed. The denominator is the soft rank of positive i among the candidates
(including itself: ``x_ii = 1/2``, so i counts as H1(1/2), 0.5 for the identity, as in the
official code); the numerator counts the candidates ranked above i weighted by how badly they
are localised (a negative weighs 1 − I2(0), 1 for the searched functions).

**Why the H1 term is detached** (``block_h1_gradient=True``, the default): the appendix's
Table 1 shows that letting gradient through the rank's denominator makes training unstable
(RetinaNet 0.8 AP against 40.5 AP): the denominator's gradient pushes every candidate's
score *down* relative to i in proportion to the current loss, which fights the numerator's.
The value is unchanged; ``block_h1_gradient=False`` reproduces the ablation.

**Why top-k**: the matrix of pairwise differences is [|C|, |P|]; a RetinaNet batch has
millions of anchor × class entries, almost all easy negatives far below every positive
(x_ji = 0 and H(0) = 0: they add nothing). Keeping the k highest valid logits (k = 1e5 by
default, as the official head) bounds memory by O(k·|P|) while keeping every entry that can
outrank a positive. Positives are never dropped as rows (i): a positive outside the top k
still gets its term, ranked against the k candidates (again as the official code).

**The regression gradient scale.** The gradient that reaches ``ious`` (through I1, I2, I3)
is multiplied by ``params.grad_scale`` (``10 ** (2 θ_41 − 1)``); the loss's value is
unchanged. The official head multiplies the gradient into ``bbox_pred`` by ``reg_weight``,
which is the same since the boxes reach the loss only through the ious; its search script,
however, sets ``bbox_head.grad_scale``, which the head never reads, so the searched scale
was not applied during the search. Here it is.

**Per-image mode** (``image_index`` given): the ranking, the top k and the normalisation
by the number of positives are done within each image; the loss is the mean over the
images that have at least one positive.

Memory: O(k·|P|) per call (one [k, P] tensor saved per substitution for the backward pass,
no [M, P] tensor), no Python loop over anchors or positives (per-image mode loops over images).
"""
from __future__ import annotations

import torch
from torch import Tensor

from gp_loss.errors import GpLossError
from gp_loss.pap.substitutions import PAPParameters

DEFAULT_TOP_K = 100_000
DEFAULT_EPS = 1e-6
IOU_INPUTS = ("giou", "iou")


# ---------------------------------------------------------------------------------------------
# helpers: the order of the positives

def positive_indices(targets: Tensor) -> Tensor:
    """Flat indices (into ``targets.reshape(-1)``) of the positives (target +1), in increasing
    order. This is the order :func:`pap_loss` expects its ``ious`` in: for logits of shape
    [anchors, classes], row-major, i.e. by anchor, then by class."""
    return torch.nonzero(targets.reshape(-1) == 1, as_tuple=False).reshape(-1)


def positive_ious(dense_ious: Tensor, targets: Tensor) -> Tensor:
    """The positives' entries of a tensor shaped like the logits (e.g. the official head's
    ``ious`` of shape [anchors, classes]), in :func:`positive_indices` order: shape [P]."""
    if dense_ious.numel() != targets.numel():
        raise GpLossError(f"positive_ious: {dense_ious.numel()} ious for {targets.numel()} targets")
    return dense_ious.reshape(-1)[targets.reshape(-1) == 1]


def dense_ious(ious: Tensor, targets: Tensor) -> Tensor:
    """The inverse of :func:`positive_ious`: a flat [M] tensor holding ``ious[p]`` at the p-th
    positive and 0 elsewhere (differentiable with respect to ``ious``)."""
    t = targets.reshape(-1)
    pos = t == 1
    ious = ious.reshape(-1)
    if int(pos.sum()) != ious.numel():
        raise GpLossError(f"dense_ious: {ious.numel()} ious for {int(pos.sum())} positives")
    return torch.zeros(t.shape, dtype=ious.dtype, device=ious.device).masked_scatter(pos, ious)


# ---------------------------------------------------------------------------------------------
# gradient scale

class _ScaleGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None


def scale_gradient(x: Tensor, scale: float) -> Tensor:
    """``x`` unchanged in the forward pass; its gradient multiplied by ``scale`` in the backward."""
    if scale == 1.0:
        return x
    return _ScaleGradient.apply(x, float(scale))


# ---------------------------------------------------------------------------------------------
# the loss

def _as_compute(logits: Tensor) -> Tensor:
    s = logits.reshape(-1)
    if not s.is_floating_point() or s.dtype in (torch.float16, torch.bfloat16):
        s = s.float()  # the official head runs the loss in fp32 (force_fp32)
    return s


def _check_inputs(logits, targets, ious, top_k, iou_input):
    if not isinstance(logits, Tensor) or not isinstance(targets, Tensor) or not isinstance(ious, Tensor):
        raise GpLossError("pap_loss: logits, targets and ious must be tensors")
    if logits.numel() != targets.numel():
        raise GpLossError(f"pap_loss: {logits.numel()} logits but {targets.numel()} targets")
    try:
        ok = not isinstance(top_k, bool) and int(top_k) == top_k and int(top_k) >= 1
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise GpLossError(f"pap_loss: top_k must be a positive integer, got {top_k!r}")
    if iou_input not in IOU_INPUTS:
        raise GpLossError(f"pap_loss: iou_input must be one of {IOU_INPUTS}, got {iou_input!r}")
    t = targets.reshape(-1)
    if t.numel() and not bool(((t == 1) | (t == 0) | (t == -1)).all()):
        raise GpLossError("pap_loss: targets must be +1 (positive), 0 (negative) or -1 (ignored)")
    num_pos = int((t == 1).sum())
    if ious.numel() != num_pos:
        raise GpLossError(f"pap_loss: {ious.numel()} ious for {num_pos} positives "
                          "(give one per target +1, in flattened order)")
    return t, num_pos


def _qualities(ious: Tensor, params: PAPParameters, iou_input: str, dtype) -> Tensor:
    u = ious.reshape(-1).to(dtype)
    if iou_input == "giou":
        u = (u + 1.0) * 0.5
    # scale the gradient into the boxes, not the value (see the module's docstring)
    return scale_gradient(u, params.grad_scale)


def _terms(s: Tensor, t: Tensor, u: Tensor, params: PAPParameters, top_k: int,
           block_h1_gradient: bool, eps: float) -> Tensor:
    """Per-positive loss terms [P] of one ranking. ``s``, ``t``: [M]; ``u``: [P] qualities."""
    pos = t == 1
    valid = t != -1
    s_pos = s[pos]                                                      # [P]
    u_all = torch.zeros(s.shape, dtype=u.dtype, device=u.device).masked_scatter(pos, u)
    s_valid = s[valid]
    u_valid = u_all[valid]
    if s_valid.numel() > top_k:
        # only the top k valid logits can outrank a positive by a margin that H sees;
        # ignored (-1) entries were dropped above and never take a slot
        s_cand, idx = torch.topk(s_valid, top_k, sorted=False)
        u_cand = u_valid[idx]
    else:
        s_cand, u_cand = s_valid, u_valid

    d = s_cand[:, None] - s_pos[None, :]                                # [K, P]: s_j - s_i
    h2 = params.H2.of_difference(d)                                     # [K, P]
    shared_h = params.H1 == params.H2
    if block_h1_gradient:
        # the rank (denominator) is a constant for autograd: its gradient destabilises training
        with torch.no_grad():
            rank = (h2 if shared_h else params.H1.of_difference(d)).sum(0)
    else:
        rank = (h2 if shared_h else params.H1.of_difference(d)).sum(0)
    del d
    weight = 1.0 - params.I2(u_cand)                                    # [K]
    above = weight @ h2                                                 # [P]: Σ_j H2(x_ji)(1 - I2(u_j))
    # rank >= H1(1/2) for a positive among the candidates; the clamp only guards functions
    # that are 0 up to x = 1/2 (the official code has no guard and gives inf / NaN there)
    return (1.0 - params.I1(u)) + params.I3(u) * above / rank.clamp_min(eps)


def pap_loss_terms(logits: Tensor, targets: Tensor, ious: Tensor, params: PAPParameters,
                   top_k: int = DEFAULT_TOP_K, block_h1_gradient: bool = True, *,
                   iou_input: str = "giou", eps: float = DEFAULT_EPS) -> Tensor:
    """Each positive's term of :func:`pap_loss` (one ranking over the whole batch): shape [P],
    in :func:`positive_indices` order; :func:`pap_loss` is their mean."""
    t, num_pos = _check_inputs(logits, targets, ious, top_k, iou_input)
    s = _as_compute(logits)
    u = _qualities(ious, params, iou_input, s.dtype)
    if num_pos == 0:
        return s.new_zeros(0)
    return _terms(s, t, u, params, int(top_k), block_h1_gradient, eps)


def pap_loss(logits: Tensor, targets: Tensor, ious: Tensor, params: PAPParameters,
             top_k: int = DEFAULT_TOP_K, block_h1_gradient: bool = True,
             image_index: Tensor | None = None, *, iou_input: str = "giou",
             eps: float = DEFAULT_EPS) -> Tensor:
    """Parameterized AP Loss; a scalar tensor.

    Args:
        logits: classification logits of the whole batch, any shape with M elements (e.g.
            [anchors, classes] or [N, anchors, classes]); flattened row-major.
        targets: M values, same layout: +1 positive, 0 negative, −1 ignored (never counted).
        ious: [P] (P = number of +1 targets): the GIoU in [−1, 1] (``iou_input="giou"``,
            mapped to ``(giou + 1)/2``) or the IoU in [0, 1] (``iou_input="iou"``) of each
            positive's predicted box against its ground truth, differentiable with respect to
            the boxes, **in the order of the positives in the flattened targets**
            (:func:`positive_indices`; :func:`positive_ious` extracts them from a tensor
            shaped like the logits).
        params: the substitutions and gradient scale (:class:`PAPParameters`).
        top_k: candidates kept per ranking: the k highest valid logits (official: 1e5).
        block_h1_gradient: detach the rank's H1 term (default, as the paper).
        image_index: optional, M image ids (same layout as the logits, e.g.
            ``torch.arange(N)[:, None, None].expand_as(logits)``): rank within each image and
            average the per-image losses over the images with positives.
        iou_input: ``"giou"`` or ``"iou"``, see ``ious``.
        eps: lower bound of the rank (denominator); see :func:`_terms`.

    Without positives the loss is 0, still connected to ``logits`` and ``ious`` (as the
    official head).
    """
    t, num_pos = _check_inputs(logits, targets, ious, top_k, iou_input)
    s = _as_compute(logits)
    if num_pos == 0:
        return s.sum() * 0.0 + ious.sum().to(s.dtype) * 0.0
    u = _qualities(ious, params, iou_input, s.dtype)
    k = int(top_k)
    if image_index is None:
        return _terms(s, t, u, params, k, block_h1_gradient, eps).sum() / num_pos

    img = image_index.reshape(-1)
    if img.numel() != s.numel():
        raise GpLossError(f"pap_loss: {img.numel()} image indices for {s.numel()} logits")
    img = img.to(s.device)
    pos_img = img[t == 1]                                               # [P]
    losses = []
    # a loop over images (not anchors nor positives): each is one independent ranking
    for b in torch.unique(pos_img).tolist():
        in_b = img == b
        terms = _terms(s[in_b], t[in_b], u[pos_img == b], params, k, block_h1_gradient, eps)
        losses.append(terms.mean())
    return torch.stack(losses).mean()
