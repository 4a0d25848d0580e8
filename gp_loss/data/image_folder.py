"""Users' own images: ``torchvision.datasets.ImageFolder`` loaded into memory.

One sub-folder per class (``root/cat/1.png``, ``root/dog/2.png``, ...). Images
are resized to a square and held as one tensor, which suits the small datasets
a proxy search trains on; the task splits them by seed.
"""
from __future__ import annotations

from pathlib import Path

import torch

from gp_loss.errors import GpLossError


def image_folder_tensors(root: str | Path, image_size: int = 32, grayscale: bool = False
                         ) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Images N×C×S×S in [0, 1] (C = 1 if ``grayscale`` else 3), labels N, class names."""
    from torchvision import datasets, transforms

    root = Path(root)
    if not root.is_dir():
        raise GpLossError(f"data path {root} is not a directory: give an ImageFolder root "
                          f"(one sub-folder of images per class) or 'digits' for the built-in data")
    steps = [transforms.Resize((image_size, image_size))]
    if grayscale:
        steps.append(transforms.Grayscale(1))
    steps.append(transforms.ToTensor())
    try:
        dataset = datasets.ImageFolder(str(root), transform=transforms.Compose(steps))
    except (FileNotFoundError, RuntimeError) as err:
        raise GpLossError(f"cannot read images under {root}: {err}") from None
    if len(dataset.classes) < 2:
        raise GpLossError(f"{root} has {len(dataset.classes)} class folder(s); classification needs at least 2")
    items = []
    for i in range(len(dataset)):
        try:
            items.append(dataset[i])
        except (OSError, ValueError) as err:  # PIL: UnidentifiedImageError (an OSError), truncated files
            raise GpLossError(f"cannot read image {dataset.samples[i][0]}: {err}; fix or remove it") from None
    images, labels = zip(*items)
    return torch.stack(images), torch.tensor(labels, dtype=torch.int64), list(dataset.classes)
