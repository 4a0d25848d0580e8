"""The proxy classifier of the classification task: two conv blocks and a linear head."""
from __future__ import annotations

import torch
from torch import nn


class ConvNet(nn.Module):
    """Conv-ReLU-MaxPool ×2, flatten, Linear.

    ``forward(images N×in_channels×S×S) -> logits N×classes``, with S divisible by 4
    (8 for the built-in digits). Small enough to train in well under a second per
    epoch on one CPU thread for the digits data.
    """

    def __init__(self, in_channels: int, classes: int, image_size: int, width: int = 8):
        super().__init__()
        if image_size % 4:
            raise ValueError(f"image_size must be divisible by 4, got {image_size}")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.head = nn.Linear(2 * width * (image_size // 4) ** 2, classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images).flatten(1))
