"""The segmentation task's data: digit canvases painted from their RLE masks, VOC folders and COCO JSONs
letterboxed with void padding, the validation maps kept at the original resolution, one-line errors."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from gp_loss.data.canvases import draw_canvases, square_spec
from gp_loss.data.voc import VOC_CLASSES, write_label_png
from gp_loss.errors import GpLossError
from gp_loss.tasks.segmentation.data import (DIGIT_CLASS_NAMES, IGNORE, annotation_mask, coco_label_map,
                                             load_segmentation_data)

CPU = torch.device("cpu")


def load(data, val_data="", image_size=32, num_classes=0, canvases=8, max_digits=3, data_seed=0, split_seed=0,
         val_fraction=0.25, train_split="train", val_split="val"):
    return load_segmentation_data(data, val_data, image_size, num_classes, canvases, max_digits, data_seed,
                                  split_seed, val_fraction, train_split, val_split, CPU)


def _error(call) -> str:
    with pytest.raises(GpLossError) as info:
        call()
    assert "\n" not in str(info.value)
    return str(info.value)


# --- built-in digits -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits():
    return load("digits", image_size=40, canvases=10, data_seed=3, split_seed=1, val_fraction=0.3)


def test_digit_labels_are_their_rle_masks(digits):
    from pycocotools import mask as mask_utils

    drawn = draw_canvases(square_spec(10, 40, 3, 3))
    expected = np.zeros((10, 40, 40), dtype=np.uint8)
    for a in drawn.coco["annotations"]:
        expected[a["image_id"] - 1][mask_utils.decode(a["segmentation"]).astype(bool)] = a["category_id"]
    rows = {im["file_name"]: im["id"] - 1 for im in drawn.coco["images"]}
    assert len(digits.train) == 7 and len(digits.val) == 3
    assert sorted(digits.train.names + digits.val.names) == sorted(rows)
    for split in (digits.train, digits.val):
        index = [rows[n] for n in split.names]
        assert split.images.dtype == torch.uint8 and split.images.shape == (len(index), 3, 40, 40)
        assert (split.images.float() / 255 - drawn.images[index]).abs().max() <= 0.5 / 255 + 1e-6
        assert split.labels.dtype == torch.uint8 and (split.labels.numpy() == expected[index]).all()
        assert split.content == [(40, 40)] * len(index)
    assert digits.train.targets is None
    assert all(torch.equal(t, l) for t, l in zip(digits.val.targets, digits.val.labels))
    assert digits.num_classes == 11 and digits.class_names == DIGIT_CLASS_NAMES
    assert set(digits.train.labels.unique().tolist()) <= set(range(11)) and digits.train.labels.max() > 0
    assert "digit canvases" in digits.source


def test_digits_are_deterministic_and_seeded(digits):
    assert load("digits", image_size=40, canvases=10, data_seed=3, split_seed=1, val_fraction=0.3) is digits  # cached
    again = load("digits", image_size=40, canvases=10, data_seed=3, split_seed=1, val_fraction=0.3,
                 num_classes=11)  # another cache key, built anew
    assert torch.equal(again.train.images, digits.train.images) and torch.equal(again.val.labels, digits.val.labels)
    assert again.val.names == digits.val.names
    other_split = load("digits", image_size=40, canvases=10, data_seed=3, split_seed=2, val_fraction=0.3)
    assert other_split.val.names != digits.val.names
    other_data = load("digits", image_size=40, canvases=10, data_seed=4, split_seed=1, val_fraction=0.3)
    assert other_data.val.names == digits.val.names and not torch.equal(other_data.val.labels, digits.val.labels)


def test_batch_is_float_images_and_int64_labels(digits):
    images, labels = digits.train.batch([2, 0])
    assert images.dtype == torch.float32 and images.shape == (2, 3, 40, 40) and 0 <= images.min() <= images.max() <= 1
    assert labels.dtype == torch.int64 and torch.equal(labels, digits.train.labels[[2, 0]].long())


def test_digit_options_are_checked():
    assert "give 0 or 11" in _error(lambda: load("digits", num_classes=5))
    assert "leave the validation split empty" in _error(lambda: load("digits", canvases=2, val_fraction=0.1))
    assert "leave the training split empty" in _error(lambda: load("digits", canvases=2, val_fraction=0.9))
    assert "val_data" in _error(lambda: load("digits", val_data="val.json"))
    assert "num_classes must be 0" in _error(lambda: load("digits", num_classes=256))


# --- VOC folders --------------------------------------------------------------------------------------

def block_label(h: int, w: int) -> np.ndarray:
    """Left half class 1, right half class 2, a void (255) square at the top left."""
    label = np.ones((h, w), dtype=np.uint8)
    label[:, w // 2:] = 2
    label[:4, :4] = 255
    return label


def make_voc(root, sizes: dict, splits: dict, index_png: bool = False):
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, (h, w) in sizes.items():
        Image.fromarray(rng.integers(40, 256, (h, w, 3), dtype=np.uint8)).save(root / "JPEGImages" / f"{name}.png")
        if index_png:
            Image.fromarray(block_label(h, w)).save(root / "SegmentationClass" / f"{name}.png")
        else:
            write_label_png(root / "SegmentationClass" / f"{name}.png", block_label(h, w))
    for split, names in splits.items():
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(names) + "\n")
    return root


@pytest.fixture
def voc(tmp_path):
    return make_voc(tmp_path / "voc", {"wide": (40, 64), "tall": (64, 40), "sq": (32, 32)},
                    {"train": ["wide", "tall"], "val": ["tall", "wide", "sq"]})


@pytest.mark.parametrize("index_png", [False, True])
def test_voc_non_square_images_are_letterboxed(tmp_path, index_png):
    root = make_voc(tmp_path / "voc", {"wide": (40, 64), "tall": (64, 40), "sq": (32, 32)},
                    {"train": ["wide", "tall"], "val": ["tall", "wide", "sq"]}, index_png)
    data = load(str(root), image_size=32)
    assert data.num_classes == 21 and data.class_names == list(VOC_CLASSES)
    assert data.train.names == ["wide", "tall"] and data.val.names == ["tall", "wide", "sq"]
    assert data.train.content == [(20, 32), (32, 20)] and data.val.content == [(32, 20), (20, 32), (32, 32)]
    assert data.train.targets is None
    for split in (data.train, data.val):
        assert split.images.dtype == torch.uint8 and split.images.shape == (len(split), 3, 32, 32)
        assert split.labels.dtype == torch.uint8 and split.labels.shape == (len(split), 32, 32)
        for i, (rows, cols) in enumerate(split.content):
            image, label = split.images[i], split.labels[i]
            assert image[:, :rows, :cols].min() > 0 and not image[:, rows:].any() and not image[:, :, cols:].any()
            assert (label[rows:] == IGNORE).all() and (label[:, cols:] == IGNORE).all()
            content = label[:rows, :cols]
            assert (content[:, : cols // 2] == 1).sum() > 0 and (content[:, cols // 2:] == 2).all()
            assert set(content.unique().tolist()) == {1, 2, IGNORE}  # nearest-neighbour: no new classes
    for target, name in zip(data.val.targets, data.val.names):
        h, w = {"wide": (40, 64), "tall": (64, 40), "sq": (32, 32)}[name]
        assert target.dtype == torch.uint8 and (target.numpy() == block_label(h, w)).all()
    # The 32×32 image is not resized: its pixels are the file's.
    square = np.asarray(Image.open(root / "JPEGImages" / "sq.png")).transpose(2, 0, 1)
    assert (data.val.images[2].numpy() == square).all() and (data.val.labels[2].numpy() == block_label(32, 32)).all()


def test_voc_labels_resize_by_nearest_neighbour(tmp_path):
    root = make_voc(tmp_path / "voc", {"a": (40, 64)}, {"train": ["a"], "val": ["a"]})
    label = ((np.arange(40)[:, None] % 5) * 4 + np.arange(64)[None] % 3).astype(np.uint8)  # classes 0..18
    label[:, 48:] = 255
    write_label_png(root / "SegmentationClass" / "a.png", label)
    data = load(str(root), image_size=32)
    # Halved: each label pixel is the one nearest its centre, (2i + 1, 2j + 1) of the original.
    assert (data.train.labels[0, :20].numpy() == label[1::2, 1::2]).all()
    assert (data.train.labels[0, 20:] == IGNORE).all()
    assert (data.val.targets[0].numpy() == label).all()


def test_voc_class_count_and_names(voc):
    data = load(str(voc), num_classes=3)
    assert data.num_classes == 3 and data.class_names == ["class_0", "class_1", "class_2"]
    message = _error(lambda: load(str(voc), num_classes=2))
    assert str(voc / "SegmentationClass") in message and "not below num_classes 2" in message


def test_voc_options_and_errors_name_the_file(voc, tmp_path):
    assert load(str(voc), train_split="val", val_split="train").train.names == ["tall", "wide", "sq"]
    message = _error(lambda: load(str(voc), val_split="test"))
    assert str(voc / "ImageSets" / "Segmentation" / "test.txt") in message
    assert "val_data" in _error(lambda: load(str(voc), val_data=str(voc)))
    message = _error(lambda: load(str(tmp_path / "missing")))
    assert str(tmp_path / "missing") in message and "'digits'" in message
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("sq\n../voc/JPEGImages/sq\n")
    message = _error(lambda: load(str(voc)))
    assert "val.txt: line 2" in message and "not a plain file stem" in message
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("sq\n")
    write_label_png(voc / "SegmentationClass" / "sq.png", block_label(32, 30))
    message = _error(lambda: load(str(voc)))
    assert str(voc / "SegmentationClass" / "sq.png") in message and "the mask is 30×32 pixels" in message


# --- COCO instances JSON --------------------------------------------------------------------------------

H, W = 20, 30


def _rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def _uncompressed(mask: np.ndarray) -> dict:
    flat, runs, value, start = mask.flatten(order="F"), [], 0, 0
    while start < len(flat):
        end = start
        while end < len(flat) and flat[end] == value:
            end += 1
        runs.append(end - start)
        start, value = end, 1 - value
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": runs}


def _box(y0, y1, x0, x1) -> np.ndarray:
    mask = np.zeros((H, W), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def coco_folder(root, images: int = 4, name: str = "instances.json"):
    """``images`` images of H×W, each with: a big polygon (category 7), a small RLE inside it (category 9,
    drawn on top), a crowd region (uncompressed RLE) at the right, partly under the big polygon."""
    root.mkdir(parents=True, exist_ok=True)
    entries, annotations = [], []
    for i in range(1, images + 1):
        Image.fromarray(np.full((H, W, 3), 30 * i, dtype=np.uint8)).save(root / f"im{i}.png")
        entries.append({"id": i, "file_name": f"im{i}.png", "height": H, "width": W})
        polygon = [2, 2, 20, 2, 20, 16, 2, 16]  # covers rows 2..15, columns 2..19
        annotations += [
            {"id": 3 * i - 2, "image_id": i, "category_id": 9, "bbox": [6, 6, 4, 4], "area": 16,
             "segmentation": _rle(_box(6, 10, 6, 10))},
            {"id": 3 * i - 1, "image_id": i, "category_id": 7, "bbox": [2, 2, 18, 14], "area": 252,
             "segmentation": [polygon]},
            {"id": 3 * i, "image_id": i, "category_id": 7, "bbox": [18, 0, 12, 20], "area": 240, "iscrowd": 1,
             "segmentation": _uncompressed(_box(0, 20, 18, 30))}]
    path = root / name
    path.write_text(json.dumps({"images": entries, "annotations": annotations,
                                "categories": [{"id": 9, "name": "dog"}, {"id": 7, "name": "cat"}]}))
    return path


def expected_coco_map() -> np.ndarray:
    from pycocotools import mask as mask_utils

    polygon = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([[2, 2, 20, 2, 20, 16, 2, 16]], H, W)))
    label = np.zeros((H, W), dtype=np.uint8)
    label[_box(0, 20, 18, 30)] = IGNORE
    label[polygon.astype(bool)] = 1      # cat (id 7): class 1
    label[_box(6, 10, 6, 10)] = 2        # dog (id 9): class 2, smaller, on top
    return label


def test_coco_polygons_rle_and_crowd(tmp_path):
    path = coco_folder(tmp_path / "coco")
    data = load(str(path), image_size=32, val_fraction=0.5, split_seed=4)
    assert data.num_classes == 3 and data.class_names == ["background", "cat", "dog"] and data.source == str(path)
    assert sorted(data.train.names + data.val.names) == [f"im{i}.png" for i in range(1, 5)]
    expected = expected_coco_map()
    assert {1, 2, IGNORE, 0} == set(np.unique(expected).tolist())
    for target in data.val.targets:
        assert (target.numpy() == expected).all()
    assert data.train.content == [(21, 32)] * 2
    for split in (data.train, data.val):
        assert (split.labels[:, 21:] == IGNORE).all() and (split.images[:, :, 21:] == 0).all()
        assert set(split.labels[:, :21].unique().tolist()) == {0, 1, 2, IGNORE}


def test_coco_label_map_order_is_by_area_over_crowd():
    anns = [{"id": 1, "category_id": 5, "area": 10.0, "segmentation": _rle(_box(0, 5, 0, 5))},
            {"id": 2, "category_id": 6, "area": 99.0, "segmentation": _rle(_box(0, 10, 0, 10))},
            {"id": 3, "category_id": 6, "area": 9.0, "iscrowd": 1, "segmentation": _rle(_box(0, 20, 0, 12))}]
    label = coco_label_map(anns, H, W, {5: 1, 6: 2}, "here")
    assert (label[:5, :5] == 1).all() and label[7, 7] == 2 and label[15, 5] == IGNORE and label[15, 15] == 0


def test_coco_val_data_and_category_checks(tmp_path):
    train = coco_folder(tmp_path / "train", images=2)
    val = coco_folder(tmp_path / "val", images=3)
    data = load(str(train), val_data=str(val), num_classes=3)
    assert len(data.train) == 2 and len(data.val) == 3 and len(data.val.targets) == 3
    assert "give 0 or 3" in _error(lambda: load(str(train), val_data=str(val), num_classes=4))
    other = json.loads(val.read_text())
    other["categories"] = [{"id": 9, "name": "dog"}, {"id": 8, "name": "cat"}]
    for a in other["annotations"]:
        a["category_id"] = 8 if a["category_id"] == 7 else 9
    val.write_text(json.dumps(other))
    message = _error(lambda: load(str(train), val_data=str(val)))
    assert str(val) in message and "categories" in message
    assert "does not exist" in _error(lambda: load(str(tmp_path / "none.json")))


@pytest.mark.parametrize("segmentation, fragment", [
    (None, "no segmentation"),
    ([[1, 2, 3]], "not a list of polygons"),
    ([[1, 2, "3", 4, 5, 6]], "segmentation polygon 0 x2 must be a finite number from -1 to 31, got '3'"),
    # every coordinate finite and inside the image (pycocotools rasterises them as C ints)
    ([[1, 2, 3, 4, 1e308, 6]], "segmentation polygon 0 x3 must be a finite number from -1 to 31, got 1e+308"),
    ([[1, 2, 3, 4, 5, 6], [1, float("nan"), 3, 4, 5, 6]], "segmentation polygon 1 y1 must be a finite number"),
    ([[1, 2, 3, float("-inf"), 5, 6]], "polygon 0 y2 must be a finite number from -1 to 21, got -inf"),
    ([[1, 2, 3, 4, 5, 6e6]], "polygon 0 y3 must be a finite number from -1 to 21, got 6000000.0: give polygon "
                             "coordinates x1, y1, x2, y2, ... in the image's pixels (the image is 30×20)"),
    ([[1, 2, True, 4, 5, 6]], "polygon 0 x2 must be a finite number from -1 to 31, got True"),
    ({"size": [float(H), float(W)], "counts": [H * W]}, "RLE size"),
    ({"size": [H, W + 1], "counts": [H * W]}, "RLE size"),
    ({"size": [H, W], "counts": [H * W - 1]}, "RLE runs cover"),
    ({"size": [H, W], "counts": [H * W + 1, -1]}, "RLE runs cover"),
    ({"size": [H, W], "counts": "\x7f\x7f"}, "not a COCO RLE string"),
    ({"size": [H, W], "counts": "1"}, "RLE runs cover"),
    ({"size": [H, W], "counts": 5}, "not a string or a list"),
])
def test_malformed_segmentations_are_one_line_naming_file_and_annotation(tmp_path, segmentation, fragment):
    path = coco_folder(tmp_path / "coco", images=2)
    data = json.loads(path.read_text())
    data["annotations"][1]["segmentation"] = segmentation
    path.write_text(json.dumps(data))
    message = _error(lambda: load(str(path), val_fraction=0.5))
    assert str(path) in message and "im1.png" in message and "annotation id 2" in message and fragment in message


def test_annotation_mask_matches_pycocotools(tmp_path):
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(0)
    for _ in range(20):
        mask = rng.random((H, W)) < 0.4
        assert (annotation_mask(_rle(mask), H, W, "x") == mask).all()
        assert (annotation_mask(_uncompressed(mask), H, W, "x") == mask).all()
    polygon = [[1.5, 1, 25, 3, 12, 18], [0, 0, 1, 0]]  # the second has no area: left out
    expected = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygon[:1], H, W))).astype(bool)
    assert (annotation_mask(polygon, H, W, "x") == expected).all()
    assert annotation_mask([[0, 0, 1, 0]], H, W, "x") is None


def test_another_device_gets_copies_of_every_tensor(digits):
    meta = load_segmentation_data("digits", "", 40, 0, 10, 3, 3, 1, 0.3, "train", "val", torch.device("meta"))
    for split, cpu in ((meta.train, digits.train), (meta.val, digits.val)):
        assert split.images.device.type == "meta" and split.labels.device.type == "meta"
        assert split.images.shape == cpu.images.shape and split.labels.dtype == torch.uint8
        assert split.content == cpu.content and split.names == cpu.names
    assert meta.train.targets is None and all(t.device.type == "meta" for t in meta.val.targets)
    assert digits.val.targets[0].device.type == "cpu"  # the cached CPU data is left as it was


def test_a_polygon_within_the_tolerance_past_the_edges_is_rasterised():
    polygon = [[-0.5, -0.5, W + 0.5, -0.5, W + 0.5, H + 0.5, -0.5, H + 0.5]]  # the tolerance is 1 pixel
    assert annotation_mask(polygon, H, W, "x").all()
