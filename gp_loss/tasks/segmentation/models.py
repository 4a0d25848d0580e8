"""The segmentation task's networks: torchvision's segmentation models, and a CPU-scale one.

- ``lraspp_mobilenet_v3_large``, ``deeplabv3_mobilenet_v3_large``, ``deeplabv3_resnet50``,
  ``fcn_resnet50``: torchvision's builders with ``num_classes`` of the data, no auxiliary
  head, and nothing downloaded (``weights=None, weights_backbone=None``): randomly initialised
  unless the user gives a weights file.
- ``small``: a CPU-scale configuration for laptops and CI: a narrow, shallow conv body
  (strides 2 to 16) under torchvision's own LR-ASPP head (Howard et al., "Searching for
  MobileNetV3", ICCV 2019), which fuses the stride-8 and stride-16 features and upsamples
  to the input size.

Every model maps B×3×H×W images to ``{"out": B×C×H×W logits}``.

A weights file (``torch.load(..., weights_only=True)``) is either the whole model's state
dict, or that of its backbone: the ``small`` body's (``stem.*``, ``layer1.*``, ...; the
shipped pretrained one, :mod:`gp_loss.models.pretrain`), or one as torchvision publishes it:
a ResNet-50 (``conv1.weight``, ``layer1...``; its ``fc`` is dropped) or a MobileNetV3-Large
(``features.*``; its ``classifier`` is dropped).
"""
from __future__ import annotations

from collections import OrderedDict

from torch import nn
from torchvision.models import segmentation
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.segmentation.lraspp import LRASPP

from gp_loss.errors import GpLossError
from gp_loss.models.weights import load_state, read_state_dict

MODELS = ("small", "lraspp_mobilenet_v3_large", "deeplabv3_mobilenet_v3_large", "deeplabv3_resnet50",
          "fcn_resnet50")
# The LR-ASPP head's inner width for the small body (torchvision's default, 128, is sized for MobileNetV3).
SMALL_INTER_CHANNELS = 32


def _conv_bn_relu(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def small_body() -> nn.Sequential:
    """The CPU-scale body: 3×3 conv + BN + ReLU stages ``stem``, ``layer1``..``layer3`` at strides 2, 4, 8
    (32 channels) and 16 (64 channels), He-initialised (fan-out) as torchvision's bodies are."""
    body = nn.Sequential(OrderedDict(
        stem=_conv_bn_relu(3, 16, 2),
        layer1=nn.Sequential(_conv_bn_relu(16, 24, 2), _conv_bn_relu(24, 24, 1)),
        layer2=nn.Sequential(_conv_bn_relu(24, 32, 2), _conv_bn_relu(32, 32, 1)),
        layer3=nn.Sequential(_conv_bn_relu(32, 64, 2), _conv_bn_relu(64, 64, 1)),
    ))
    for m in body.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return body


def small_model(num_classes: int) -> LRASPP:
    """The ``small`` network: B×3×H×W -> {"out": B×num_classes×H×W}.

    Body: 3×3 conv + BN + ReLU stages at strides 2, 4, 8 (32 channels, the head's "low"
    input) and 16 (64 channels, "high"), under torchvision's :class:`LRASPP` head.
    """
    backbone = IntermediateLayerGetter(small_body(), {"layer2": "low", "layer3": "high"})
    return LRASPP(backbone, 32, 64, num_classes, inter_channels=SMALL_INTER_CHANNELS)


def build_model(name: str, num_classes: int, weights: str | None = None) -> nn.Module:
    """A fresh network ``name`` (:data:`MODELS`) with ``num_classes`` outputs, initialised from torch's RNG."""
    if name not in MODELS:
        raise GpLossError(f"unknown segmentation model {name!r}; choose one of {', '.join(MODELS)}")
    if name == "small":
        model = small_model(num_classes)
    else:
        options = {} if name.startswith("lraspp") else {"aux_loss": False}
        model = getattr(segmentation, name)(weights=None, weights_backbone=None, num_classes=num_classes, **options)
    if weights:
        load_weights(model, weights, name)
    return model


def load_weights(model: nn.Module, path: str, name: str) -> None:
    """Load the model's or its backbone's state dict from ``path`` (see the module doc); one line if it does not fit."""
    state = read_state_dict(path)
    target, what = model, f"the {name} built"
    if "conv1.weight" in state and "layer1.0.conv1.weight" in state:  # a bare torchvision ResNet
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        target, what = model.backbone, f"the backbone of the {name} built"
    elif "stem.0.weight" in state and name == "small":  # the small body alone (gp_loss.models.pretrain)
        target, what = model.backbone, f"the backbone of the {name} built"
    elif "features.0.0.weight" in state:  # a bare torchvision MobileNetV3: the backbone holds its features
        state = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
        target, what = model.backbone, f"the backbone of the {name} built"
    load_state(target, state, path, what)
