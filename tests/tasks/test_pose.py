"""The pose task: the keypoints reader's one-line errors, the ink keypoints, heatmap encode/decode, OKS AP,
a few training steps end to end, ``gp-loss evaluate --task pose --json`` and ``runs/search_pose.py --help``."""
import copy
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from gp_loss.cli import main
from gp_loss.data.keypoints import (COCO_PERSON_KEYPOINTS, COCO_PERSON_SIGMAS, add_digit_keypoints, ink_keypoints,
                                    read_keypoints)
from gp_loss.errors import GpLossError
from gp_loss.metrics.keypoints import keypoint_metrics
from gp_loss.tasks.pose.data import parse_sigmas
from gp_loss.tasks.pose.heatmaps import decode, encode
from tests.helpers import ROOT, assert_user_error

K = 5


def _dataset() -> dict:
    """A small COCO keypoints dict (no image files: the reader's checks come before any image is read)."""
    anns = []
    for i in range(4):
        kp = [c for j in range(K) for c in (10.0 + 5 * j + i, 12.0 + 3 * j, 2)]
        anns.append({"id": i + 1, "image_id": 1 + i % 2, "category_id": 1, "bbox": [5.0 + i, 8.0, 40.0, 30.0],
                     "area": 900.0, "iscrowd": 0, "keypoints": kp, "num_keypoints": K})
    return {"images": [{"id": 1, "file_name": "a.png", "width": 80, "height": 48},
                       {"id": 2, "file_name": "b.png", "width": 80, "height": 48}],
            "annotations": anns,
            "categories": [{"id": 1, "name": "thing", "keypoints": [f"k{j}" for j in range(K)],
                            "skeleton": [[1, 2]]}]}


def _write(tmp_path, dataset) -> str:
    path = tmp_path / "keypoints.json"
    path.write_text(json.dumps(dataset))  # NaN and Infinity are written as JSON's extension, as Python reads it
    return str(path)


def _with(change):
    data = _dataset()
    change(data)
    return data


MALFORMED = {
    "keypoints of the wrong length": (
        lambda d: d["annotations"][2].update(keypoints=[1.0, 2.0, 2] * (K - 1)),
        "annotation id 3: keypoints must be a list of 3 × 5 = 15 values"),
    "a visibility outside 0, 1, 2": (
        lambda d: d["annotations"][1]["keypoints"].__setitem__(5, 3),
        "annotation id 2: keypoint 2 has visibility 3"),
    "a NaN coordinate": (
        lambda d: d["annotations"][0]["keypoints"].__setitem__(3, math.nan),
        "annotation id 1: keypoint 2 x must be a finite number"),
    "an infinite coordinate": (
        lambda d: d["annotations"][3]["keypoints"].__setitem__(4, math.inf),
        "annotation id 4: keypoint 2 y must be a finite number"),
    "a category without keypoints": (
        lambda d: d["categories"][0].pop("keypoints"),
        "categories[0] (id 1) has no 'keypoints'"),
    "num_keypoints that disagrees": (
        lambda d: d["annotations"][0].update(num_keypoints=2),
        "annotation id 1: num_keypoints is 2 but 5 keypoints have v > 0"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_keypoints_are_one_line_naming_the_file_and_entry(tmp_path, case):
    change, expected = MALFORMED[case]
    path = _write(tmp_path, _with(change))
    with pytest.raises(GpLossError) as err:
        read_keypoints(path)
    text = str(err.value)
    assert "\n" not in text and text.startswith(path) and expected in text, text


@pytest.mark.parametrize("case", ["keypoints of the wrong length", "a category without keypoints"])
def test_malformed_keypoints_stop_evaluate_with_exit_2(tmp_path, capsys, case):
    change, expected = MALFORMED[case]
    path = _write(tmp_path, _with(change))
    code = main(["evaluate", "--task", "pose", "--loss", "mse", "--data", path, "--steps", "1", "--seeds", "1",
                 "--device", "cpu"])
    err = assert_user_error(code, capsys.readouterr().err)
    assert path in err and expected in err


def test_a_well_formed_file_reads_with_num_keypoints_filled_in(tmp_path):
    data = _dataset()
    data["annotations"][0].pop("num_keypoints")
    data["annotations"][0]["keypoints"][2] = 0  # the first keypoint not labelled
    instances, names, skeleton = read_keypoints(_write(tmp_path, data))
    assert names == [f"k{j}" for j in range(K)] and skeleton == [[1, 2]]
    assert [a["num_keypoints"] for a in instances.dataset["annotations"]] == [K - 1, K, K, K]


def test_ink_keypoints_are_the_extremes_and_the_centroid():
    mask = np.zeros((10, 12), dtype=bool)
    mask[2:8, 3:6] = True  # a 6×3 block: rows 2..7, columns 3..5
    kp = ink_keypoints(mask)
    points = [(kp[3 * j], kp[3 * j + 1]) for j in range(K)]
    assert points == [(4.5, 2.5), (4.5, 7.5), (3.5, 4.5), (5.5, 4.5), (4.5, 5.0)]
    assert kp[2::3] == [2] * K
    assert ink_keypoints(np.zeros((4, 4), dtype=bool)) == [0.0] * (3 * K)


def test_digit_keypoints_are_deterministic_and_inside_their_boxes():
    from gp_loss.data.canvases import draw_canvases, square_spec

    coco = add_digit_keypoints(draw_canvases(square_spec(6, 64, 3, seed=4)).coco)
    again = add_digit_keypoints(draw_canvases(square_spec(6, 64, 3, seed=4)).coco)
    assert coco["annotations"] == again["annotations"]
    for a in coco["annotations"]:
        x, y, w, h = a["bbox"]
        kp = np.asarray(a["keypoints"]).reshape(K, 3)
        assert a["num_keypoints"] == K
        assert ((kp[:, 0] >= x) & (kp[:, 0] <= x + w)).all() and ((kp[:, 1] >= y) & (kp[:, 1] <= y + h)).all()


def test_heatmaps_encode_and_decode_round_trip():
    stride, h, w = 4, 16, 12
    gen = torch.Generator().manual_seed(0)
    points = torch.rand(8, K, 2, generator=gen) * torch.tensor([w * stride - 8, h * stride - 8]) + 4
    heatmaps = encode(points, h, w, stride, sigma=1.0)
    assert heatmaps.shape == (8, K, h, w) and float(heatmaps.max()) <= 1.0
    decoded, peaks = decode(heatmaps, stride)
    # The arg-max's cell and the quarter-cell shift place each keypoint within a quarter cell.
    assert (decoded - points).abs().max() <= 0.25 * stride + 1e-4
    assert (peaks > 0.6).all()


def test_oks_ap_of_perfect_predictions_is_one():
    truth = _dataset()
    predictions = [{"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"], "score": 1.0}
                   for a in truth["annotations"]]
    metrics = keypoint_metrics(truth, predictions, [0.1] * K)
    assert metrics["AP"] == pytest.approx(1.0) and metrics["AP50"] == pytest.approx(1.0)
    assert metrics["AP75"] == pytest.approx(1.0)
    moved = copy.deepcopy(predictions)
    for p in moved:
        p["keypoints"] = [v + 6.0 if j % 3 != 2 else v for j, v in enumerate(p["keypoints"])]
    assert keypoint_metrics(truth, moved, [0.1] * K)["AP"] < 0.5


def test_oks_sigmas_default_to_cocos_for_its_person_keypoints():
    assert parse_sigmas("", 17, list(COCO_PERSON_KEYPOINTS)) == COCO_PERSON_SIGMAS
    assert parse_sigmas("", 3, ["a", "b", "c"]) == (0.05, 0.05, 0.05)
    assert parse_sigmas("0.05", 2, ["a", "b"]) == (0.05, 0.05)
    assert parse_sigmas("0.05, 0.07", 2, ["a", "b"]) == (0.05, 0.07)
    with pytest.raises(GpLossError, match="gives 2 values but the data has 3 keypoints"):
        parse_sigmas("0.05,0.07", 3, ["a", "b", "c"])


@pytest.fixture(scope="module")
def keypoints_folder(tmp_path_factory):
    """``gp-loss data digits-coco --keypoints`` of a few non-square canvases."""
    out = tmp_path_factory.mktemp("pose") / "digits"
    assert main(["data", "digits-coco", "--keypoints", "--out", str(out), "--images", "12", "--height", "48",
                 "--width", "80", "--max-digits", "2", "--seed", "3"]) == 0
    return out / "instances.json"


def test_digits_coco_keypoints_writes_what_the_reader_takes(keypoints_folder):
    instances, names, skeleton = read_keypoints(keypoints_folder)
    assert names == ["top", "bottom", "left", "right", "centre"] and len(skeleton) == 4
    assert all(len(a["keypoints"]) == 3 * K for a in instances.dataset["annotations"])


def test_the_task_trains_a_few_steps_end_to_end(keypoints_folder):
    from gp_loss.language.genome import Genome
    from gp_loss.tasks import make_task

    task = make_task("pose", {"data": str(keypoints_folder), "batch_size": 4, "eval_batch_size": 8,
                              "crop_height": 32, "crop_width": 48, "val_fraction": 0.5}, "cpu")
    assert task.data.train.crops.shape[1:] == (3, 32, 48)
    outcome = task.train("mse", seed=0, steps=3)
    assert outcome.status == "ok" and outcome.steps == 3
    assert {"AP", "AP50", "AP75"} <= set(outcome.metrics) and 0.0 <= outcome.score <= 1.0
    assert outcome.score == outcome.metrics["AP"]
    nan = Genome.from_formulas([("pose", "heat", "add(yhat, exp(exp(exp(exp(y)))))")])  # inf at the peaks
    failed = task.train(nan, seed=0, steps=3)
    assert failed.status == "non-finite" and "'pose'" in failed.reason


def test_evaluate_json_reports_every_keypoint_metric(keypoints_folder, capsys):
    argv = ["evaluate", "--task", "pose", "--loss", "mse", "--data", str(keypoints_folder), "--steps", "2",
            "--seeds", "1", "--device", "cpu", "--json"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["task"] == "pose" and report["metric"] == "validation AP"
    assert {"AP", "AP50", "AP75", "AR"} <= set(report["losses"]["mse"])


def test_evaluate_refuses_oks_sigmas_of_the_wrong_count(keypoints_folder, capsys):
    code = main(["evaluate", "--task", "pose", "--loss", "mse", "--data", str(keypoints_folder), "--steps", "1",
                 "--seeds", "1", "--oks-sigmas", "0.1,0.2", "--device", "cpu"])
    err = assert_user_error(code, capsys.readouterr().err)
    assert "oks_sigmas gives 2 values but the data has 5 keypoints" in err


def test_search_pose_script_help():
    done = subprocess.run([sys.executable, str(ROOT / "runs" / "search_pose.py"), "--help"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "--oks-sigmas" in done.stdout and "AutoLoss-Zero" in done.stdout


def test_the_mse_baseline_is_simplebaselines_loss_on_labelled_keypoints():
    from gp_loss.language.genome import Genome
    from gp_loss.tasks.pose.task import INFO, loss_terms

    gen = torch.Generator().manual_seed(1)
    heatmaps, targets = torch.randn(3, K, 6, 4, generator=gen), torch.rand(3, K, 6, 4, generator=gen)
    weights = torch.tensor([[1.0, 0, 1, 1, 1], [1, 1, 1, 1, 0], [0, 0, 1, 1, 1]])
    genome = Genome.from_formulas([("pose", "heat", INFO.baselines["mse"]["pose"])])
    assert INFO.layout(INFO.options()) == {"pose": "heat"}
    loss = loss_terms(genome)(heatmaps, targets, weights)["pose"]
    w = weights[:, :, None, None]
    # The kind's reduction, sum / (N*H*W): SimpleBaseline's mean of (w (yhat - y))² times K.
    torch.testing.assert_close(loss, K * ((w * (heatmaps - targets)) ** 2).mean())


@pytest.mark.parametrize("stage_name", ["rejection", "simulation"])
def test_the_heat_filters_pass_mse_and_reject_its_negation(stage_name):
    from gp_loss.filters.base import Candidate
    from gp_loss.filters.rejection import RejectionStage
    from gp_loss.filters.simulation import SimulationStage
    from gp_loss.language import parse_formula
    from primitives import get_kind

    stage = RejectionStage() if stage_name == "rejection" else SimulationStage(seed=0)
    kind = get_kind("heat")
    mse = "mul(w, square(add(yhat, neg(y))))"
    assert stage(Candidate(kind, parse_formula(kind, mse))).passed
    assert not stage(Candidate(kind, parse_formula(kind, f"neg({mse})"))).passed


def test_a_proxy_no_better_than_a_constant_pose_stops_at_its_collapse_check(keypoints_folder):
    from gp_loss.language.genome import Genome
    from gp_loss.tasks import make_task

    task = make_task("pose", {"data": str(keypoints_folder), "batch_size": 4, "crop_height": 32, "crop_width": 32,
                              "val_fraction": 0.5, "proxy_steps": 6, "collapse_check": 0.5}, "cpu")
    assert 0.0 <= task.chance() <= 1.0
    flat = Genome.from_formulas([("pose", "heat", "square(yhat)")])  # every heatmap pushed to 0: no peak anywhere
    outcome = task.proxy_fitness(flat, seed=0)
    assert outcome.status == "collapsed" and outcome.steps == 3 and not outcome.failed
    assert "no better than one constant pose" in outcome.reason and {"AP", "AP50"} <= set(outcome.metrics)
