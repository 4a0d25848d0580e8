"""Build torchvision's FCOS, RetinaNet, Faster R-CNN and Mask R-CNN with searchable loss heads.

Each detector is one :class:`DetectorSpec` in :data:`DETECTORS`: its builder, its loss
branches and terms, its label convention and its baselines. :func:`build_detector` assembles
torchvision's own detector classes (``FCOS``, ``RetinaNet``, ``FasterRCNN``) on an FPN backbone,
with the heads of :mod:`~gp_loss.tasks.detection.fcos`, :mod:`~gp_loss.tasks.detection.retinanet`
and :mod:`~gp_loss.tasks.detection.faster_rcnn` that take their losses from a genome
(``None``: torchvision's own loss code). Nothing is downloaded: the ``small`` backbone
starts from the project's pretrained weights by default (:mod:`gp_loss.models.pretrain`), the
ResNets from random init unless the user gives a weights file.

Backbones:

- ``resnet18``, ``resnet34``, ``resnet50``: torchvision's ResNet FPN
  (:func:`~torchvision.models.detection.backbone_utils.resnet_fpn_backbone`) with
  trainable BatchNorm and every layer trainable, as torchvision builds a detector without
  pretrained weights. FCOS and RetinaNet use C3–C5 plus P6, P7 (strides 8–128), Faster
  R-CNN C2–C5 plus a max-pooled level (strides 4–64), as torchvision's builders do.
  FCOS keeps torchvision's anchors; RetinaNet's and Faster R-CNN's anchors are
  torchvision's halved (smallest 16 px, not 32): our images are 128–512 px, not COCO's
  800–1333, and their objects are small.
- ``small``: a CPU-scale configuration for laptops and CI: a narrow, shallow conv body
  (16–64 channels, strides 2–16), torchvision's FPN with 64 channels on 3 levels
  (strides 4, 8, 16) and no extra levels, and anchors for 64–128 px images with objects
  of 8–48 px. FCOS: anchor size = stride, as FCOS defines it, so by FCOS's scale ranges
  (a location's largest box-side distance in (4, 8) × its anchor size) objects up to about
  50 px are learnt at stride 4 and larger ones at strides 8, 16; a 2-conv head (torchvision's
  ``num_convs``) instead of 4. RetinaNet: anchors 8–50 px. Faster R-CNN: RPN anchors
  8–48 px, 300 proposals per image in training (150 in evaluation), 128 sampled RoIs per
  image, a 256-wide box head.

RetinaNet's head has GroupNorm, as torchvision's RetinaNet v2 (it trains from random init);
its genome-free box loss stays the class's default, L1 on the deltas.

Mask R-CNN (:mod:`~gp_loss.tasks.detection.maskrcnn`) is Faster R-CNN's detector with torchvision's
mask head (RoIAlign 14×14, a conv head, 28×28 mask logits; on ``small`` 2 convs of 64 channels)
and a fifth branch ``mask``; its targets also carry ``masks`` (the instance segmentation task).

Labels (what targets' ``labels`` must hold; use :func:`target_labels`): FCOS and
RetinaNet take the foreground class index 0..C-1 (they have no background index);
Faster R-CNN and Mask R-CNN take 1..C (0 is background). Predictions come back in the same
convention (:func:`category_index` maps them back to 0..C-1).
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Mapping

import torch
from torch import Tensor, nn
from torchvision.models.detection import FCOS, FasterRCNN, MaskRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN, resnet_fpn_backbone
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, LastLevelMaxPool, LastLevelP6P7

from gp_loss.errors import GpLossError
from gp_loss.language.genome import Genome
from gp_loss.models.weights import load_state, read_state_dict
from gp_loss.pap.loss import DEFAULT_TOP_K
from gp_loss.pap.substitutions import PAPParameters
from gp_loss.tasks.detection import faster_rcnn, fcos, maskrcnn, retinanet
from gp_loss.tasks.detection.assignment import DYNAMIC_CLASSES, UPPER_BOUNDS, DynamicAssigner
from gp_loss.tasks.detection.branches import compile_branches

BACKBONES = ("resnet18", "resnet34", "resnet50", "small")

SMALL_FPN_CHANNELS = 64
SMALL_STRIDES = (4, 8, 16)
SMALL_MASK_RCNN_ROIS = 32  # Mask R-CNN on the small backbone: RoIs sampled per image for the box and mask heads
_GENOME_MODULES = (fcos.GenomeFCOSHead, retinanet.GenomeRetinaNetHead,
                   faster_rcnn.GenomeRegionProposalNetwork, faster_rcnn.GenomeRoIHeads)  # Mask R-CNN's subclass them


def detector_spec(name: str) -> DetectorSpec:
    """The record of detector ``name``; a one-line :class:`GpLossError` naming the known ones otherwise."""
    if not isinstance(name, str) or name not in DETECTORS:
        raise GpLossError(f"unknown detector {name!r}; choose one of {', '.join(DETECTORS)}")
    return DETECTORS[name]


def target_labels(name: str, category_index: Tensor) -> Tensor:
    """Targets' ``labels`` for detector ``name`` from dataset category indices 0..C-1 (int64)."""
    return category_index.to(torch.int64) + detector_spec(name).label_offset


def category_index(name: str, labels: Tensor) -> Tensor:
    """Dataset category indices 0..C-1 from detector ``name``'s predicted (or target) labels."""
    return labels.to(torch.int64) - detector_spec(name).label_offset


# ----------------------------------------------------------------------------- backbones

class _NoExtraLevels(ExtraFPNBlock):
    """No level beyond the body's: the small configuration keeps exactly 3 FPN levels."""

    def forward(self, results: list[Tensor], x: list[Tensor], names: list[str]) -> tuple[list[Tensor], list[str]]:
        return results, names


def _conv_bn_relu(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def small_backbone() -> BackboneWithFPN:
    """The ``small`` body (3×3 conv + BN + ReLU stages) under torchvision's FPN.

    Input B×3×H×W; output levels ``"0"``, ``"1"``, ``"2"`` of B×64×H/s×W/s for s = 4, 8, 16.
    """
    body = nn.Sequential(OrderedDict(
        stem=_conv_bn_relu(3, 16, 2),                                             # stride 2
        layer1=nn.Sequential(_conv_bn_relu(16, 32, 2), _conv_bn_relu(32, 32, 1)),  # stride 4
        layer2=nn.Sequential(_conv_bn_relu(32, 48, 2), _conv_bn_relu(48, 48, 1)),  # stride 8
        layer3=nn.Sequential(_conv_bn_relu(48, 64, 2), _conv_bn_relu(64, 64, 1)),  # stride 16
    ))
    for m in body.modules():  # ResNet's initialisation (He, fan-out), as the ResNet backbones get
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return BackboneWithFPN(body, {"layer1": "0", "layer2": "1", "layer3": "2"}, [32, 48, 64],
                           SMALL_FPN_CHANNELS, extra_blocks=_NoExtraLevels())


def _resnet_backbone(backbone: str, returned_layers: list[int], extra_blocks: ExtraFPNBlock) -> BackboneWithFPN:
    # Random init: trainable BatchNorm and all 5 layers trainable, as torchvision's detector
    # builders choose when no pretrained weights are given.
    return resnet_fpn_backbone(backbone_name=backbone, weights=None, norm_layer=nn.BatchNorm2d,
                               trainable_layers=5, returned_layers=returned_layers, extra_blocks=extra_blocks)


def _retinanet_anchors(base_sizes: tuple[int, ...]) -> AnchorGenerator:
    """RetinaNet's anchors: per level 3 scales (x, x·2^(1/3), x·2^(2/3)) × 3 aspect ratios."""
    sizes = tuple((x, int(x * 2 ** (1.0 / 3)), int(x * 2 ** (2.0 / 3))) for x in base_sizes)
    return AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))


# ----------------------------------------------------------------------------- detectors

def _fcos(num_classes: int, backbone: str, genome: Genome | None, common: dict) -> FCOS:
    if backbone == "small":
        body, sizes, num_convs = small_backbone(), tuple((s,) for s in SMALL_STRIDES), 2
    else:
        body = _resnet_backbone(backbone, [2, 3, 4], LastLevelP6P7(256, 256))
        sizes, num_convs = ((8,), (16,), (32,), (64,), (128,)), 4  # torchvision's FCOS
    anchors = AnchorGenerator(sizes, ((1.0,),) * len(sizes))
    head = fcos.GenomeFCOSHead(body.out_channels, 1, num_classes, num_convs, genome=genome)
    return _detector_class(FCOS, common)(body, num_classes, anchor_generator=anchors, head=head, **common)


def _retinanet(num_classes: int, backbone: str, genome: Genome | None, common: dict) -> RetinaNet:
    if backbone == "small":
        body, anchors = small_backbone(), _retinanet_anchors((8, 16, 32))
    else:
        body = _resnet_backbone(backbone, [2, 3, 4], LastLevelP6P7(256, 256))
        anchors = _retinanet_anchors((16, 32, 64, 128, 256))
    # GroupNorm in the head, as torchvision's RetinaNet v2: trains from random init.
    groups = 16 if body.out_channels < 256 else 32
    head = retinanet.GenomeRetinaNetHead(body.out_channels, anchors.num_anchors_per_location()[0], num_classes,
                                         norm_layer=partial(nn.GroupNorm, groups), genome=genome)
    return _detector_class(RetinaNet, common)(body, num_classes, anchor_generator=anchors, head=head, **common)


def _faster_rcnn(num_classes: int, backbone: str, genome: Genome | None, common: dict) -> FasterRCNN:
    return _two_stage(num_classes, backbone, genome, common, masks=False)


def _mask_rcnn(num_classes: int, backbone: str, genome: Genome | None, common: dict) -> MaskRCNN:
    return _two_stage(num_classes, backbone, genome, common, masks=True)


def _two_stage(num_classes: int, backbone: str, genome: Genome | None, common: dict,
               masks: bool) -> FasterRCNN | MaskRCNN:
    """Faster R-CNN, or Mask R-CNN (``masks``: Faster R-CNN's detector plus torchvision's mask head)."""
    # RoIAlign's samples per bin (torchvision's 2), and on the small backbone the RoIs sampled per image.
    sampling, rois = 2, 128
    if backbone == "small" and masks:
        # The CPU scale: torchvision's RoIAlign backward on the CPU is single-threaded and, with the mask
        # pool beside the box pool, most of a step. One sample per bin and 32 sampled RoIs per image
        # (up to 8 positives: a canvas holds a few instances) make it a fraction of that.
        sampling, rois = 1, SMALL_MASK_RCNN_ROIS
    if backbone == "small":
        body = small_backbone()
        anchors = AnchorGenerator(((8, 12), (16, 24), (32, 48)), ((0.5, 1.0, 2.0),) * 3)
        levels = ["0", "1", "2"]
        representation = 256
        options: dict[str, Any] = dict(
            rpn_pre_nms_top_n_train=600, rpn_post_nms_top_n_train=300,
            rpn_pre_nms_top_n_test=300, rpn_post_nms_top_n_test=150, box_batch_size_per_image=rois)
    else:
        body = _resnet_backbone(backbone, [1, 2, 3, 4], LastLevelMaxPool())
        anchors = AnchorGenerator(((16,), (32,), (64,), (128,), (256,)), ((0.5, 1.0, 2.0),) * 5)
        levels = ["0", "1", "2", "3"]
        representation, options = 1024, {}
    pool = MultiScaleRoIAlign(featmap_names=levels, output_size=7, sampling_ratio=sampling)
    box_head = TwoMLPHead(body.out_channels * pool.output_size[0] ** 2, representation)
    # torchvision's Faster R-CNN counts background among its classes: C+1 outputs.
    predictor = FastRCNNPredictor(representation, num_classes + 1)
    options.update(common)
    if not masks:
        model = FasterRCNN(body, None, rpn_anchor_generator=anchors, box_roi_pool=pool, box_head=box_head,
                           box_predictor=predictor, **options)
        model.rpn = faster_rcnn.GenomeRegionProposalNetwork.like(model.rpn, genome)
        model.roi_heads = faster_rcnn.GenomeRoIHeads.like(model.roi_heads, genome)
        return model
    # torchvision's mask branch: RoIAlign 14×14 on the same levels, a conv head (4×256 on the ResNets,
    # as torchvision's; 2×64 on the small backbone, its FPN width), a 2× deconvolution to 28×28 logits.
    layers = (SMALL_FPN_CHANNELS,) * 2 if backbone == "small" else (256,) * 4
    mask_pool = MultiScaleRoIAlign(featmap_names=levels, output_size=14, sampling_ratio=sampling)
    model = MaskRCNN(body, None, rpn_anchor_generator=anchors, box_roi_pool=pool, box_head=box_head,
                     box_predictor=predictor, mask_roi_pool=mask_pool,
                     mask_head=MaskRCNNHeads(body.out_channels, layers, 1),
                     mask_predictor=MaskRCNNPredictor(layers[-1], layers[-1], num_classes + 1), **options)
    model.rpn = maskrcnn.GenomeMaskRPN.like(model.rpn, genome)
    model.roi_heads = maskrcnn.GenomeMaskRoIHeads.like(model.roi_heads, genome)
    return model


# ----------------------------------------------------------------------------- the registry

@dataclass(frozen=True)
class PAPBaseline:
    """A baseline trained with Parameterized AP Loss in place of every branch: named substitutions
    (:meth:`~gp_loss.pap.PAPParameters.named`), the rank's H1 gradient blocked (the paper's default) or not."""

    substitutions: str = "identity"
    block_h1: bool = True

    def params(self) -> PAPParameters:
        """The substitutions' parameters."""
        return PAPParameters.named(self.substitutions)


# What trains a baseline: per branch a loss of PAPER_LOSSES, with torchvision's coordinate box loss
# (``"l1"``, ``"smooth_l1"``) in place of the ``reg`` branch, or Mask R-CNN's code mask loss (``"dice"``)
# in place of the ``mask`` branch, or ``None``; a PAPBaseline; or ``None``: the detector's own
# (torchvision's) loss code.
Baseline = tuple[dict[str, str], str | None] | PAPBaseline | None

# FCOS and RetinaNet use sigmoid focal losses; Faster R-CNN's equivalents are cross-entropy based
# (BCE objectness, CE / IoU-weighted CE in the box head). ``pap``, ``pap_unblocked``: Parameterized
# AP Loss (Tao et al., NeurIPS 2021) with and without its gradient blocking (the paper's ablation).
_PAP_BASELINES: dict[str, Baseline] = {"pap": PAPBaseline(), "pap_unblocked": PAPBaseline(block_h1=False)}
_DENSE_BASELINES: dict[str, Baseline] = {
    "torchvision": None,
    "fl_giou": ({"cls": "sigmoid_focal", "reg": "giou"}, None),
    "fl_l1": ({"cls": "sigmoid_focal", "reg": "giou"}, "l1"),
    "fl_smooth_l1": ({"cls": "sigmoid_focal", "reg": "giou"}, "smooth_l1"),
    "cse_autoloss_a": ({"cls": "sigmoid_focal", "reg": "cse_autoloss_a_reg"}, None),
    "cse_autoloss_b": ({"cls": "cse_autoloss_b_cls", "reg": "cse_autoloss_b_reg"}, None),
    **_PAP_BASELINES,
}
_RPN = {"rpn_cls": "bce", "rpn_reg": "giou"}
_FASTER_RCNN_BASELINES: dict[str, Baseline] = {
    "torchvision": None,
    "fl_giou": ({**_RPN, "rcnn_cls": "ce", "rcnn_reg": "giou"}, None),
    "cse_autoloss_a": ({**_RPN, "rcnn_cls": "cse_autoloss_a_cls", "rcnn_reg": "cse_autoloss_a_reg"}, None),
    "cse_autoloss_b": ({**_RPN, "rcnn_cls": "cei", "rcnn_reg": "cse_autoloss_b_reg"}, None),
    **_PAP_BASELINES,
}
# Mask R-CNN: Faster R-CNN's box baselines with torchvision's mask BCE (``bce``); ``dice``: fl_giou's
# boxes with the soft Dice loss (code: :data:`~.maskrcnn.MASK_LOSSES`) training the mask in place
# of the branch's formula (``bce``, kept so the genome has every branch).
_MASK_BCE = {"mask": "bce"}
_MASK_RCNN_BASELINES: dict[str, Baseline] = {
    "torchvision": None,
    "fl_giou": ({**_RPN, "rcnn_cls": "ce", "rcnn_reg": "giou", **_MASK_BCE}, None),
    "dice": ({**_RPN, "rcnn_cls": "ce", "rcnn_reg": "giou", **_MASK_BCE}, "dice"),
}


@dataclass(frozen=True)
class DetectorSpec:
    """Everything gp-loss knows of one detector. A new detector is a module with its searchable
    heads (as :mod:`.fcos`), a builder here and one record in :data:`DETECTORS`.

    Attributes:
        name: as ``build_detector`` and the task option ``model`` spell it.
        build: ``(num_classes, backbone, genome, common) -> model``: the torchvision detector with the
            genome's heads; ``common`` goes to the detector class (the transform's sizes, the
            caller's options, an ``assigner``).
        branches: the genome's loss branches, name -> kind name, in the detector's order.
        loss_terms: each key of the detector's loss dict -> the branch that yields it (``None``: a
            term the genome does not touch).
        pap_loss_terms: the loss terms it returns in the PAP mode (:func:`set_pap`).
        label_offset: what a dataset category index 0..C-1 becomes as a target label (1 where the
            detector keeps label 0 for background).
        baselines: baseline name -> what trains it (:data:`Baseline`).
        masks: its training targets carry instance ``masks`` (the instance segmentation task's data).
    """

    name: str
    build: Callable[[int, str, Genome | None, dict], nn.Module]
    branches: Mapping[str, str]
    loss_terms: Mapping[str, str | None]
    pap_loss_terms: tuple[str, ...]
    label_offset: int
    baselines: Mapping[str, Baseline]
    masks: bool = False


DETECTORS: dict[str, DetectorSpec] = {spec.name: spec for spec in [
    DetectorSpec(name="fcos", build=_fcos, branches=fcos.BRANCHES, loss_terms=fcos.LOSS_TERMS,
                 pap_loss_terms=(fcos.PAP_TERM, "bbox_ctrness"), label_offset=0, baselines=_DENSE_BASELINES),
    DetectorSpec(name="retinanet", build=_retinanet, branches=retinanet.BRANCHES, loss_terms=retinanet.LOSS_TERMS,
                 pap_loss_terms=(retinanet.PAP_TERM,), label_offset=0, baselines=_DENSE_BASELINES),
    DetectorSpec(name="fasterrcnn", build=_faster_rcnn, branches=faster_rcnn.BRANCHES,
                 loss_terms=faster_rcnn.LOSS_TERMS,
                 pap_loss_terms=(faster_rcnn.RPN_PAP_TERM, faster_rcnn.RCNN_PAP_TERM),
                 label_offset=1, baselines=_FASTER_RCNN_BASELINES),
    DetectorSpec(name="maskrcnn", build=_mask_rcnn, branches=maskrcnn.BRANCHES, loss_terms=maskrcnn.LOSS_TERMS,
                 pap_loss_terms=maskrcnn.PAP_TERMS, label_offset=1, baselines=_MASK_RCNN_BASELINES, masks=True),
]}
# The detectors that train on boxes alone (the detection task's, and the detection benchmarks').
BOX_DETECTORS = tuple(name for name, spec in DETECTORS.items() if not spec.masks)


# ----------------------------------------------------------------------------- HPS-Det's dynamic assignment

def fpn_levels(backbone: str) -> int:
    """FCOS's and RetinaNet's FPN levels on ``backbone``: 3 for ``small``, 5 for the ResNets (P3-P7)."""
    return len(SMALL_STRIDES) if backbone == "small" else 5


def _detector_class(base: type, common: dict) -> type:
    """``base`` (FCOS, RetinaNet), or its dynamic-assignment subclass when ``common`` holds an ``assigner``."""
    return DYNAMIC_CLASSES[base] if common.get("assigner") is not None else base


def build_detector(name: str, num_classes: int, *, backbone: str, image_size: int, genome: Genome | None,
                   weights: str | None = None, assigner: DynamicAssigner | None = None, **options: Any) -> nn.Module:
    """torchvision's ``FCOS``, ``RetinaNet`` or ``FasterRCNN`` whose searchable losses come from ``genome``.

    Args:
        name: ``"fcos"``, ``"retinanet"``, ``"fasterrcnn"`` or ``"maskrcnn"``.
        num_classes: foreground classes C (Faster R-CNN gets C+1 outputs, background included).
        backbone: ``"resnet18"``, ``"resnet34"``, ``"resnet50"`` or ``"small"`` (see the module doc).
        image_size: the side of the (square) training images: the transform's ``min_size`` and
            ``max_size``, so it does not rescale them.
        genome: the loss branches (:attr:`DetectorSpec.branches`); ``None``: torchvision's own losses.
        weights: optional path to a state dict (``torch.load(..., weights_only=True)``): the whole
            detector's, or a torchvision ResNet's (loaded into the backbone body; ``fc`` is dropped).
        assigner: HPS-Det's dynamic sample assignment (FCOS, RetinaNet;
            :mod:`~gp_loss.tasks.detection.assignment`) in place of the detector's own; ``None``: its own.
        options: passed on to the detector class (e.g. ``score_thresh``, ``detections_per_img``,
            ``box_batch_size_per_image``), over this module's choices.

    Returns:
        The model, in training mode. Training: ``model(images, targets)`` -> the loss dict
        (keys: :attr:`DetectorSpec.loss_terms`); evaluation: ``model(images)`` -> per image ``boxes``,
        ``scores``, ``labels``. Targets' labels follow :func:`target_labels`.

    Raises:
        GpLossError: unknown name or backbone, a genome that does not fit the detector, a bad
            weights file (one line each).
    """
    spec = detector_spec(name)
    if backbone not in BACKBONES:
        raise GpLossError(f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise GpLossError(f"num_classes must be a positive integer, got {num_classes!r}")
    if not isinstance(image_size, int) or image_size < 32:
        raise GpLossError(f"image_size must be an integer of at least 32 pixels, got {image_size!r}")
    compile_branches(genome, spec.branches, name)  # fail before building anything
    common = {"min_size": image_size, "max_size": image_size, **options}
    if assigner is not None:  # HPS-Det
        if name not in UPPER_BOUNDS:  # the detectors its assignment is written for
            raise GpLossError(f"dynamic sample assignment is for {' and '.join(UPPER_BOUNDS)}, not {name}")
        common["assigner"] = assigner
    model = spec.build(num_classes, backbone, genome, common)
    if weights is not None:
        load_weights(model, weights)
    return model


def set_genome(model: nn.Module, genome: Genome | None, box_loss: str | None = None) -> None:
    """Switch a built detector's searchable heads to ``genome``'s losses (``None``: torchvision's).

    ``box_loss`` (``"l1"``, ``"smooth_l1"``; FCOS and RetinaNet): torchvision's coordinate loss on the
    encoded deltas trains the boxes instead of the genome's ``reg`` branch.
    """
    modules = [m for m in model.modules() if isinstance(m, _GENOME_MODULES)]
    if not modules:
        raise GpLossError(f"{type(model).__name__} has no searchable loss head (build it with build_detector)")
    if box_loss is not None and not isinstance(modules[0], (fcos.GenomeFCOSHead, retinanet.GenomeRetinaNetHead)):
        raise GpLossError(f"a box loss ({box_loss}) in place of the reg branch is offered for FCOS and RetinaNet, "
                          f"not {type(model).__name__}")
    for m in modules:
        if box_loss is None:
            m.set_genome(genome)
        else:
            m.set_genome(genome, box_loss)


def set_pap(model: nn.Module, params: PAPParameters | None, *, top_k: int = DEFAULT_TOP_K,
            block_h1_gradient: bool = True, per_image: bool = False) -> None:
    """Train a built detector with Parameterized AP Loss (Tao et al., NeurIPS 2021); ``None``: off.

    While on, PAP overrides the heads' genome (or torchvision's) losses: FCOS and RetinaNet
    return one term ``pap`` for their classification and box branches (FCOS keeps
    ``bbox_ctrness``), Faster R-CNN ``rpn_pap`` and ``rcnn_pap`` (:attr:`DetectorSpec.pap_loss_terms`).
    Turning it off gives back what :func:`set_genome` set, unchanged.

    Args:
        params: the substitutions and regression gradient scale (:class:`~gp_loss.pap.PAPParameters`).
        top_k: candidates kept per ranking (the k highest valid logits; 1e5 as the official head).
        block_h1_gradient: detach the rank's H1 term (the paper's default; ``False``: the ablation).
        per_image: rank within each image instead of over the whole batch.

    Raises:
        GpLossError: a model without searchable heads, or bad settings (one line).
    """
    modules = [m for m in model.modules() if isinstance(m, _GENOME_MODULES)]
    if not modules:
        raise GpLossError(f"{type(model).__name__} has no searchable loss head (build it with build_detector)")
    for m in modules:
        m.set_pap(params, top_k, block_h1_gradient, per_image)


# ----------------------------------------------------------------------------- weights

def load_weights(model: nn.Module, path: str) -> None:
    """Load a state dict file into a detector built by :func:`build_detector` (or a ResNet's into its body).

    Raises:
        GpLossError: one line naming the file and what does not fit.
    """
    state = read_state_dict(path)
    target: nn.Module = model
    if any(k.startswith("body.") for k in state) and any(k.startswith("fpn.") for k in state):
        # a backbone with its FPN alone (the shipped pretrained small one: gp_loss.models.pretrain)
        target = model.backbone
    elif "conv1.weight" in state and "layer1.0.conv1.weight" in state:  # a bare torchvision ResNet
        body = getattr(getattr(model, "backbone", None), "body", None)
        if body is None or "conv1.weight" not in body.state_dict():
            raise GpLossError(f"weights file {path}: a ResNet's weights, but the detector's backbone is not a ResNet")
        target = body
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}  # the classifier is not used
    load_state(target, state, path, f"the {type(model).__name__} built")
