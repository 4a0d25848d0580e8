"""The pretrained small backbones: reproducible from the recipe, shipped, loaded by default, and worth it."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest
import torch

from gp_loss.errors import GpLossError
from gp_loss.models.pretrain import (SHIPPED, Recipe, check_weights_option, pretrain_backbone, resolve_weights,
                                     save_backbone)
from gp_loss.tasks.base import lr_schedule

TINY = dict(steps=3, canvases=16, image_size=48, batch_size=4, threads=1)


@pytest.mark.parametrize("task", ["segmentation", "detection"])
def test_same_recipe_same_weights_and_another_seed_others(task):
    first, record = pretrain_backbone(Recipe(task=task, **TINY))
    again, _ = pretrain_backbone(Recipe(task=task, **TINY))
    other, _ = pretrain_backbone(Recipe(task=task, seed=1, **TINY))
    assert first.keys() == again.keys() and all(torch.equal(first[k], again[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first if first[k].is_floating_point())
    assert record["recipe"]["task"] == task and record["data_seed"] != 0


def test_saved_file_is_recorded_with_its_digest(tmp_path):
    state, record = pretrain_backbone(Recipe(task="segmentation", **TINY))
    out = tmp_path / "b.pt"
    written = save_backbone(state, record, out)
    data = out.read_bytes()
    meta = json.loads((tmp_path / "b.pt.json").read_text())
    assert meta == written and meta["bytes"] == len(data)
    assert meta["sha256"] == hashlib.sha256(data).hexdigest()
    loaded = torch.load(out, weights_only=True)
    assert all(torch.equal(loaded[k], state[k]) for k in state)


@pytest.mark.parametrize("task", ["segmentation", "detection"])
def test_shipped_file_matches_its_record(task):
    path = SHIPPED[task]
    meta = json.loads(path.with_name(path.name + ".json").read_text())
    assert hashlib.sha256(path.read_bytes()).hexdigest() == meta["sha256"]
    assert meta["recipe"]["task"] == task and meta["recipe"]["steps"] >= 1000


def _backbone_equals_file(backbone: torch.nn.Module, path) -> bool:
    state = torch.load(path, weights_only=True)
    own = backbone.state_dict()
    return own.keys() == state.keys() and all(torch.equal(own[k].cpu(), state[k]) for k in state)


def test_segmentation_starts_from_the_shipped_backbone_by_default():
    from gp_loss.tasks.segmentation.task import SegmentationOptions, SegmentationTask

    task = SegmentationTask(SegmentationOptions(canvases=8, image_size=32))
    assert _backbone_equals_file(task.build(0).backbone, SHIPPED["segmentation"])
    fresh = SegmentationTask(SegmentationOptions(canvases=8, image_size=32, weights="none"))
    assert not _backbone_equals_file(fresh.build(0).backbone, SHIPPED["segmentation"])


@pytest.mark.parametrize("model", ["fcos", "retinanet", "fasterrcnn"])
def test_every_detector_starts_from_the_shipped_backbone_by_default(model):
    from gp_loss.tasks.detection.task import DetectionOptions, DetectionTask

    task = DetectionTask(DetectionOptions(model=model, canvases=8, image_size=48))
    assert _backbone_equals_file(task.build("fl_giou", 0).backbone, SHIPPED["detection"])
    fresh = DetectionTask(DetectionOptions(model=model, canvases=8, image_size=48, weights="none"))
    assert not _backbone_equals_file(fresh.build("fl_giou", 0).backbone, SHIPPED["detection"])


def test_pretrained_means_random_init_where_nothing_is_shipped():
    assert resolve_weights("pretrained", "detection", small=False) is None
    assert resolve_weights("none", "segmentation", small=True) is None
    assert resolve_weights("", "segmentation", small=True) is None
    assert resolve_weights("pretrained", "segmentation", small=True) == str(SHIPPED["segmentation"])


def test_a_missing_weights_file_is_one_line(tmp_path):
    with pytest.raises(GpLossError, match="is not a file.*'pretrained'.*'none'"):
        check_weights_option(str(tmp_path / "nope.pt"))


def test_cosine_schedule_warms_up_then_ends_at_zero():
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=1.0)
    schedule = lr_schedule(optimizer, "cosine", steps=40, warmup_steps=100)  # warm-up capped at 40 // 4
    rates = []
    for _ in range(40):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert rates[0] == pytest.approx(0.1) and rates[9] == pytest.approx(1.0)
    assert rates[-1] < 0.01 and all(a >= b for a, b in zip(rates[9:], rates[10:]))
    plain = torch.optim.SGD([parameter], lr=1.0)
    constant = lr_schedule(plain, "constant", steps=40, warmup_steps=4)
    for _ in range(10):
        plain.step()
        constant.step()
    assert constant.get_last_lr() == [1.0]


@pytest.mark.parametrize("argv, message", [
    (["--task", "classification", "--out", "x.pt"], "--task must be one of segmentation, detection"),
    (["--task", "detection", "--out", "x.pt", "--steps", "-1"], "--steps must be from 0"),
    (["--task", "detection", "--out", "x.pt", "--lr", "nan"], "--lr must be 0"),
])
def test_bad_pretrain_flags_exit_2_in_one_line(tmp_path, argv, message):
    proc = subprocess.run([sys.executable, "-m", "gp_loss", "data", "pretrain-backbone", *argv],
                          cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 2 and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "x.pt").exists()


def test_an_unwritable_out_exits_2_before_training(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    proc = subprocess.run([sys.executable, "-m", "gp_loss", "data", "pretrain-backbone", "--task", "segmentation",
                           "--out", str(blocker / "sub" / "x.pt")], capture_output=True, text=True)
    assert proc.returncode == 2 and "cannot write --out" in proc.stderr and "step " not in proc.stderr


def test_out_a_folder_exits_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "gp_loss", "data", "pretrain-backbone", "--task", "segmentation",
                           "--out", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2 and "is not a file" in proc.stderr


@pytest.mark.slow
def test_pretrained_backbone_learns_segmentation_faster_than_random_init():
    """On canvases of another seed, size and digit count, a short CE training gets further from the shipped backbone."""
    from gp_loss.tasks.segmentation.task import SegmentationOptions, SegmentationTask

    common = dict(canvases=96, image_size=80, max_digits=2, data_seed=123, final_steps=60)
    scores = {w: SegmentationTask(SegmentationOptions(weights=w, **common)).final_score("ce", 0).score
              for w in ("pretrained", "none")}
    assert scores["pretrained"] > scores["none"] + 0.05


def test_a_pretrained_segmentation_backbone_trains_at_a_fraction_of_the_rate():
    from gp_loss.tasks.segmentation.task import SegmentationOptions, SegmentationTask

    task = SegmentationTask(SegmentationOptions(canvases=8, image_size=32, lr=0.01, backbone_lr=0.1))
    model = task.build(0)
    backbone, rest = task.parameter_groups(model)
    assert {id(p) for p in backbone["params"]} == {id(p) for p in model.backbone.parameters()}
    assert backbone["lr"] == pytest.approx(0.001) and "lr" not in rest
    assert len(backbone["params"]) + len(rest["params"]) == len(list(model.parameters()))
    fresh = SegmentationTask(SegmentationOptions(canvases=8, image_size=32, weights="none"))
    assert len(fresh.parameter_groups(fresh.build(0))) == 1
    with pytest.raises(GpLossError, match="backbone_lr must be from 0"):
        SegmentationOptions(backbone_lr=1.5).check()
