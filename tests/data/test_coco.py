"""COCO-format data: malformed files get one line naming the file and the entry; images of any
aspect ratio are letterboxed and their scale kept."""
import json

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
    (lambda d: {**d, "images": [{**d["images"][0], "id": "1"}]}, r"id '1' is not an integer"),
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
                            {"id": 4, "image_id": 2, "category_id": 9, "bbox": [1, 1, 5, -2]}]
    inst = read_instances(_write(tmp_path, data))
    assert [a["id"] for a in inst.dataset["annotations"]] == [1, 2]
    assert inst.dropped.count == 2 and "id 3" in inst.dropped.example


def test_letterbox_keeps_the_aspect_ratio():
    image = torch.rand(3, 10, 40)
    out, scale = letterbox(image, 20)
    assert out.shape == (3, 20, 20) and scale == 0.5
    assert out[:, 5:].abs().max() == 0 and out[:, :5].abs().max() > 0
