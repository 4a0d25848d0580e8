"""HPS-Det's dynamic sample assignment (Ji Liu et al., AMD, "Dynamic Sample Assignment with
Hyper-Parameter Search for Object Detection", Algorithm 2) for torchvision's FCOS and RetinaNet.

:class:`DynamicAssignmentFCOS` and :class:`DynamicAssignmentRetinaNet` are torchvision's
``FCOS`` / ``RetinaNet`` whose model-level ``compute_loss`` builds ``matched_idxs`` with a
:class:`DynamicAssigner` instead of FCOS's centre sampling or RetinaNet's IoU matcher, then
calls ``self.head.compute_loss(...)`` as torchvision does: the genome heads (and torchvision's
own loss code) train on the new assignment unchanged, and inference is untouched.

Per image, on the device, without gradient (the loop is over images only):

1. **Candidates** C_g of each ground truth g: RetinaNet: the anchors whose IoU with g is
   > 0.1 (:data:`RETINANET_CANDIDATE_IOU`); FCOS: the points inside g whose largest
   regression distance max(l, t, r, b) lies in their level's scale range, as torchvision's
   ``FCOS.compute_loss`` defines it ((4, 8) × the level's anchor size, the first level from 0,
   the last to infinity), by default (``"centre"``) also within torchvision's centre-sampling
   radius (1.5 anchor sizes) of g's centre, where torchvision's FCOS samples its positives, so a
   large s gives back FCOS's own assignment and a search can only start from it; ``"box"``:
   the whole box, as the paper words it (at random initialisation the lowest-cost points can
   then lie at the box's edges, which trained worse here).
2. **Cost** of each (g, candidate): the sigmoid focal loss (alpha 0.25, gamma 2, torchvision's)
   of the candidate's class logits against g's one-hot class, summed over the classes as a
   classification loss, plus ``alpha`` × the GIoU loss (1 − GIoU) of the candidate's decoded
   box against g (:data:`DEFAULT_ALPHA` = 1: the paper gives no value; 1 weights the two as
   FCOS's and RetinaNet's training losses do).
3. **Bin** of g (:class:`BinLayout`): its best-matching FPN level i* × its aspect-ratio bin j*.
   i*: RetinaNet: the level of g's highest-IoU anchor (the paper's definition); FCOS: the level
   whose scale range holds max(w, h)/2, the largest regression distance at g's centre (the
   level where the centre point meets FCOS's scale constraint; precisely, the highest level
   whose lower bound 4 × anchor size is below it, the first level's bound being 0). j*: the
   bin of w/h among :data:`ASPECT_EDGES` (bins closed on the right: (−inf, 1/2], (1/2, 2],
   (2, inf) for 3 bins; (−inf, 1/4], (1/4, 1/2], (1/2, 2], (2, 4], (4, inf) for 5; 1 bin).
4. **Positives**: the s[i*, j*] candidates of lowest cost (all of them when there are fewer).
   A candidate chosen by several ground truths goes to the one it costs least (ties: the
   first). Every other anchor or point is negative (no ignored band, as the paper says,
   also for RetinaNet). A ground truth with no candidate gets no positive.

Hyper-parameters: one positive count per bin, each in [1, :data:`UPPER_BOUNDS`] (FCOS 25,
RetinaNet 80; the paper's ATSS 32 has no torchvision detector here).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torchvision.models.detection import FCOS, RetinaNet
from torchvision.ops import box_iou, generalized_box_iou

from gp_loss.errors import GpLossError

ASSIGNMENTS = ("default", "dynamic")
UPPER_BOUNDS = {"fcos": 25, "retinanet": 80}
DEFAULT_ALPHA = 1.0
RETINANET_CANDIDATE_IOU = 0.1
# Aspect-ratio (w/h) bin edges; each bin is closed on the right.
ASPECT_EDGES: dict[int, tuple[float, ...]] = {1: (), 3: (0.5, 2.0), 5: (0.25, 0.5, 2.0, 4.0)}
FOCAL_ALPHA, FOCAL_GAMMA = 0.25, 2.0  # torchvision's sigmoid_focal_loss defaults, as both detectors train
# Cost given to a NaN/Inf cost, so that a diverged prediction still yields s positives (training stops on it).
_BAD_COST = 1e6


# ----------------------------------------------------------------------------- bins

@dataclass(frozen=True)
class BinLayout:
    """How ground truths are binned: ``levels`` groups of FPN levels × ``aspect_bins`` aspect bins.

    ``levels`` is the detector's number of FPN levels (one group per level) or 1 (levels pooled).
    The paper's ablation layouts, for 5 levels: (3,3,3,3,3) = ``BinLayout(5, 3)`` (the default),
    (1,1,1,1,1) = ``BinLayout(5, 1)``, (5) = ``BinLayout(1, 5)``, (3) = ``BinLayout(1, 3)``,
    (1) = ``BinLayout(1, 1)``. Bin index = level × aspect_bins + aspect bin (level 0 when pooled).
    """

    levels: int
    aspect_bins: int

    @property
    def size(self) -> int:
        return self.levels * self.aspect_bins

    @property
    def per_level(self) -> bool:
        return self.levels > 1

    def notation(self) -> str:
        """The paper's notation: ``(3,3,3,3,3)``, ``(5)``."""
        return "(" + ",".join([str(self.aspect_bins)] * self.levels) + ")"

    def bin_names(self) -> list[str]:
        """A name per bin, in order: ``P0 w/h<=1/2``, ..., or ``w/h<=1/2`` when levels are pooled."""
        edges = ASPECT_EDGES[self.aspect_bins]
        shapes = []
        for j in range(self.aspect_bins):
            if not edges:
                shapes.append("any w/h")
            elif j == 0:
                shapes.append(f"w/h<={_ratio(edges[0])}")
            elif j == len(edges):
                shapes.append(f"w/h>{_ratio(edges[-1])}")
            else:
                shapes.append(f"{_ratio(edges[j - 1])}<w/h<={_ratio(edges[j])}")
        if not self.per_level:
            return shapes
        return [f"level{i} {s}" for i in range(self.levels) for s in shapes]

    def index(self, level: Tensor, aspect: Tensor) -> Tensor:
        """Bin indices from per-box level and aspect-bin indices (int64 tensors)."""
        return aspect if not self.per_level else level * self.aspect_bins + aspect

    @classmethod
    def parse(cls, text: str, model_levels: int) -> "BinLayout":
        """``"default"`` (one group per level × 3 aspect bins), ``"3,3,3"`` (per level: one count per
        FPN level, all equal) or ``"5"`` (levels pooled) -> the layout, or a one-line error."""
        if text == "default":
            return cls(model_levels, 3)
        try:
            counts = [int(c) for c in text.replace("(", "").replace(")", "").split(",")]
        except ValueError:
            counts = []
        if not counts or any(c not in ASPECT_EDGES for c in counts) or len(set(counts)) != 1 \
                or len(counts) not in (1, model_levels):
            raise GpLossError(f"bins {text!r}: give 'default', one aspect-bin count per FPN level "
                              f"({model_levels} levels, all equal, e.g. {','.join(['3'] * model_levels)}) or one "
                              f"count for all levels (e.g. 3); counts are {', '.join(map(str, ASPECT_EDGES))}")
        return cls(len(counts) if len(counts) > 1 else 1, counts[0])


def _ratio(x: float) -> str:
    return f"1/{round(1 / x)}" if x < 1 else f"{x:g}"


def layout_for(positives: list, aspect_bins: int, model_levels: int) -> BinLayout:
    """The layout a list of positive counts implies: ``levels × aspect_bins`` counts (one group per
    level) or ``aspect_bins`` counts (levels pooled)."""
    if len(positives) == model_levels * aspect_bins:
        return BinLayout(model_levels, aspect_bins)
    return BinLayout(1, aspect_bins)


def check_assignment(assignment: str, positives: list, aspect_bins: int, alpha: float, model: str,
                     model_levels: int) -> None:
    """Raise a one-line :class:`GpLossError` for bad assignment options (the task's ``check``)."""
    if assignment not in ASSIGNMENTS:
        raise GpLossError(f"task option assignment must be one of {', '.join(ASSIGNMENTS)}, got {assignment!r}")
    if aspect_bins not in ASPECT_EDGES:
        raise GpLossError(f"task option aspect_bins must be one of {', '.join(map(str, ASPECT_EDGES))} "
                          f"(the paper's aspect-ratio bins), got {aspect_bins!r}")
    if not (alpha >= 0 and math.isfinite(alpha)):
        raise GpLossError(f"task option assignment_alpha must be a finite number >= 0, got {alpha!r}")
    if assignment == "default":
        if positives:
            raise GpLossError("task option positives is for assignment 'dynamic' (HPS-Det); "
                              "set assignment to dynamic or leave positives empty")
        return
    if model not in UPPER_BOUNDS:
        raise GpLossError(f"dynamic assignment is for {' and '.join(UPPER_BOUNDS)}, not {model}")
    sizes = sorted({model_levels * aspect_bins, aspect_bins})
    if len(positives) not in sizes:
        raise GpLossError(f"task option positives needs one count per bin: {' or '.join(map(str, sizes[::-1]))} "
                          f"integers ({model_levels} levels x {aspect_bins} aspect bins, or {aspect_bins} with the "
                          f"levels pooled), got {len(positives)}")
    top = UPPER_BOUNDS[model]
    for k, s in enumerate(positives):
        if isinstance(s, bool) or not isinstance(s, int) or not 1 <= s <= top:
            raise GpLossError(f"task option positives[{k}] must be an integer in [1, {top}] for {model}, got {s!r}")


def aspect_bin(boxes: Tensor, aspect_bins: int) -> Tensor:
    """The aspect-ratio bin (int64) of each box (xyxy, G×4) by w/h; bins closed on the right."""
    edges = ASPECT_EDGES[aspect_bins]
    if not edges:
        return torch.zeros(boxes.shape[0], dtype=torch.int64, device=boxes.device)
    wh = (boxes[:, 2:] - boxes[:, :2]).float()
    ratio = wh[:, 0] / wh[:, 1].clamp(min=1e-6)
    return torch.bucketize(ratio, torch.tensor(edges, device=boxes.device), right=False)


# ----------------------------------------------------------------------------- cost and selection

def focal_cost(logits: Tensor, labels: Tensor) -> Tensor:
    """G×A: sigmoid focal loss of each anchor's C logits (A×C) against each ground truth's
    one-hot class (labels: G), summed over the classes, as torchvision's ``sigmoid_focal_loss``."""
    x = logits.float()
    p = torch.sigmoid(x)
    negative = (1 - FOCAL_ALPHA) * p.pow(FOCAL_GAMMA) * nn.functional.softplus(x)  # y = 0
    positive = FOCAL_ALPHA * (1 - p).pow(FOCAL_GAMMA) * nn.functional.softplus(-x)  # y = 1
    return (negative.sum(1)[:, None] + (positive - negative)[:, labels]).T


def select_positives(cost: Tensor, candidates: Tensor, quota: Tensor, max_quota: int) -> Tensor:
    """Each ground truth's ``quota`` lowest-cost candidates; conflicts to the lowest cost.

    Args:
        cost: G×A costs (finite); candidates: G×A bool; quota: G positive counts (int64);
        max_quota: an upper bound of ``quota`` (a Python int: no device sync).

    Returns:
        A int64 ``matched_idxs``: the ground-truth index of each positive, -1 elsewhere.
    """
    g, a = cost.shape
    if g == 0 or a == 0 or max_quota < 1:
        return torch.full((a,), -1, dtype=torch.int64, device=cost.device)
    k = min(max_quota, a)
    inf = torch.tensor(float("inf"), device=cost.device, dtype=cost.dtype)
    chosen_cost, chosen = torch.where(candidates, cost, inf).topk(k, dim=1, largest=False)  # G×k
    take = (torch.arange(k, device=cost.device)[None, :] < quota[:, None]) & candidates.gather(1, chosen)
    claims = torch.full_like(cost, float("inf")).scatter_(1, chosen, torch.where(take, chosen_cost, inf))
    best, owner = claims.min(dim=0)  # A: the lowest claim on each anchor
    return torch.where(torch.isfinite(best), owner, torch.full_like(owner, -1))


# Where FCOS's candidates are taken (task option ``assignment_candidates``).
CANDIDATE_REGIONS = ("centre", "box")


class DynamicAssigner:
    """Algorithm 2's selection for one detector: ``positives`` (one count per bin of ``layout``), ``alpha``."""

    def __init__(self, positives: list[int] | tuple[int, ...], layout: BinLayout, alpha: float = DEFAULT_ALPHA,
                 centre_sampling: bool = True):
        if len(positives) != layout.size or any(int(s) < 1 for s in positives):
            raise GpLossError(f"{len(positives)} positive counts for the {layout.size} bins of layout "
                              f"{layout.notation()}: give one integer >= 1 per bin")
        self.positives = tuple(int(s) for s in positives)
        self.layout = layout
        self.alpha = float(alpha)
        # FCOS: candidates only near the box's centre, where torchvision's FCOS samples its positives.
        self.centre_sampling = bool(centre_sampling)

    def __repr__(self) -> str:
        return f"DynamicAssigner(positives={list(self.positives)}, layout={self.layout}, alpha={self.alpha})"

    def check_levels(self, levels: int) -> None:
        """A detector with ``levels`` FPN levels fits a per-level layout only if the counts agree."""
        if self.layout.per_level and levels != self.layout.levels:
            raise GpLossError(f"positive counts for {self.layout.levels} FPN levels {self.layout.notation()}, "
                              f"but the detector has {levels} levels")

    def bins(self, boxes: Tensor, level: Tensor) -> Tensor:
        """Each ground truth's bin index from its boxes (G×4) and best-matching levels (G)."""
        return self.layout.index(level, aspect_bin(boxes, self.layout.aspect_bins))

    def assign(self, boxes: Tensor, labels: Tensor, level: Tensor, candidates: Tensor, logits: Tensor,
               pred_boxes: Tensor) -> Tensor:
        """``matched_idxs`` (A) of one image.

        Args:
            boxes, labels: its G ground truths (xyxy, class 0..C-1); level: their best FPN level (G).
            candidates: G×A bool; logits: A×C; pred_boxes: A×4 decoded boxes.
        """
        with torch.no_grad():
            cost = focal_cost(logits.detach(), labels)
            if self.alpha:
                cost = cost + self.alpha * (1 - generalized_box_iou(boxes.float(), pred_boxes.detach().float()))
            cost = cost.nan_to_num(nan=_BAD_COST, posinf=_BAD_COST, neginf=-_BAD_COST)
            table = torch.tensor(self.positives, dtype=torch.int64, device=boxes.device)
            quota = table[self.bins(boxes, level)]
            return select_positives(cost, candidates, quota, max(self.positives))


# ----------------------------------------------------------------------------- candidates per detector

def fcos_candidates(points: Tensor, level_of_point: Tensor, level_sizes: Tensor,
                    boxes: Tensor, centre_radius: float | None = None) -> tuple[Tensor, Tensor]:
    """FCOS's candidates (G×A bool) and each box's best level (G).

    Args:
        points: A×4 anchors (FCOS: one square of side = its level's size per location).
        level_of_point: A level indices; level_sizes: L anchor sizes (ascending).
        boxes: G×4 ground truths.
        centre_radius: also keep only the points within this many anchor sizes of the box's
            centre (torchvision's ``center_sampling_radius``); ``None``: the whole box.
    """
    levels = level_sizes.shape[0]
    lower = 4 * level_sizes.float()
    lower[0] = 0.0
    upper = 8 * level_sizes.float()
    upper[-1] = float("inf")
    centres = (points[:, :2] + points[:, 2:]) / 2  # A×2
    x, y = centres[None, :, 0], centres[None, :, 1]  # 1×A
    x0, y0, x1, y1 = (boxes[:, k, None] for k in range(4))  # G×1
    dist = torch.stack([x - x0, y - y0, x1 - x, y1 - y], dim=2)  # G×A×4
    largest = dist.max(dim=2).values
    candidates = (dist.min(dim=2).values > 0) & (largest > lower[level_of_point]) & (largest < upper[level_of_point])
    if centre_radius is not None:  # as torchvision's FCOS samples its positives: near the box's centre
        box_centres = (boxes[:, :2] + boxes[:, 2:]) / 2  # G×2
        offset = (box_centres[:, None, :] - centres[None, :, :]).abs().max(dim=2).values  # G×A
        candidates &= offset < centre_radius * level_sizes.float()[level_of_point][None, :]
    half_side = (boxes[:, 2:] - boxes[:, :2]).max(dim=1).values / 2  # max(w, h)/2: at the centre
    best = ((half_side[:, None] > lower[None, :]).sum(dim=1) - 1).clamp(0, levels - 1)
    return candidates, best


def retinanet_candidates(anchors: Tensor, level_of_anchor: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
    """RetinaNet's candidates (IoU > 0.1, G×A bool) and each box's best level (its max-IoU anchor's, G)."""
    iou = box_iou(boxes.float(), anchors.float())
    return iou > RETINANET_CANDIDATE_IOU, level_of_anchor[iou.argmax(dim=1)]


def _level_index(counts: list[int], device: torch.device) -> Tensor:
    return torch.repeat_interleave(torch.arange(len(counts), device=device),
                                   torch.tensor(counts, device=device))


class DynamicAssignmentFCOS(FCOS):
    """torchvision's ``FCOS`` trained with HPS-Det's dynamic sample assignment (``assigner``)."""

    def __init__(self, *args, assigner: DynamicAssigner, **kwargs):
        super().__init__(*args, **kwargs)
        self.assigner = assigner

    def compute_loss(self, targets: list[dict[str, Tensor]], head_outputs: dict[str, Tensor],
                     anchors: list[Tensor], num_anchors_per_level: list[int]) -> dict[str, Tensor]:
        return self.head.compute_loss(targets, head_outputs, anchors,
                                      self.assign(targets, head_outputs, anchors, num_anchors_per_level))

    @torch.no_grad()
    def assign(self, targets, head_outputs, anchors, num_anchors_per_level) -> list[Tensor]:
        """``matched_idxs`` per image (-1: background)."""
        matched = []
        level_of_point = level_sizes = None
        for i, (points, target) in enumerate(zip(anchors, targets)):
            boxes = target["boxes"]
            if boxes.numel() == 0:
                matched.append(torch.full((points.shape[0],), -1, dtype=torch.int64, device=points.device))
                continue
            if level_of_point is None:
                self.assigner.check_levels(len(num_anchors_per_level))
                level_of_point = _level_index(num_anchors_per_level, points.device)
                starts = torch.tensor([0] + num_anchors_per_level[:-1], device=points.device).cumsum(0)
                level_sizes = points[starts, 2] - points[starts, 0]
            radius = self.center_sampling_radius if self.assigner.centre_sampling else None
            candidates, level = fcos_candidates(points, level_of_point, level_sizes, boxes, radius)
            pred = self.head.box_coder.decode(head_outputs["bbox_regression"][i].float(), points)
            matched.append(self.assigner.assign(boxes, target["labels"], level, candidates,
                                                head_outputs["cls_logits"][i], pred))
        return matched


def _record_grid_sizes(module: nn.Module, inputs, output) -> None:
    """Forward hook of RetinaNet's anchor generator: keep the feature maps' sizes (for the anchors' levels)."""
    module.hps_grid_sizes = [tuple(f.shape[-2:]) for f in inputs[1]]


class DynamicAssignmentRetinaNet(RetinaNet):
    """torchvision's ``RetinaNet`` trained with HPS-Det's dynamic sample assignment (``assigner``).

    torchvision's ``compute_loss`` gets no per-level anchor counts; a forward hook on the anchor
    generator records the feature maps' sizes, from which each anchor's level follows.
    """

    def __init__(self, *args, assigner: DynamicAssigner, **kwargs):
        super().__init__(*args, **kwargs)
        self.assigner = assigner
        self.anchor_generator.register_forward_hook(_record_grid_sizes)

    def compute_loss(self, targets: list[dict[str, Tensor]], head_outputs: dict[str, Tensor],
                     anchors: list[Tensor]) -> dict[str, Tensor]:
        return self.head.compute_loss(targets, head_outputs, anchors, self.assign(targets, head_outputs, anchors))

    def anchors_per_level(self) -> list[int]:
        grid = getattr(self.anchor_generator, "hps_grid_sizes", None)
        if grid is None:
            raise RuntimeError("dynamic assignment: the anchor generator's sizes were not recorded")
        per_location = self.anchor_generator.num_anchors_per_location()
        return [h * w * a for (h, w), a in zip(grid, per_location)]

    @torch.no_grad()
    def assign(self, targets, head_outputs, anchors) -> list[Tensor]:
        """``matched_idxs`` per image (-1: background; none ignored)."""
        matched = []
        level_of_anchor = None
        box_coder = self.head.regression_head.box_coder
        for i, (anchors_i, target) in enumerate(zip(anchors, targets)):
            boxes = target["boxes"]
            if boxes.numel() == 0:
                matched.append(torch.full((anchors_i.shape[0],), -1, dtype=torch.int64, device=anchors_i.device))
                continue
            if level_of_anchor is None:
                counts = self.anchors_per_level()
                self.assigner.check_levels(len(counts))
                if sum(counts) != anchors_i.shape[0]:
                    raise RuntimeError(f"dynamic assignment: {sum(counts)} anchors by level, "
                                       f"{anchors_i.shape[0]} given")
                level_of_anchor = _level_index(counts, anchors_i.device)
            candidates, level = retinanet_candidates(anchors_i, level_of_anchor, boxes)
            pred = box_coder.decode_single(head_outputs["bbox_regression"][i].float(), anchors_i.float())
            matched.append(self.assigner.assign(boxes, target["labels"], level, candidates,
                                                head_outputs["cls_logits"][i], pred))
        return matched


DYNAMIC_CLASSES = {FCOS: DynamicAssignmentFCOS, RetinaNet: DynamicAssignmentRetinaNet}


def make_assigner(assignment: str, positives: list, aspect_bins: int, alpha: float, model_levels: int,
                  candidates: str = "centre") -> DynamicAssigner | None:
    """The assigner of checked task options (``None`` for the detector's default assignment)."""
    if assignment != "dynamic":
        return None
    return DynamicAssigner(positives, layout_for(positives, aspect_bins, model_levels), alpha,
                           centre_sampling=candidates == "centre")
