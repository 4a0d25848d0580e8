"""COCO AP on hand-made cases whose values are known, and outputs mapped back to original images."""
import pytest
import torch

from gp_loss.metrics.detection import METRIC_NAMES, coco_metrics, to_coco_detections


def _gt(boxes):
    """One 200×100 image per entry of ``boxes`` ([x, y, w, h], category)."""
    images = [{"id": i + 1, "file_name": f"{i}.png", "height": 100, "width": 200} for i in range(len(boxes))]
    anns = [{"id": i + 1, "image_id": i + 1, "category_id": cat, "bbox": box, "area": box[2] * box[3],
             "iscrowd": 0} for i, (box, cat) in enumerate(boxes)]
    return {"images": images, "annotations": anns, "categories": [{"id": 3, "name": "a"}, {"id": 8, "name": "b"}]}


def test_exact_detections_score_one_and_a_wrong_class_scores_zero():
    gt = _gt([([10, 10, 40, 40], 3), ([50, 20, 20, 30], 8)])
    exact = [{"image_id": 1, "category_id": 3, "bbox": [10, 10, 40, 40], "score": 0.9},
             {"image_id": 2, "category_id": 8, "bbox": [50, 20, 20, 30], "score": 0.8}]
    m = coco_metrics(gt, exact)
    assert m["AP"] == pytest.approx(1.0) and m["AP50"] == pytest.approx(1.0) and m["AP75"] == pytest.approx(1.0)
    assert m["APs"] == pytest.approx(1.0) and m["APm"] == pytest.approx(1.0) and m["APl"] is None  # no large box
    wrong = [{**d, "category_id": 8 if d["category_id"] == 3 else 3} for d in exact]
    assert coco_metrics(gt, wrong)["AP"] == 0.0


def test_a_box_at_iou_0_6_counts_at_50_not_at_75():
    gt = _gt([([0, 0, 100, 50], 3)])
    # Same height, shifted right by 25: IoU = 75*50 / (125*50) = 0.6
    m = coco_metrics(gt, [{"image_id": 1, "category_id": 3, "bbox": [25, 0, 100, 50], "score": 1.0}])
    assert m["AP50"] == pytest.approx(1.0) and m["AP75"] == 0.0
    # AP averages IoU thresholds 0.50:0.05:0.95; a match needs IoU >= threshold: 0.50, 0.55, 0.60.
    assert m["AP"] == pytest.approx(0.3)


def test_no_detections_score_zero_where_ground_truth_exists():
    m = coco_metrics(_gt([([10, 10, 40, 40], 3)]), [])
    assert list(m) == list(METRIC_NAMES)
    assert m["AP"] == 0.0 and m["APm"] == 0.0 and m["APs"] is None and m["APl"] is None


def test_outputs_map_back_to_original_coordinates_and_categories():
    outputs = [{"boxes": torch.tensor([[5.0, 5.0, 25.0, 25.0]]), "scores": torch.tensor([0.7]),
                "labels": torch.tensor([1])}]
    dets = to_coco_detections(outputs, [4], torch.tensor([0.5]), categories=[3, 8])
    assert dets == [{"image_id": 4, "category_id": 8, "bbox": [10.0, 10.0, 40.0, 40.0], "score": pytest.approx(0.7)}]
