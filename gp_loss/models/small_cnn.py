"""A small CNN for 8×8 images: the filters' probe network.

The rejection protocol's predictions come from a randomly initialised one, and the
model-optimisation simulation trains one (:mod:`gp_loss.probes`). The proxy
classifier of the classification task is :class:`~gp_loss.models.conv_net.ConvNet`.
"""
from __future__ import annotations

import torch
from torch import nn


class SmallCNN(nn.Module):
    """Conv(1→c)-ReLU-Conv(c→2c)-ReLU-pool-Linear, for 1×8×8 inputs.

    ``forward(images N×1×8×8) -> logits N×classes``. With ``dense=True`` it
    returns per-pixel logits N×classes×8×8 instead (a tiny segmenter).
    """

    def __init__(self, classes: int = 10, width: int = 16, dense: bool = False):
        super().__init__()
        self.dense = dense
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(),
        )
        self.head = nn.Conv2d(2 * width, classes, 1) if dense else nn.Linear(2 * width, classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        f = self.features(images)
        if self.dense:
            return self.head(f)
        return self.head(f.mean((2, 3)))
