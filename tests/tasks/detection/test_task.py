"""The detection task: data on the device, baselines by name, the COCO evaluation in the user's
coordinates (non-square images), the non-finite stop, and bad options as one line."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from gp_loss.errors import GpLossError
from gp_loss.language.genome import Genome
from gp_loss.tasks import make_task, task_info
from gp_loss.runtime.threads import torch_threads
from gp_loss.tasks.detection import set_genome
from gp_loss.tasks.detection import DETECTORS
from gp_loss.tasks.detection.task import DetectionOptions, baseline_loss

TINY = {"image_size": 64, "canvases": 16, "batch_size": 4, "proxy_steps": 2, "final_steps": 2,
        "warmup_steps": 1, "eval_batch_size": 8}


@pytest.fixture(scope="module")
def task():
    return make_task("detection", TINY)


def _coco_folder(tmp_path, sizes=((48, 80), (90, 60), (64, 64))):
    """Non-square images, each with two boxes of two categories (ids 3 and 8)."""
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for i, (h, w) in enumerate(sizes, 1):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(tmp_path / f"img{i}.png")
        images.append({"id": 10 * i, "file_name": f"img{i}.png", "height": h, "width": w})
        for k, (cat, box) in enumerate([(3, [2, 3, 20, 14]), (8, [w / 2, h / 3, w / 3, h / 2])]):
            annotations.append({"id": 100 * i + k, "image_id": 10 * i, "category_id": cat, "bbox": box,
                                "area": box[2] * box[3], "iscrowd": 0})
    path = tmp_path / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": [{"id": 3, "name": "a"}, {"id": 8, "name": "b"}]}))
    return path


def test_the_registry_knows_the_detection_task_and_its_layouts():
    info = task_info("detection")
    assert info.layout(DetectionOptions()) == {"cls": "bcls", "reg": "reg"}
    frcnn = DetectionOptions(model="fasterrcnn")
    assert list(info.layout(frcnn)) == ["rpn_cls", "rpn_reg", "rcnn_cls", "rcnn_reg"]
    assert set(info.baselines_for(DetectionOptions())) == {"torchvision", "fl_giou", "fl_l1", "fl_smooth_l1",
                                                          "cse_autoloss_a", "cse_autoloss_b", "pap",
                                                          "pap_unblocked"}
    assert "torchvision" in info.baselines_for(frcnn)["torchvision"]["rcnn_cls"]


@pytest.mark.parametrize("model", list(DETECTORS))
def test_every_baseline_fits_its_detector(model):
    for name in DETECTORS[model].baselines:
        loss = baseline_loss(model, name)
        assert (loss.genome is None) == (name in ("torchvision", "pap", "pap_unblocked"))
        assert (loss.pap is None) == (name not in ("pap", "pap_unblocked"))


def test_the_digits_split_is_seeded_and_on_the_device(task):
    data = task.data
    assert data.num_classes == 10 and len(data.train) + len(data.val) == 16 and len(data.val) == 4
    assert data.train.images.dtype == torch.uint8 and data.train.images.shape[1:] == (3, 64, 64)
    assert set(data.train.image_ids).isdisjoint(data.val.image_ids)
    again = make_task("detection", TINY)
    assert again.data.val.image_ids == data.val.image_ids
    other = make_task("detection", {**TINY, "split_seed": 1})
    assert other.data.val.image_ids != data.val.image_ids


def test_a_proxy_training_reports_every_coco_metric_and_the_branch_losses(task):
    out = task.proxy_fitness("fl_giou", seed=0)
    assert out.status == "ok" and out.steps == 2
    assert set(out.metrics) == {"AP", "AP50", "AP75", "APs", "APm", "APl"}
    assert out.score == (out.metrics["AP"] or 0.0)
    assert set(out.losses) == {"cls", "reg", "bbox_ctrness"} and all(v is not None for v in out.losses.values())


def test_the_same_seed_trains_the_same_model(task):
    a, b = task.proxy_fitness("fl_giou", seed=3), task.proxy_fitness("fl_giou", seed=3)
    assert a.losses == b.losses and a.metrics == b.metrics


def test_a_non_finite_loss_stops_training_naming_the_branch(task):
    nan_cls = Genome.from_formulas([("cls", "bcls", "log(neg(add(1, abs(x))))"),
                                    ("reg", "reg", "sub(1, div(i, u))")])
    out = task.proxy_fitness(nan_cls, seed=0)
    assert out.status == "non-finite" and out.score == 0.0
    assert out.reason.startswith("loss of branch 'cls' is nan at step 0")
    assert out.losses["cls"] is None


def test_a_genome_that_does_not_fit_the_detector_is_one_line(task):
    wrong = Genome.from_formulas([("cls", "cls", "neg(dot(y, log(softmax(x))))")])
    with pytest.raises(GpLossError, match=r"fcos expects the loss branches cls \(bcls\), reg \(reg\)"):
        task.proxy_fitness(wrong, seed=0)


def test_box_losses_on_deltas_equal_torchvision_retinanets(det):
    """fl_l1's box term is torchvision's RetinaNet L1 loss (its default _loss_type)."""
    import copy
    model = det.small_model("retinanet", det.FOCAL_GIOU)
    set_genome(model, det.FOCAL_GIOU, "l1")
    reference = copy.deepcopy(model)
    set_genome(reference, None)
    reference.head.regression_head._loss_type = "l1"
    images, targets = det.make_batch("retinanet")
    got, want = model(images, targets), reference(images, targets)
    for key in ("classification", "bbox_regression"):
        torch.testing.assert_close(got[key], want[key], rtol=1e-5, atol=0)


def test_coco_data_with_non_square_images_is_evaluated_in_its_own_coordinates(tmp_path):
    """A model that predicts the letterboxed ground truth scores AP 1 on the original annotations."""
    path = _coco_folder(tmp_path)
    task = make_task("detection", {**TINY, "data": str(path), "val_data": str(path), "image_size": 48})
    val = task.data.val
    assert val.scales.tolist() == pytest.approx([48 / 80, 48 / 90, 48 / 64])

    class Oracle(torch.nn.Module):
        def forward(self, images):
            at = len(self.seen)
            self.seen += images
            return [{"boxes": val.boxes[at + k], "scores": torch.ones(len(val.boxes[at + k])),
                     "labels": val.classes[at + k]} for k in range(len(images))]
    oracle = Oracle()
    oracle.seen = []
    metrics = task.evaluate(oracle)
    assert metrics["AP"] == pytest.approx(1.0) and metrics["AP50"] == pytest.approx(1.0)
    # Trains on the same file too (letterboxed batches of non-square images).
    assert task.proxy_fitness("fl_giou", seed=0).status == "ok"


def test_categories_of_the_validation_file_must_match(tmp_path):
    path = _coco_folder(tmp_path)
    other = json.loads(path.read_text())
    other["categories"] = [{"id": 3, "name": "a"}]
    other["annotations"] = [a for a in other["annotations"] if a["category_id"] == 3]
    (tmp_path / "val.json").write_text(json.dumps(other))
    with pytest.raises(GpLossError, match="val.json: its categories"):
        make_task("detection", {**TINY, "data": str(path), "val_data": str(tmp_path / "val.json")})


def test_an_overflowing_box_stops_before_any_training_naming_file_and_annotation(tmp_path):
    path = _coco_folder(tmp_path)
    data = json.loads(path.read_text())
    data["annotations"][1]["bbox"] = [1e308, 1e308, 1e308, 1e308]  # finite, but inf once added or scaled
    path.write_text(json.dumps(data))
    with pytest.raises(GpLossError) as err:
        make_task("detection", {**TINY, "data": str(path)})
    assert str(err.value).startswith(f"{path}: annotations[1] (id 101): bbox width must be a finite number")


def test_boxes_past_the_edges_train_clipped_to_their_letterboxed_image(tmp_path):
    path = _coco_folder(tmp_path)
    data = json.loads(path.read_text())
    data["annotations"][0]["bbox"] = [-0.5, -0.5, 80.8, 48.9]  # image 1 is 80×48: within the 1-pixel tolerance
    path.write_text(json.dumps(data))
    task = make_task("detection", {**TINY, "data": str(path), "val_data": str(path), "image_size": 48})
    boxes = torch.cat(task.data.train.boxes)
    assert torch.isfinite(boxes).all() and boxes.min() >= 0 and boxes.max() <= 48
    assert task.data.train.boxes[0][0].tolist() == pytest.approx([0, 0, 48, 48 * 48 / 80])


def test_a_box_too_thin_for_float32_is_left_out_of_training_with_a_warning(tmp_path, capsys):
    path = _coco_folder(tmp_path)
    data = json.loads(path.read_text())
    data["annotations"][0]["bbox"] = [2, 3, 1e-300, 14]  # positive, but x + width == x in float32
    path.write_text(json.dumps(data))
    task = make_task("detection", {**TINY, "data": str(path), "val_data": str(path), "image_size": 48})
    assert [len(b) for b in task.data.train.boxes] == [1, 2, 2] and len(task.data.train.classes[0]) == 1
    boxes = torch.cat(task.data.train.boxes)
    assert ((boxes[:, 2:] > boxes[:, :2]).all())  # what the detectors require of every target
    assert "1 box(es) with no width or height once letterboxed (in float32) left out of training (e.g. annotation " \
           "id 100)" in capsys.readouterr().err


@pytest.mark.parametrize("options, message", [
    ({"model": "yolo"}, "task option model must be one of fcos, retinanet, fasterrcnn, maskrcnn, got 'yolo'"),
    ({"backbone": "vgg"}, "task option backbone must be one of resnet18, resnet34, resnet50, small"),
    ({"metric": "mAP"}, "task option metric must be one of AP, AP50, AP75, APs, APm, APl"),
    ({"data": "/nope/instances.json"}, "data '/nope/instances.json' is not a file"),
    ({"val_data": "x.json"}, "val_data 'x.json' is not a file"),
    ({"image_size": 16}, "image_size must be at least 32 pixels"),
    ({"lr": float("nan")}, "task option lr must be a finite number, got nan"),
    ({"val_fraction": 1.0}, "val_fraction must be in (0, 1)"),
    ({"proxy_steps": 0}, "task option proxy_steps must be in [1,"),
    ({"batch": 4}, "unknown detection task option(s) batch"),
    ({"assignment_candidates": "edge"}, "task option assignment_candidates must be one of centre, box, got 'edge'"),
])
def test_bad_options_are_one_line(options, message):
    with pytest.raises(GpLossError) as err:
        task_info("detection").make_options(options)
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.slow
def test_the_searched_loss_is_what_trains_a_negated_loss_collapses_ap(det):
    """Focal + GIoU learns the canvases; the same formulas negated train the detector away from them."""
    options = {"image_size": 64, "canvases": 64, "max_digits": 1, "batch_size": 8, "proxy_steps": 150,
               "warmup_steps": 20, "eval_batch_size": 16}
    task = make_task("detection", options)
    focal, giou = det.paper("sigmoid_focal"), det.paper("giou")
    negated = Genome.from_formulas([("cls", "bcls", f"neg({focal})"), ("reg", "reg", f"neg({giou})")])
    with torch_threads(1):  # one thread: the same sums on every machine
        learnt = task.proxy_fitness("fl_giou", seed=0)
        collapsed = task.proxy_fitness(negated, seed=0)
    assert learnt.status == "ok" and learnt.metrics["AP50"] > 0.2, learnt
    assert collapsed.score == 0.0 or (collapsed.metrics.get("AP50") or 0.0) < 0.02, collapsed


@pytest.mark.parametrize("detector", ["fcos", "maskrcnn"])
def test_detections_capped_limits_a_detector_within_the_block_only(det, detector):
    from gp_loss.tasks.detection.task import detections_capped

    model = det.small_model(detector)
    owner = model.roi_heads if detector == "maskrcnn" else model
    before = owner.detections_per_img
    with detections_capped(model, 3):
        assert owner.detections_per_img == 3
        model.eval()
        with torch.no_grad():
            assert all(len(d["boxes"]) <= 3 for d in model(det.make_batch(detector)[0]))
    assert owner.detections_per_img == before
    with pytest.raises(RuntimeError), detections_capped(model, 3):
        raise RuntimeError("a failed evaluation")
    assert owner.detections_per_img == before
