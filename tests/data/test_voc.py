"""VOC-layout segmentation folders: index, palette and VOC-coloured masks read as class indices; every
malformed folder, split file, image or mask is one line naming the file; split names cannot leave the folder."""
import numpy as np
import pytest
import torch
from PIL import Image

from gp_loss.data.voc import (VOC_CLASSES, check_stem, open_voc_split, read_label, read_split_names, read_voc_split,
                              voc_colormap, write_label_png)
from gp_loss.errors import GpLossError


def block_label(h: int, w: int) -> np.ndarray:
    """Left half class 1, right half class 2, a void (255) square at the top left."""
    label = np.ones((h, w), dtype=np.uint8)
    label[:, w // 2:] = 2
    label[:4, :4] = 255
    return label


def make_voc(root, sizes: dict, splits: dict, mode: str = "P", suffix: str = ".jpg"):
    """A VOC folder at ``root``: per name an RGB image of (h, w) and its block mask saved as ``mode``."""
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, (h, w) in sizes.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / "JPEGImages" / f"{name}{suffix}")
        save_label(root / "SegmentationClass" / f"{name}.png", block_label(h, w), mode)
    for split, names in splits.items():
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))
    return root


def save_label(path, label: np.ndarray, mode: str) -> None:
    if mode == "P":
        write_label_png(path, label)
    elif mode == "L":
        Image.fromarray(label).save(path)
    else:  # VOC colours as RGB
        Image.fromarray(voc_colormap()[label]).save(path)


def test_colour_map_is_vocs():
    cmap = voc_colormap()
    assert cmap.shape == (256, 3) and len({tuple(c) for c in cmap}) == 256
    assert cmap[:4].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0]]
    assert cmap[15].tolist() == [192, 128, 128] and cmap[255].tolist() == [224, 224, 192]  # person, void
    assert len(VOC_CLASSES) == 21 and VOC_CLASSES[0] == "background"


@pytest.mark.parametrize("mode", ["P", "L", "RGB"])
def test_palette_index_and_coloured_masks_read_the_same(tmp_path, mode):
    label = block_label(10, 12)
    label[5, 5] = 20
    save_label(tmp_path / "m.png", label, mode)
    assert Image.open(tmp_path / "m.png").mode == mode
    read = read_label(tmp_path / "m.png", 21)
    assert read.dtype == np.uint8 and (read == label).all()


def test_non_square_split_reads_in_file_order(tmp_path):
    root = make_voc(tmp_path / "voc", {"wide": (40, 64), "tall": (64, 40)}, {"train": ["tall", "", "wide", "  "]})
    samples = read_voc_split(root, "train", 3)
    assert [s.name for s in samples] == ["tall", "wide"]  # blank lines ignored
    for s, (h, w) in zip(samples, [(64, 40), (40, 64)]):
        assert s.image.shape == (3, h, w) and s.image.dtype == torch.float32
        assert 0 <= s.image.min() and s.image.max() <= 1
        assert s.label.dtype == torch.uint8 and (s.label.numpy() == block_label(h, w)).all()


def test_png_and_jpeg_images_are_found_when_there_is_no_jpg(tmp_path):
    root = make_voc(tmp_path / "voc", {"a": (32, 32)}, {"train": ["a", "b"]}, suffix=".png")
    make_voc(root, {"b": (32, 40)}, {}, suffix=".jpeg")
    split = open_voc_split(root, "train", 3)
    assert [f.name for f in split.image_files] == ["a.png", "b.jpeg"]
    image = np.asarray(Image.open(root / "JPEGImages" / "a.png"), dtype=np.float32) / 255
    assert torch.equal(split.read(0).image, torch.from_numpy(image).permute(2, 0, 1))  # PNG: lossless


def test_write_label_png_is_a_voc_palette_png(tmp_path):
    label = np.arange(12, dtype=np.uint8).reshape(3, 4)
    label[0, 0] = 255
    write_label_png(tmp_path / "m.png", label)
    with Image.open(tmp_path / "m.png") as pil:
        assert pil.mode == "P"
        assert (np.asarray(pil) == label).all()
        assert (np.asarray(pil.convert("RGB")) == voc_colormap()[label]).all()


@pytest.fixture
def voc(tmp_path):
    return make_voc(tmp_path / "voc", {"a": (32, 40), "b": (40, 32)}, {"train": ["a", "b"]})


def _error(call) -> str:
    with pytest.raises(GpLossError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    return message


def _read(root, split="train", num_classes=3):
    return lambda: read_voc_split(root, split, num_classes)


def test_missing_root_subfolder_or_split_file(tmp_path, voc):
    message = _error(_read(tmp_path / "nope"))
    assert str(tmp_path / "nope") in message and "does not exist" in message and "JPEGImages/" in message
    (tmp_path / "file").write_text("")
    assert "is not a folder" in _error(_read(tmp_path / "file"))
    (voc / "SegmentationClass").rename(voc / "Masks")
    message = _error(_read(voc))
    assert f"{voc}: no SegmentationClass/ folder" in message
    (voc / "Masks").rename(voc / "SegmentationClass")
    message = _error(_read(voc, "val"))
    assert str(voc / "ImageSets" / "Segmentation" / "val.txt") in message and "missing" in message
    assert "(found: train)" in message


def test_empty_split(voc):
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("\n  \n")
    message = _error(_read(voc, "val"))
    assert str(voc / "ImageSets" / "Segmentation" / "val.txt") in message and "lists no images" in message


def test_missing_image_or_mask(voc):
    (voc / "JPEGImages" / "b.jpg").unlink()
    message = _error(_read(voc))
    assert str(voc / "JPEGImages" / "b") + ".jpg (or .png, .jpeg) is missing" in message
    assert "remove b from the split file" in message
    (voc / "JPEGImages" / "b.png").write_bytes(b"")
    (voc / "SegmentationClass" / "a.png").unlink()
    message = _error(_read(voc))
    assert f"mask {voc / 'SegmentationClass' / 'a.png'} is missing" in message


def test_unreadable_image_or_mask(voc):
    (voc / "JPEGImages" / "b.jpg").write_bytes(b"not a jpeg")
    message = _error(_read(voc))
    assert f"cannot read image {voc / 'JPEGImages' / 'b.jpg'}" in message and "remove b from" in message
    (voc / "SegmentationClass" / "a.png").write_text("not a png")
    message = _error(_read(voc))
    assert f"cannot read mask {voc / 'SegmentationClass' / 'a.png'}" in message


def test_mask_size_differs_from_its_image(voc):
    write_label_png(voc / "SegmentationClass" / "b.png", block_label(32, 40))  # image b is 40×32
    message = _error(_read(voc))
    assert str(voc / "SegmentationClass" / "b.png") in message
    assert "the mask is 40×32 pixels but its image" in message and "is 32×40" in message


def test_class_at_or_above_num_classes(voc):
    label = block_label(40, 32)
    label[7, 9] = 3
    write_label_png(voc / "SegmentationClass" / "b.png", label)
    message = _error(_read(voc, num_classes=3))
    assert str(voc / "SegmentationClass" / "b.png") in message
    assert "class 3 at row 7, column 9 is not below num_classes 3" in message
    assert read_voc_split(voc, "train", 4)[1].label[7, 9] == 3  # 255 (void) is fine with either


def test_unknown_colour_or_mode(voc):
    label = voc_colormap()[block_label(32, 40)]
    label[2, 30] = (1, 2, 3)
    Image.fromarray(label).save(voc / "SegmentationClass" / "a.png")
    message = _error(_read(voc))
    assert str(voc / "SegmentationClass" / "a.png") in message
    assert "colour (1, 2, 3) at row 2, column 30 is not in the VOC colour map" in message
    Image.fromarray(label).convert("RGBA").save(voc / "SegmentationClass" / "a.png")
    assert "a RGBA image is not a class mask" in _error(_read(voc))


@pytest.mark.parametrize("name", ["../secret", "a/b", "a\\b", "/etc/passwd", "..", "x\x00y", "C:\\x", "C:x"])
def test_names_that_are_not_plain_stems_are_refused(voc, name):
    split_file = voc / "ImageSets" / "Segmentation" / "train.txt"
    split_file.write_text(f"a\n{name}\n")
    message = _error(_read(voc))
    assert f"{split_file}: line 2" in message and "is not a plain file stem" in message
    with pytest.raises(GpLossError, match="split"):
        read_split_names(voc, name)  # nor a split name
    with pytest.raises(GpLossError):
        check_stem(name, "here")


def test_num_classes_range(voc):
    assert "num_classes must be between 1 and 255" in _error(_read(voc, num_classes=256))
    assert "num_classes must be between 1 and 255" in _error(_read(voc, num_classes=0))


def test_an_image_wider_than_the_largest_side_is_one_line(voc):
    wide = voc / "JPEGImages" / "b.png"
    Image.fromarray(np.zeros((1, 65_536, 3), dtype=np.uint8)).save(wide)
    (voc / "JPEGImages" / "b.jpg").unlink()
    message = _error(_read(voc))
    assert message.startswith(f"{wide}: the image width (pixels) must be an integer from 1 to 65535, got 65536")
    assert "remove b from" in message


def test_images_and_masks_over_the_pixel_limit_are_one_line(voc, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 32×40 is past twice the limit: a decompression bomb
    message = _error(_read(voc))
    assert f"cannot read image {voc / 'JPEGImages' / 'a.jpg'}" in message and "exceeds limit" in message
    message = _error(lambda: read_label(voc / "SegmentationClass" / "a.png", 3))
    assert f"cannot read mask {voc / 'SegmentationClass' / 'a.png'}" in message and "exceeds limit" in message
