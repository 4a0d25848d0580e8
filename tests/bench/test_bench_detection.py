"""The detection-loss benchmark: its figures, the printed table, its refusals (all on the CPU, tiny sizes)."""
import contextlib
import io
import json
import math

import pytest
import torch

from gp_loss.bench import detection as bench
from gp_loss.cli import main

KEYS = {"model", "backbone", "image_size", "batch", "steps", "warmup", "device", "seed", "boxes",
        "torchvision_loss", "genome_loss", "genome", "ms", "ratio", "ratio_q1", "ratio_q3", "ratio_of_medians",
        "loss_terms", "max_relative_difference", "target", "target_met"}


@pytest.fixture(autouse=True)
def _few_threads():
    """On 2 threads at most (the tests run on small CPU machines next to other work)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(min(2, threads))
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def quick_json():
    """``--quick --json`` on the CPU, with 2 timed steps and no warm-up to keep it short."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = main(["bench", "detection-loss", "--quick", "--device", "cpu", "--steps", "2", "--warmup", "0",
                     "--json"])
    assert code == 0
    return json.loads(buffer.getvalue())


def test_quick_run_gives_every_figure(quick_json):
    r = quick_json
    assert set(r) == KEYS
    assert (r["model"], r["backbone"], r["image_size"], r["batch"], r["steps"], r["warmup"], r["device"]) == \
        ("fcos", "small", 64, 2, 2, 0, "cpu")
    assert r["boxes"] > 0 and set(r["genome"]) == {"cls", "reg"}
    for which in ("torchvision", "genome"):
        m = r["ms"][which]
        assert len(m["steps"]) == 2 and all(t > 0 for t in m["steps"])
        assert m["q1"] <= m["median"] <= m["q3"]
    assert r["ratio_q1"] <= r["ratio"] <= r["ratio_q3"] and r["ratio"] > 0
    assert r["target"] == 1.05 and r["target_met"] == (r["ratio"] <= 1.05)


def test_fcos_focal_giou_terms_equal_torchvision(quick_json):
    terms = quick_json["loss_terms"]
    assert set(terms) == {"classification", "bbox_regression", "bbox_ctrness"}
    for t in terms.values():
        assert t["torchvision"] > 0 and t["relative_difference"] is not None
    assert quick_json["max_relative_difference"] < 1e-4
    assert quick_json["max_relative_difference"] == max(t["relative_difference"] for t in terms.values())


def test_the_table_and_the_target_line_are_printed(quick_json, monkeypatch, capsys):
    calls = []

    def fake(*args, **kwargs):
        calls.append((args, kwargs))
        return quick_json

    monkeypatch.setattr(bench, "bench_detection_loss", fake)
    assert main(["bench", "detection-loss", "--quick", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert calls == [(("fcos", "small", 64, 2, 3, 1), {"device": "cpu", "seed": 0})]  # --quick's sizes
    assert "median ms" in out and "torchvision" in out and "genome / torchvision:" in out
    assert "largest relative difference of the comparable terms:" in out
    assert out.strip().splitlines()[-1].startswith("target <= 1.05x: " + ("met" if quick_json["target_met"]
                                                                          else "not met"))
    # given options win over --quick's
    assert main(["bench", "detection-loss", "--quick", "--backbone", "resnet18", "--size", "96", "--device",
                 "cpu"]) == 0
    assert calls[-1][0][:3] == ("fcos", "resnet18", 96)


def test_not_comparable_terms_are_reported_as_such(quick_json):
    r = dict(quick_json, loss_terms={
        "loss_classifier": {"torchvision": 2.0, "genome": 2.0, "relative_difference": 0.0},
        "loss_box_reg": {"torchvision": 0.1, "genome": 0.2, "relative_difference": None}},
        max_relative_difference=0.0)
    text = "\n".join(bench.format_report(r))
    assert "loss_box_reg 0.1 vs 0.2 (not comparable)" in text


def test_relative_difference():
    assert bench._relative_difference(1.0, 1.0) == 0.0
    assert bench._relative_difference(1.1, 1.0) == pytest.approx(0.1)
    assert bench._relative_difference(0.1, 0.0) == math.inf


@pytest.mark.parametrize("argv, message", [
    (["--model", "yolo"], "--model must be one of fcos, retinanet, fasterrcnn, got 'yolo'"),
    (["--backbone", "vgg"], "--backbone must be one of"),
    (["--size", "16"], "--size must be at least 32 pixels, got 16"),
    (["--batch", "0"], "--batch must be at least 1, got 0"),
    (["--steps", "0"], "--steps must be at least 1, got 0"),
    (["--warmup", "-1"], "--warmup must be 0 or more, got -1"),
    (["--device", "gpu"], "device 'gpu' is not one of"),
])
def test_bad_arguments_exit_2_with_one_line(argv, message, capsys):
    assert main(["bench", "detection-loss", "--quick", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]
