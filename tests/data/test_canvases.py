"""The built-in canvases: deterministic, COCO-shaped, boxes and masks that match the pasted ink."""
import numpy as np
import pytest

from gp_loss.data.canvases import INK, MIN_COLOUR, CanvasSpec, category_list, draw_canvases

SPEC = CanvasSpec(count=12, height=64, width=96, max_digits=4, min_size=10, max_size=30, seed=3)


@pytest.fixture(scope="module")
def canvases():
    return draw_canvases(SPEC)


def test_same_seed_same_canvases_and_another_seed_differs(canvases):
    again = draw_canvases(SPEC)
    assert (again.images == canvases.images).all() and again.coco == canvases.coco
    other = draw_canvases(CanvasSpec(**{**SPEC.__dict__, "seed": 4}))
    assert not (other.images == canvases.images).all()


def test_coco_shape_and_non_square_images(canvases):
    coco = canvases.coco
    assert canvases.images.shape == (12, 3, 64, 96)
    assert 0 <= canvases.images.min() and canvases.images.max() <= 1
    assert [im["id"] for im in coco["images"]] == list(range(1, 13))
    assert all((im["height"], im["width"]) == (64, 96) for im in coco["images"])
    assert coco["categories"] == category_list() and len(coco["categories"]) == 10
    ids = [a["id"] for a in coco["annotations"]]
    assert ids == list(range(1, len(ids) + 1))
    per_image = np.bincount([a["image_id"] for a in coco["annotations"]], minlength=13)[1:]
    assert per_image.min() >= 1 and per_image.max() <= 4


def test_boxes_are_the_tight_boxes_of_their_masks(canvases):
    from pycocotools import mask as mask_utils
    for a in canvases.coco["annotations"]:
        mask = mask_utils.decode(a["segmentation"]).astype(bool)
        assert mask.shape == (64, 96) and mask.sum() == a["area"] > 0
        ys, xs = np.nonzero(mask)
        x, y, w, h = a["bbox"]
        assert (x, y, x + w, y + h) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        assert 1 <= a["category_id"] <= 10 and a["iscrowd"] == 0
        # Every masked pixel shows its digit's ink, in every channel.
        image = canvases.images[a["image_id"] - 1].numpy()
        assert image.min(0)[mask].min() >= INK * MIN_COLOUR


def test_masks_of_one_image_do_not_overlap(canvases):
    from pycocotools import mask as mask_utils
    by_image = {}
    for a in canvases.coco["annotations"]:
        by_image.setdefault(a["image_id"], []).append(mask_utils.decode(a["segmentation"]).astype(int))
    for masks in by_image.values():
        assert np.sum(masks, axis=0).max() == 1


def test_sizes_and_shapes_vary():
    boxes = np.array([a["bbox"] for a in draw_canvases(CanvasSpec(count=40, seed=0)).coco["annotations"]])
    ratio = boxes[:, 2] / boxes[:, 3]
    assert ratio.min() < 0.6 and ratio.max() > 1.3  # several aspect-ratio bins
    assert boxes[:, 3].min() < 20 and boxes[:, 3].max() > 35


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="max_size"):
        draw_canvases(CanvasSpec(count=1, height=32, width=32, min_size=10, max_size=40))
