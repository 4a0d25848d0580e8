"""Users' own images: ``torchvision.datasets.ImageFolder`` loaded into memory.

One sub-folder per class (``root/cat/1.png``, ``root/dog/2.png``, ...). Images
are resized to a square and held as one tensor, which suits the small datasets
a proxy search trains on; the task splits them by seed. Each image's size is
checked (1 to 65535 pixels a side: :mod:`gp_loss.data.checks`) before its pixels
are decoded, and an unreadable image is one line naming the file.
"""
from __future__ import annotations

from pathlib import Path

import torch

from gp_loss.data.checks import check_image_size, image_read_errors
from gp_loss.errors import GpLossError


def _load_rgb(path: str):
    """torchvision's default loader (PIL, RGB), with the image's size checked first."""
    from PIL import Image

    with Image.open(path) as pil:
        check_image_size(*pil.size, path, "resize it, or remove it from the folder")
        return pil.convert("RGB")


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
        dataset = datasets.ImageFolder(str(root), transform=transforms.Compose(steps), loader=_load_rgb)
    except (FileNotFoundError, RuntimeError) as err:
        raise GpLossError(f"cannot read images under {root}: {err}") from None
    if len(dataset.classes) < 2:
        raise GpLossError(f"{root} has {len(dataset.classes)} class folder(s); classification needs at least 2")
    items = []
    for i in range(len(dataset)):
        try:
            items.append(dataset[i])
        except image_read_errors() as err:  # PIL: UnidentifiedImageError (an OSError), truncated files
            raise GpLossError(f"cannot read image {dataset.samples[i][0]}: {err}; fix or remove it") from None
    images, labels = zip(*items)
    return torch.stack(images), torch.tensor(labels, dtype=torch.int64), list(dataset.classes)


def class_names(root: str | Path) -> list[str]:
    """The class names of an ImageFolder root, in label order (its sub-folders, sorted as torchvision
    sorts them), without reading an image; ``[]`` if it has no sub-folder."""
    from torchvision.datasets.folder import find_classes

    try:
        return find_classes(str(root))[0]
    except FileNotFoundError:  # no class folder: the loader names that problem when it reads the root
        return []


def check_same_classes(classes: list[str], reference: list[str], what: str, reference_what: str) -> None:
    """Raise :class:`GpLossError` unless ``classes`` equals ``reference``: the same names in the same order.

    ``what`` and ``reference_what`` name the two folders in the message, e.g. ``"--val-data /x/val"``
    and ``"--data /x/train"``; the message lists the missing and the extra class names.
    """
    if classes == reference:
        return
    missing = [c for c in reference if c not in classes]
    extra = [c for c in classes if c not in reference]
    parts = []
    if missing:
        parts.append(f"missing {', '.join(map(repr, missing))}")
    if extra:
        parts.append(f"extra {', '.join(map(repr, extra))}")
    if not parts:
        parts.append(f"the same names in another order ({', '.join(map(repr, classes))})")
    raise GpLossError(f"{what}: its class folders differ from {reference_what}'s: {'; '.join(parts)}; "
                      f"name its sub-folders as the training folder's")
