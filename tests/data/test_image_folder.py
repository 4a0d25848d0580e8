"""ImageFolder data: each image's size checked before its pixels are decoded; an unreadable image is one line."""
import numpy as np
import pytest
import torch
from PIL import Image

from gp_loss.data.image_folder import check_same_classes, class_names, image_folder_tensors
from gp_loss.errors import GpLossError


def _folder(root, sizes=((12, 20), (20, 12))):
    for k, cls in enumerate(("cat", "dog")):
        (root / cls).mkdir(parents=True)
        for i, (h, w) in enumerate(sizes):
            Image.fromarray(np.full((h, w, 3), 50 * (k + 1), dtype=np.uint8)).save(root / cls / f"{i}.png")
    return root


def _error(root) -> str:
    with pytest.raises(GpLossError) as info:
        image_folder_tensors(root, 8)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_a_folder_loads_resized(tmp_path):
    images, labels, classes = image_folder_tensors(_folder(tmp_path / "d"), 8)
    assert images.shape == (4, 3, 8, 8) and labels.tolist() == [0, 0, 1, 1] and classes == ["cat", "dog"]
    assert torch.allclose(images[0], torch.full((3, 8, 8), 50 / 255))


def test_an_image_wider_than_the_largest_side_is_one_line(tmp_path):
    root = _folder(tmp_path / "d")
    wide = root / "dog" / "wide.png"
    Image.fromarray(np.zeros((1, 65_536, 3), dtype=np.uint8)).save(wide)
    message = _error(root)
    assert message.startswith(f"{wide}: the image width (pixels) must be an integer from 1 to 65535, got 65536")
    assert "resize it, or remove it from the folder" in message


def test_an_image_over_the_pixel_limit_is_one_line(tmp_path, monkeypatch):
    root = _folder(tmp_path / "d")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 12×20 is past twice the limit: a decompression bomb
    message = _error(root)
    assert f"cannot read image {root / 'cat' / '0.png'}" in message and "exceeds limit" in message


def test_a_broken_image_is_one_line(tmp_path):
    root = _folder(tmp_path / "d")
    (root / "cat" / "1.png").write_bytes(b"not a png")
    assert f"cannot read image {root / 'cat' / '1.png'}" in _error(root)


def test_class_names_are_the_loaders_labels_without_reading_an_image(tmp_path):
    root = _folder(tmp_path / "d")
    (root / "cat" / "0.png").write_bytes(b"not a png")  # never decoded
    assert class_names(root) == ["cat", "dog"]
    (tmp_path / "bare").mkdir()
    assert class_names(tmp_path / "bare") == []


@pytest.mark.parametrize("classes, detail", [
    (["cat"], "missing 'dog'"),
    (["cat", "dgo"], "missing 'dog'; extra 'dgo'"),
    (["dog", "cat"], "the same names in another order ('dog', 'cat')"),
])
def test_different_class_folders_are_one_line_naming_the_difference(classes, detail):
    with pytest.raises(GpLossError) as info:
        check_same_classes(classes, ["cat", "dog"], "--val-data /x/val", "--data /x/train")
    assert str(info.value).startswith(f"--val-data /x/val: its class folders differ from --data /x/train's: {detail};")
    assert "\n" not in str(info.value)
    check_same_classes(["cat", "dog"], ["cat", "dog"], "--val-data /x/val", "--data /x/train")
