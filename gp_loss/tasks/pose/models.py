"""The pose task's networks: SimpleBaseline (Xiao et al., ECCV 2018) on a ResNet or a CPU-scale body.

A backbone maps B×3×h×w crops to features at stride 32 (torchvision's ResNet-18/34/50 up to
``layer4``) or 16 (``small``); SimpleBaseline's head upsamples them with 4×4 transposed
convolutions of stride 2 (each with batch norm and ReLU) to stride 4, and a 1×1 convolution
predicts one heatmap per keypoint: B×K×h/4×w/4. The last layer starts with small weights
(normal, std 0.001) and zero bias, as SimpleBaseline's, so training starts from flat heatmaps.
Everything is initialised from torch's RNG; nothing is downloaded.
"""
from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn

from gp_loss.errors import GpLossError
from gp_loss.tasks.segmentation.models import small_body as segmentation_small_body

MODELS = ("small", "resnet18", "resnet34", "resnet50")
HEATMAP_STRIDE = 4  # crop pixels per heatmap cell


def small_body() -> tuple[nn.Module, int, int]:
    """The ``small`` body (the segmentation task's CPU-scale body): strides 2 to 16, 64 channels out."""
    return segmentation_small_body(), 64, 16


def resnet_body(name: str) -> tuple[nn.Module, int, int]:
    """torchvision's ResNet ``name`` up to ``layer4`` (stride 32), randomly initialised."""
    from torchvision import models

    net = getattr(models, name)(weights=None)
    body = nn.Sequential(OrderedDict((k, getattr(net, k)) for k in
                                     ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")))
    return body, net.fc.in_features, 32


class SimpleBaseline(nn.Module):
    """Backbone + deconvolution head: B×3×h×w crops -> B×K×(h/4)×(w/4) heatmaps.

    ``h`` and ``w`` are multiples of the backbone's stride (:func:`body_stride`).
    """

    def __init__(self, body: nn.Module, channels: int, stride: int, keypoints: int, head_channels: int):
        super().__init__()
        self.backbone = body
        layers: list[nn.Module] = []
        cin = channels
        for _ in range(int(math.log2(stride // HEATMAP_STRIDE))):
            layers += [nn.ConvTranspose2d(cin, head_channels, 4, 2, 1, bias=False), nn.BatchNorm2d(head_channels),
                       nn.ReLU(inplace=True)]
            cin = head_channels
        self.deconv = nn.Sequential(*layers)
        for m in self.deconv.modules():
            if isinstance(m, nn.ConvTranspose2d):
                nn.init.normal_(m.weight, std=0.001)
        self.final = nn.Conv2d(cin, keypoints, 1)
        nn.init.normal_(self.final.weight, std=0.001)
        nn.init.zeros_(self.final.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.final(self.deconv(self.backbone(x)))


def body_stride(name: str) -> int:
    """The stride of model ``name``'s backbone: crop sides must be multiples of it."""
    return 16 if name == "small" else 32


def build_model(name: str, keypoints: int) -> SimpleBaseline:
    """A fresh SimpleBaseline with backbone ``name`` (:data:`MODELS`) predicting ``keypoints`` heatmaps."""
    if name not in MODELS:
        raise GpLossError(f"unknown pose model {name!r}; choose one of {', '.join(MODELS)}")
    if name == "small":
        body, channels, stride = small_body()
        return SimpleBaseline(body, channels, stride, keypoints, head_channels=64)
    body, channels, stride = resnet_body(name)
    return SimpleBaseline(body, channels, stride, keypoints, head_channels=256)  # SimpleBaseline's width
