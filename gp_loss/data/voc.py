"""Pascal VOC-layout segmentation data: a split's images and class-index masks, checked file by file.

A VOC folder ``ROOT`` holds

- ``ROOT/ImageSets/Segmentation/<split>.txt``: one image name (a file stem) per line, blank
  lines ignored;
- ``ROOT/JPEGImages/<name>.jpg`` (or ``.png`` / ``.jpeg`` when there is no ``.jpg``);
- ``ROOT/SegmentationClass/<name>.png``: the class of each pixel, 255 for void (ignored)
  pixels. An index PNG (mode ``L``) or a palette PNG (mode ``P``, VOC's own: the palette
  index is the class) is read as is; an RGB PNG is mapped back through the VOC colour map
  (:func:`voc_colormap`), and a colour that is not in it is an error.

:func:`open_voc_split` checks the folder, the split file, every name in it (a plain file
stem: no folder separators, ``..``, NUL or absolute paths, so a split file cannot reach
outside ``ROOT``) and that every image and mask exists, before anything is decoded;
iterating over the result then reads one image and mask at a time (so a caller can shrink
each one as it comes, without holding a large split in memory at full resolution) and
checks each image's size (1 to 65535 pixels a side: :mod:`gp_loss.data.checks`) and each
mask's size and classes. Every problem is one
:class:`~gp_loss.errors.GpLossError` naming the file and how to fix it.

:func:`write_label_png` writes a class-index map as VOC does: a palette PNG with the VOC
colour map.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Iterator, NamedTuple

import numpy as np
import torch

from gp_loss.data.checks import check_image_size, image_read_errors
from gp_loss.errors import GpLossError

IMAGES = "JPEGImages"
MASKS = "SegmentationClass"
SPLITS = ("ImageSets", "Segmentation")
IMAGE_SUFFIXES = (".jpg", ".png", ".jpeg")
IGNORE = 255                     # a mask's void pixels: no class, left out of the loss and the metrics
MAX_CLASSES = 255                # class indices 0..254 (uint8, 255 reserved for IGNORE)
LAYOUT = "a VOC folder holds JPEGImages/, SegmentationClass/ and ImageSets/Segmentation/<split>.txt"

VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
               "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
               "train", "tvmonitor")
INDEX_MODES = ("L", "P", "I", "I;16")  # PNG modes whose pixel values are the class indices


def voc_colormap(n: int = 256) -> np.ndarray:
    """VOC's colour map: n×3 uint8, colour k of class k (0 black, 1 dark red, ..., 255 the void colour)."""
    cmap = np.zeros((n, 3), dtype=np.uint8)
    for k in range(n):
        c, rgb = k, [0, 0, 0]
        for bit in range(8):
            for channel in range(3):
                rgb[channel] |= ((c >> channel) & 1) << (7 - bit)
            c >>= 3
        cmap[k] = rgb
    return cmap


class VocSample(NamedTuple):
    """One image of a split: its name, the image (3×H×W float32 in [0, 1]) and its mask (H×W uint8)."""

    name: str
    image: torch.Tensor
    label: torch.Tensor


def check_stem(name: str, where: str, what: str = "image name") -> str:
    """``name`` if it is a plain file stem, else a :class:`GpLossError` (no path can leave the folder)."""
    if (not name or "/" in name or "\\" in name or ".." in name or "\x00" in name
            or PurePosixPath(name).is_absolute() or PureWindowsPath(name).is_absolute()
            or PureWindowsPath(name).drive):
        raise GpLossError(f"{where}: {what} {name!r} is not a plain file stem (no '/', '\\', '..', NUL or "
                          f"absolute paths): give the name alone, as in 2007_000032")
    return name


def check_root(root: str | Path) -> Path:
    """``root`` as a Path, if it is a folder with VOC's three subfolders."""
    root = Path(root)
    if not root.is_dir():
        raise GpLossError(f"VOC folder {root} does not exist or is not a folder: give a folder "
                          f"({LAYOUT}), a COCO instances .json, or 'digits'")
    for sub in (IMAGES, MASKS, str(Path(*SPLITS))):
        if not (root / sub).is_dir():
            raise GpLossError(f"{root}: no {sub}/ folder: {LAYOUT}")
    return root


def read_split_names(root: str | Path, split: str) -> list[str]:
    """The names listed in ``root``'s ``ImageSets/Segmentation/<split>.txt``, checked, in file order."""
    root = check_root(root)
    folder = root.joinpath(*SPLITS)
    check_stem(split, str(folder), "split")
    file = folder / f"{split}.txt"
    if not file.is_file():
        found = sorted(p.stem for p in folder.glob("*.txt"))
        raise GpLossError(f"split file {file} is missing: list the {split} images there, one name per line, "
                          f"or choose another split (found: {', '.join(found) or 'none'})")
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise GpLossError(f"cannot read split file {file}: {err}") from None
    names = []
    for n, line in enumerate(text.splitlines(), 1):
        name = line.strip()
        if name:
            names.append(check_stem(name, f"{file}: line {n}"))
    if not names:
        raise GpLossError(f"split file {file} lists no images: give one image name per line")
    return names


def _image_file(root: Path, name: str) -> Path | None:
    for suffix in IMAGE_SUFFIXES:
        file = root / IMAGES / f"{name}{suffix}"
        if file.is_file():
            return file
    return None


def read_image(file: Path, fix: str) -> torch.Tensor:
    """An image file as 3×H×W float32 in [0, 1] (RGB); ``fix`` ends the message of an unreadable file."""
    from PIL import Image

    try:
        with Image.open(file) as pil:
            check_image_size(*pil.size, str(file), f"resize it, or {fix}")  # before decoding its pixels
            array = np.asarray(pil.convert("RGB"), dtype=np.uint8)
    except image_read_errors() as err:
        raise GpLossError(f"cannot read image {file}: {err}: {fix}") from None
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


def _rgb_to_index(array: np.ndarray, file: Path) -> np.ndarray:
    """H×W×3 VOC-coloured pixels -> H×W class indices (an unknown colour is an error)."""
    cmap = voc_colormap().astype(np.int64)
    packed = (array[..., 0].astype(np.int64) << 16) | (array[..., 1].astype(np.int64) << 8) | array[..., 2]
    lookup = {int(p): k for k, p in enumerate((cmap[:, 0] << 16) | (cmap[:, 1] << 8) | cmap[:, 2])}
    colours, inverse = np.unique(packed, return_inverse=True)
    index = np.empty(len(colours), dtype=np.uint8)
    for i, colour in enumerate(colours.tolist()):
        if colour not in lookup:
            row, col = (int(v[0]) for v in np.nonzero(packed == colour))
            raise GpLossError(f"{file}: colour {(colour >> 16, (colour >> 8) & 255, colour & 255)} at row {row}, "
                              f"column {col} is not in the VOC colour map: save the mask as an index (mode L) "
                              f"or palette (mode P) PNG of class indices, 255 for void")
        index[i] = lookup[colour]
    return index[inverse.reshape(packed.shape)]


def read_label(file: Path, num_classes: int) -> np.ndarray:
    """A mask file as H×W uint8 class indices: each below ``num_classes``, or 255 (void)."""
    from PIL import Image

    try:
        with Image.open(file) as pil:
            check_image_size(*pil.size, str(file), "a mask has its image's width and height")
            mode = pil.mode
            if mode in INDEX_MODES:
                array = np.asarray(pil)
            elif mode == "RGB":
                array = _rgb_to_index(np.asarray(pil), file)
            else:
                raise GpLossError(f"{file}: a {mode} image is not a class mask: save it as an index (mode L) or "
                                  f"palette (mode P) PNG of class indices, 255 for void (or VOC-coloured RGB)")
    except image_read_errors() as err:
        raise GpLossError(f"cannot read mask {file}: {err}: replace it with an index or palette PNG") from None
    bad = ((array >= num_classes) & (array != IGNORE)) | (array < 0)
    if bad.any():
        row, col = (int(v[0]) for v in np.nonzero(bad))
        raise GpLossError(f"{file}: class {int(array[row, col])} at row {row}, column {col} is not below "
                          f"num_classes {num_classes} (255 marks void pixels): fix the mask or set num_classes "
                          f"to the number of classes (background included)")
    return array.astype(np.uint8)


@dataclass
class VocSplit:
    """A checked split of a VOC folder: iterate to read its images and masks one at a time, in file order."""

    root: Path
    split: str
    split_file: Path
    names: list[str]
    image_files: list[Path]
    mask_files: list[Path]
    num_classes: int

    def __len__(self) -> int:
        return len(self.names)

    def read(self, i: int) -> VocSample:
        """Sample ``i``: its image and mask, checked against each other and ``num_classes``."""
        name, image_file, mask_file = self.names[i], self.image_files[i], self.mask_files[i]
        image = read_image(image_file, f"replace it, or remove {name} from {self.split_file}")
        label = read_label(mask_file, self.num_classes)
        (h, w), (mh, mw) = image.shape[1:], label.shape
        if (mh, mw) != (h, w):
            raise GpLossError(f"{mask_file}: the mask is {mw}×{mh} pixels but its image {image_file} is {w}×{h}: "
                              f"a mask must have its image's width and height")
        return VocSample(name, image, torch.from_numpy(label))

    def __iter__(self) -> Iterator[VocSample]:
        for i in range(len(self)):
            yield self.read(i)


def open_voc_split(root: str | Path, split: str, num_classes: int) -> VocSplit:
    """Check ``root``, its ``split`` file and that every listed image and mask exists (see the module docstring)."""
    if not 1 <= num_classes <= MAX_CLASSES:
        raise GpLossError(f"num_classes must be between 1 and {MAX_CLASSES} (255 marks void pixels), "
                          f"got {num_classes}")
    root = check_root(root)
    names = read_split_names(root, split)
    split_file = root.joinpath(*SPLITS) / f"{split}.txt"
    image_files, mask_files = [], []
    for name in names:
        image = _image_file(root, name)
        if image is None:
            raise GpLossError(f"{split_file}: image {root / IMAGES / name}.jpg (or .png, .jpeg) is missing: "
                              f"add it, or remove {name} from the split file")
        mask = root / MASKS / f"{name}.png"
        if not mask.is_file():
            raise GpLossError(f"{split_file}: mask {mask} is missing: add it, or remove {name} from the split file")
        image_files.append(image)
        mask_files.append(mask)
    return VocSplit(root, split, split_file, names, image_files, mask_files, num_classes)


def read_voc_split(root: str | Path, split: str, num_classes: int) -> list[VocSample]:
    """Every sample of a split at full resolution (small splits; a large one is read through :func:`open_voc_split`)."""
    return list(open_voc_split(root, split, num_classes))


def write_label_png(path: str | Path, label: np.ndarray) -> None:
    """Write an H×W uint8 class-index map as a palette PNG with VOC's colour map (VOC's own mask format)."""
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(label, dtype=np.uint8))  # mode L; the palette makes it P
    image.putpalette(voc_colormap().tobytes())
    image.save(path)
