"""COCO-format data: malformed files get one line naming the file and the entry; images of any
aspect ratio are letterboxed and their scale kept."""
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from gp_loss.data.coco import letterbox, load_images, read_instances
from gp_loss.errors import GpLossError


def _write(tmp_path, data, name="instances.json"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def _dataset(tmp_path, sizes=((40, 60), (50, 30))):
    images = []
    for i, (h, w) in enumerate(sizes, 1):
        Image.fromarray(np.full((h, w, 3), 40 * i, dtype=np.uint8)).save(tmp_path / f"im{i}.png")
        images.append({"id": i, "file_name": f"im{i}.png", "height": h, "width": w})
    annotations = [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [5, 5, 20, 10]},
                   {"id": 2, "image_id": 2, "category_id": 9, "bbox": [0, 10, 10, 30], "iscrowd": 0}]
    return {"images": images, "annotations": annotations,
            "categories": [{"id": 7, "name": "cat"}, {"id": 9, "name": "dog"}]}


def test_a_good_file_reads_and_loads(tmp_path):
    inst = read_instances(_write(tmp_path, _dataset(tmp_path)))
    assert len(inst.dataset["annotations"]) == 2 and inst.dropped.count == 0
    loaded = load_images(inst, 32)
    assert loaded.images.shape == (2, 3, 32, 32)
    assert loaded.sizes == [(40, 60), (50, 30)]
    assert torch.allclose(loaded.scales, torch.tensor([32 / 60, 32 / 50]))
    # Letterboxed: the first image (wider) fills the top 21 rows, zeros below.
    assert loaded.images[0, :, :21].min() > 0.1 and loaded.images[0, :, 22:].abs().max() == 0


@pytest.mark.parametrize("change, message", [
    (lambda d: "{not json", "is not valid JSON"),
    (lambda d: '{"images": [], "annotations"', "is not valid JSON"),
    (lambda d: [1, 2], "holds a list, not an object"),
    (lambda d: {k: v for k, v in d.items() if k != "categories"}, "missing or malformed top-level key 'categories'"),
    (lambda d: {**d, "annotations": {}}, "top-level key 'annotations'"),
    (lambda d: {**d, "annotations": d["annotations"] + [{"id": 3, "image_id": 1, "category_id": 8,
                                                         "bbox": [1, 1, 2, 2]}]},
     r"annotations\[2\] \(id 3\): category_id 8 is not among the categories \(7, 9\)"),
    (lambda d: {**d, "annotations": [{**d["annotations"][0], "image_id": 5}]}, r"image_id 5 is not among the images"),
    (lambda d: {**d, "annotations": [{**d["annotations"][0], "bbox": [1, 2, 3]}]}, r"bbox \[1, 2, 3\] is not"),
    (lambda d: {**d, "annotations": [{**d["annotations"][0], "bbox": [1, 2, "3", 4]}]}, "bbox"),
    (lambda d: {**d, "annotations": []}, "no annotations with a box of positive size"),
    (lambda d: {**d, "images": d["images"] + [d["images"][0]]}, r"images\[2\]: image id 1 appears twice"),
    (lambda d: {**d, "images": [{**d["images"][0], "id": "1"}]}, r"id must be an integer from 0 to \d+, got '1'"),
    (lambda d: {**d, "images": [{"id": 1}] + d["images"][1:]}, r"images\[0\] \(id 1\) has no file_name"),
])
def test_malformed_files_are_one_line_naming_file_and_entry(tmp_path, change, message):
    path = _write(tmp_path, change(_dataset(tmp_path)))
    with pytest.raises(GpLossError, match=message) as err:
        read_instances(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_a_missing_file_or_image_is_named(tmp_path):
    with pytest.raises(GpLossError, match="does not exist"):
        read_instances(tmp_path / "nope.json")
    data = _dataset(tmp_path)
    (tmp_path / "im2.png").unlink()
    inst = read_instances(_write(tmp_path, data))
    with pytest.raises(GpLossError, match=r"images\[1\] \(id 2\): image .*im2.png is missing on disk"):
        load_images(inst, 32)
    (tmp_path / "im2.png").write_text("not an image")
    with pytest.raises(GpLossError, match="cannot read image"):
        load_images(inst, 32)


def test_a_size_that_disagrees_with_the_file_is_named(tmp_path):
    data = _dataset(tmp_path)
    data["images"][0]["width"] = 61
    with pytest.raises(GpLossError, match=r"images\[0\] \(id 1\): the file is 60×40 pixels but the entry says 61×40"):
        load_images(read_instances(_write(tmp_path, data)), 32)


def test_degenerate_boxes_are_dropped_and_counted(tmp_path):
    data = _dataset(tmp_path)
    data["annotations"] += [{"id": 3, "image_id": 1, "category_id": 7, "bbox": [1, 1, 0, 5]},
                            {"id": 4, "image_id": 2, "category_id": 9, "bbox": [1, 1, 5, 0]},
                            # inside the tolerance past the right edge: nothing left once clipped
                            {"id": 5, "image_id": 1, "category_id": 7, "bbox": [60.2, 1, 0.3, 5]}]
    inst = read_instances(_write(tmp_path, data))
    assert [a["id"] for a in inst.dataset["annotations"]] == [1, 2]
    assert inst.dropped.count == 3 and "id 3" in inst.dropped.example
    assert "3 annotation(s) with a box of no width or height inside its image" in inst.dropped.warning("f.json")


def test_letterbox_keeps_the_aspect_ratio():
    image = torch.rand(3, 10, 40)
    out, scale = letterbox(image, 20)
    assert out.shape == (3, 20, 20) and scale == 0.5
    assert out[:, 5:].abs().max() == 0 and out[:, :5].abs().max() > 0


# --- every number read is a finite real number within its own bounds -------------------------------------

def _annotation(**changes):
    """The first annotation of :func:`_dataset` (image 1: 60×40 pixels) with ``changes``."""
    return {"id": 1, "image_id": 1, "category_id": 7, "bbox": [5, 5, 20, 10], **changes}


def _error(path) -> str:
    with pytest.raises(GpLossError) as err:
        read_instances(path)
    text = str(err.value)
    assert str(path) in text and "\n" not in text
    return text


@pytest.mark.parametrize("annotation, message", [
    # a finite box that x + width, the letterbox scale or float32 turn into inf
    (_annotation(bbox=[1e308, 1e308, 1e308, 1e308]),
     r"bbox width must be a finite number from 0 to 65535, got 1e\+308"),
    (_annotation(bbox=[5, 5, 1e308, 10]), "bbox width must be a finite number"),
    (_annotation(bbox=[5, 5, float("nan"), 10]), "bbox width must be a finite number from 0 to 65535, got nan"),
    (_annotation(bbox=[float("-inf"), 5, 20, 10]), "bbox x must be a finite number from -1 to 61, got -inf"),
    (_annotation(bbox=[5, float("inf"), 20, 10]), "bbox y must be a finite number"),
    (_annotation(bbox=[5, 5, -20, 10]), "bbox width must be a finite number from 0 to 65535, got -20"),
    (_annotation(bbox=[5, 5, 20, -1e-3]), "bbox height must be a finite number from 0"),
    (_annotation(bbox=[5, 5, True, 10]), "bbox width must be a finite number from 0 to 65535, got True"),
    (_annotation(bbox=[5, "5", 20, 10]), "bbox y must be a finite number .* got '5'"),
    (_annotation(bbox=[5, 5, 20, None]), "bbox height must be a finite number .* got None"),
    (_annotation(bbox="5 5 20 10"), "bbox '5 5 20 10' is not \\[x, y, width, height\\]"),
    # far outside its 60×40 image: another image's or normalised coordinates
    (_annotation(bbox=[500, 5, 20, 10]),
     r"bbox x must be a finite number from -1 to 61, got 500: .*the image is 60×40"),
    (_annotation(bbox=[50, 5, 20, 10]), r"the box's right edge must be a finite number from -1 to 61, got 70"),
    (_annotation(bbox=[5, 35, 20, 10]), r"the box's bottom edge must be a finite number from -1 to 41, got 45"),
    (_annotation(bbox=[5, -3, 20, 10]), r"bbox y must be a finite number from -1 to 41, got -3"),
    # ids: integers, never booleans (True == 1 would find category or image 1)
    (_annotation(image_id=True), "image_id must be an integer from 0 to .* got True"),
    (_annotation(category_id=True), "category_id must be an integer .* got True"),
    (_annotation(category_id=7.0), "category_id must be an integer .* got 7.0"),
    (_annotation(image_id="1"), "image_id must be an integer .* got '1'"),
    (_annotation(id=False), "id must be an integer .* got False"),
    (_annotation(id=-1), "id must be an integer from 0 to .* got -1"),
    (_annotation(id=2**64), "id must be an integer from 0 to 9223372036854775807"),
    # area in square pixels of its image; iscrowd 0 or 1
    (_annotation(area=float("nan")), "area must be a finite number from 0 to .* got nan"),
    (_annotation(area=1e308), "area must be a finite number from 0 to 2604, got 1e\\+308: .* its 60×40 image"),
    (_annotation(area=-5), "area must be a finite number from 0"),
    (_annotation(area="big"), "area must be a finite number .* got 'big'"),
    (_annotation(iscrowd=2), "iscrowd must be an integer from 0 to 1, got 2"),
    (_annotation(iscrowd=True), "iscrowd must be an integer from 0 to 1, got True"),
    (_annotation(iscrowd="0"), "iscrowd must be an integer from 0 to 1, got '0'"),
])
def test_hostile_annotations_are_one_line_naming_file_id_and_fix(tmp_path, annotation, message):
    data = _dataset(tmp_path)
    data["categories"].append({"id": 1, "name": "one"})  # so that a boolean id True would name something
    data["annotations"][0] = annotation
    text = _error(_write(tmp_path, data))
    assert re.search(message, text), text
    assert f"annotations[0] (id {annotation['id']!r})" in text or "annotations[0]:" in text


@pytest.mark.parametrize("raw, message", [
    ("NaN", "got nan"), ("-Infinity", "got -inf"), ("Infinity", "got inf"),
    ("1" + "0" * 400, "got 1000000000"),  # a JSON integer too large for any float
])
def test_non_finite_and_overflowing_json_numbers_are_named(tmp_path, raw, message):
    data = _dataset(tmp_path)
    text = json.dumps(data).replace('"bbox": [5, 5, 20, 10]', f'"bbox": [5, 5, {raw}, 10]')
    assert raw in text
    error = _error(_write(tmp_path, text))
    assert "annotations[0] (id 1): bbox width must be a finite number from 0 to 65535" in error and message in error


@pytest.mark.parametrize("image, message", [
    ({"width": 10**12}, "the image width \\(pixels\\) must be an integer from 1 to 65535, got 1000000000000"),
    ({"height": 1e308}, "the image height \\(pixels\\) must be an integer from 1 to 65535, got 1e\\+308"),
    ({"width": float("nan")}, "width .* got nan"),
    ({"width": 0}, "width .* from 1 to 65535, got 0"),
    ({"width": -60}, "width .* got -60"),
    ({"width": True}, "width .* got True"),
    ({"height": "40"}, "height .* got '40'"),
    ({"width": 60.0}, "width .* got 60.0"),
    ({"width": None}, "width .* got None"),
])
def test_hostile_image_sizes_are_one_line(tmp_path, image, message):
    data = _dataset(tmp_path)
    data["images"][0].update(image)
    text = _error(_write(tmp_path, data))
    assert "images[0] (id 1): the image" in text and re.search(message, text), text


def test_a_box_within_the_tolerance_is_clipped_to_its_image(tmp_path):
    data = _dataset(tmp_path)  # image 1 is 60×40: the tolerance is 1 pixel
    data["annotations"][0]["bbox"] = [-0.5, 30.0, 60.8, 10.6]
    data["annotations"][1]["bbox"] = [0, 10, 10, 30]  # as given, untouched
    inst = read_instances(_write(tmp_path, data))
    first, second = inst.dataset["annotations"]
    assert first["bbox"] == [0.0, 30.0, 60.0, 10.0] and first["area"] == 600.0
    assert second["bbox"] == [0, 10, 10, 30] and second["area"] == 300.0
    # clipped boxes stay finite through the detection task's float32 letterbox scaling
    loaded = load_images(inst, 32)
    xywh = torch.tensor(first["bbox"], dtype=torch.float32) * loaded.scales[0]
    assert torch.isfinite(xywh).all() and float(xywh[0] + xywh[2]) <= 32


def test_sizes_left_out_are_read_from_the_file_and_boxes_checked_against_them(tmp_path):
    data = _dataset(tmp_path)
    for im in data["images"]:
        del im["width"], im["height"]
    inst = read_instances(_write(tmp_path, data))
    assert [(im["width"], im["height"]) for im in inst.dataset["images"]] == [(60, 40), (30, 50)]
    data["annotations"][1]["bbox"] = [25, 10, 10, 30]  # image 2 is 30 pixels wide
    assert "the box's right edge must be a finite number from -1 to 31, got 35" in _error(_write(tmp_path, data))
    data["images"][0]["width"] = 60  # one of the two alone is an error, not a guess
    assert "the image height (pixels) must be an integer from 1 to 65535, got None" in _error(_write(tmp_path, data))


def test_an_image_over_the_pixel_limit_is_one_line(tmp_path, monkeypatch):
    from PIL import Image as PILImage

    data = _dataset(tmp_path)
    inst = read_instances(_write(tmp_path, data))
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 100)  # 60×40 is then past twice the limit: a bomb
    with pytest.raises(GpLossError, match=r"images\[0\] \(id 1\): cannot read image .*im1.png: .*exceeds limit"):
        load_images(inst, 32)
    for im in data["images"]:
        del im["width"], im["height"]
    assert "cannot read image" in _error(_write(tmp_path, data))  # the header read for the size


def test_deeply_nested_json_is_one_line(tmp_path):
    assert "nests its JSON too deeply" in _error(_write(tmp_path, "[" * 100_000 + "]" * 100_000))


def test_an_integer_too_long_to_convert_is_one_line(tmp_path):
    assert "is not a COCO instances file" in _error(_write(tmp_path, '{"images": [' + "9" * 5000 + "]}"))
