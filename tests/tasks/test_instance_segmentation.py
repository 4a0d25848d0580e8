"""The instance segmentation task: registry entry, masks from canvases and COCO files, COCO mask AP,
malformed masks as one line, a few training steps end to end, and ``gp-loss evaluate --json``."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from gp_loss.errors import GpLossError
from gp_loss.metrics.detection import METRIC_NAMES, coco_ground_truth, coco_metrics
from gp_loss.tasks import make_task, task_info
from gp_loss.tasks.instance_segmentation.data import _letterbox_mask, instance_mask
from gp_loss.tasks.instance_segmentation.task import InstanceSegmentationOptions, to_coco_segmentations

TINY = {"image_size": 64, "canvases": 16, "batch_size": 4, "proxy_steps": 2, "final_steps": 2,
        "warmup_steps": 1, "eval_batch_size": 8, "collapse_check": 0.0}
BOX_METRICS = {"box_" + n for n in METRIC_NAMES}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def task():
    return make_task("instance_segmentation", TINY)


def _coco_file(tmp_path, segmentation):
    """One 40×60 image with one annotation (id 7) whose ``segmentation`` is given."""
    Image.fromarray(np.zeros((40, 60, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    data = {"images": [{"id": 1, "file_name": "a.png", "height": 40, "width": 60}],
            "annotations": [{"id": 7, "image_id": 1, "category_id": 1, "bbox": [10, 5, 20, 20], "iscrowd": 0,
                             "segmentation": segmentation}],
            "categories": [{"id": 1, "name": "thing"}]}
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    return path


def test_the_registry_knows_the_task_its_five_branches_and_baselines():
    info = task_info("instance_segmentation")
    options = info.make_options({})
    assert info.layout(options) == {"rpn_cls": "bcls", "rpn_reg": "reg", "rcnn_cls": "cls", "rcnn_reg": "reg",
                                    "mask": "bcls"}
    texts = info.baselines_for(options)
    assert set(texts) == {"torchvision", "fl_giou", "dice"}
    assert all(set(t) == set(info.branches) for t in texts.values())
    assert "Dice" in texts["dice"]["mask"] and "log" in texts["fl_giou"]["mask"]


def test_bad_options_are_one_line():
    with pytest.raises(GpLossError, match="model must be maskrcnn"):
        task_info("instance_segmentation").make_options({"model": "fcos"})
    with pytest.raises(GpLossError, match="use the instance_segmentation task"):
        task_info("detection").make_options({"model": "maskrcnn"})
    with pytest.raises(GpLossError, match="metric must be one of"):
        InstanceSegmentationOptions(metric="mIoU").check()


def test_the_canvases_masks_follow_their_boxes(task):
    train = task.data.train
    for boxes, masks in zip(train.boxes, train.masks):
        assert masks.shape == (len(boxes), 64, 64) and masks.dtype == torch.uint8
        for (x1, y1, x2, y2), m in zip(boxes.tolist(), masks):
            ys, xs = torch.nonzero(m, as_tuple=True)
            assert xs.min() >= x1 and xs.max() < x2 and ys.min() >= y1 and ys.max() < y2  # ink inside its box


def test_perfect_masks_score_mask_ap_1(task):
    gt = task.data.ground_truth
    val = task.data.val
    results = []
    for image_id in val.image_ids:
        for ann in gt.loadAnns(gt.getAnnIds(imgIds=[image_id])):
            mask = torch.from_numpy(gt.annToMask(ann)).float()[None, None]  # 1×1×S×S
            results += to_coco_segmentations(mask, torch.ones(1), [ann["category_id"]], image_id, (64, 64), (64, 64))
    metrics = coco_metrics(gt, results, val.image_ids, "segm")
    assert metrics["AP"] == pytest.approx(1.0) and metrics["AP50"] == pytest.approx(1.0)
    assert coco_metrics(gt, [], val.image_ids, "segm")["AP"] == 0.0


def test_a_letterboxed_mask_maps_back_to_the_original_image():
    dataset = {"images": [{"id": 1, "height": 40, "width": 60}], "categories": [{"id": 1}],
               "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 5, 20, 20], "iscrowd": 0,
                                "area": 400.0, "segmentation": [[10, 5, 30, 5, 30, 25, 10, 25]]}]}
    gt = coco_ground_truth(dataset)
    boxed = _letterbox_mask(gt.annToMask(gt.anns[1]).astype(bool), 96)  # scale 96/60: rows 0..63 hold the image
    assert boxed[64:].sum() == 0 and boxed.sum() > 0
    results = to_coco_segmentations(boxed.float()[None, None], torch.ones(1), [1], 1, (64, 96), (40, 60))
    assert coco_metrics(gt, results, [1], "segm")["AP50"] == pytest.approx(1.0)


@pytest.mark.parametrize("segmentation, reason", [
    ([[10, 5, 30, 5]], "polygon 0 has 4 coordinate(s); a polygon needs at least 3 points"),
    ({"size": [20, 20], "counts": [400]}, "RLE size [20, 20] is not the image's [height, width] [40, 60]"),
    ("mask.png", "no segmentation"),
])
def test_malformed_masks_are_one_line_naming_the_file_and_annotation(tmp_path, segmentation, reason):
    path = _coco_file(tmp_path, segmentation)
    with pytest.raises(GpLossError) as err:
        make_task("instance_segmentation", {**TINY, "data": str(path), "val_data": str(path)})
    message = str(err.value)
    assert str(path) in message and "annotation id 7" in message and reason in message and "\n" not in message


def test_instance_mask_decodes_polygons_and_rle():
    polygon = instance_mask({"segmentation": [[10, 5, 30, 5, 30, 25, 10, 25]]}, 40, 60, "x")
    assert polygon.shape == (40, 60) and 350 < polygon.sum() < 450
    rle = instance_mask({"segmentation": {"size": [40, 60], "counts": [100, 20, 2280]}}, 40, 60, "x")
    assert rle.sum() == 20


def test_a_few_steps_end_to_end_report_mask_and_box_metrics(task):
    for loss in ("torchvision", "dice"):
        out = task.proxy_fitness(loss, seed=0)
        assert out.status == "ok" and out.steps == 2, out.reason
        assert set(out.metrics) == set(METRIC_NAMES) | BOX_METRICS
        assert out.score == (out.metrics["AP"] or 0.0)
        assert set(out.losses) == {"rpn_cls", "rpn_reg", "rcnn_cls", "rcnn_reg", "mask"}
        assert all(v is not None for v in out.losses.values())


def test_a_proxy_that_finds_nothing_a_third_of_the_way_in_stops_as_collapsed():
    task = make_task("instance_segmentation", {**TINY, "proxy_steps": 3, "collapse_check": 0.4})
    out = task.proxy_fitness("torchvision", seed=0)  # one step from scratch finds no digit
    assert out.status == "collapsed" and out.steps == 1 and not out.failed
    assert "no better than a detector that finds nothing" in out.reason and "at step 1" in out.reason
    assert out.score == 0.0 and set(out.metrics) == set(METRIC_NAMES) | BOX_METRICS
    # The final schedule never stops early; nor does a proxy with the check off.
    assert task.final_score("torchvision", seed=0).steps == TINY["final_steps"]
    with pytest.raises(GpLossError, match="collapse_check must be in"):
        InstanceSegmentationOptions(collapse_check=1.0).check()


@pytest.mark.slow  # the CLI loads the default 480 canvases and evaluates 120 of them
def test_evaluate_json_reports_mask_and_box_ap(capsys):
    from gp_loss.cli import main

    code = main(["evaluate", "--task", "instance_segmentation", "--loss", "torchvision", "--seeds", "1",
                 "--steps", "2", "--image-size", "64", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["metric"] == "validation AP"
    assert set(out["losses"]["torchvision"]) == set(METRIC_NAMES) | BOX_METRICS


def test_search_instance_segmentation_script_help():
    import subprocess
    import sys

    from tests.helpers import ROOT

    done = subprocess.run([sys.executable, str(ROOT / "runs" / "search_instance_segmentation.py"), "--help"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "--backbone" in done.stdout and "mask AP" in done.stdout and "AutoLoss-Zero" in done.stdout


@pytest.mark.slow  # a whole search: baselines, two proxies, the final table
def test_the_default_search_script_runs_end_to_end_on_a_tiny_proxy(load_script, tmp_path, capsys):
    from gp_loss.evolution import script

    cli = load_script("search_instance_segmentation")
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({"task_options": {**TINY, "canvases": 12}}))
    out = tmp_path / "run"
    code = script.main(cli.__doc__, cli.defaults, "out/unused", cli.TASK_FLAGS,
                       ["--config", str(config), "--out", str(out), "--evaluations", "2", "--final-seeds", "2",
                        "--no-progress"])
    assert code == 0, capsys.readouterr().err
    final = json.loads((out / "final.json").read_text())
    rows = {row["name"]: row for row in final["rows"]}
    assert {"top1", "torchvision", "fl_giou"} <= set(rows) and final["reference"] == "fl_giou"
    assert all(set(row["metrics"]) == set(METRIC_NAMES) | BOX_METRICS for row in rows.values())
    assert "def top1_mask(" in (out / "hall_of_fame.py").read_text()
