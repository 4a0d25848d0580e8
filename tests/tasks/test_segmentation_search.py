"""runs/search_segmentation.py end to end, with the smallest budget: built-in data, and a VOC folder of non-square images."""
import importlib.util
import json

import pytest
import torch

from gp_loss.evolution import script

pytestmark = pytest.mark.slow

TINY = ["--population", "2", "--offspring", "2", "--evaluations", "3", "--final-seeds", "1", "--final-top", "1",
        "--proxy-steps", "2", "--final-steps", "2", "--image-size", "32", "--no-progress"]


@pytest.fixture(scope="module")
def cli(load_script):
    return load_script("search_segmentation")


def _run(cli, argv):
    return script.main(cli.__doc__, cli.DEFAULTS, "out/unused", cli.TASK_FLAGS, argv)


def test_a_search_leaves_every_metric_and_a_seg_function(cli, tmp_path, capsys):
    out = tmp_path / "run"
    assert _run(cli, ["--out", str(out), "--canvases", "24", "--metric", "bf1"] + TINY) == 0
    final = json.loads((out / "final.json").read_text())
    assert final["metric"] == "validation BF1"
    names = [row["name"] for row in final["rows"]]
    assert names == ["top1", "ce", "dice"]
    for row in final["rows"]:
        assert {"mIoU", "BF1", "BIoU", "FWIoU"} <= set(row["metrics"])
        assert row["mean"] == pytest.approx(row["metrics"]["BF1"])
    spec = importlib.util.spec_from_file_location("hof", out / "hall_of_fame.py")
    hof = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hof)
    yhat = torch.softmax(torch.randn(2, 11, 8, 8), 1)
    y = torch.nn.functional.one_hot(torch.randint(0, 11, (2, 8, 8)), 11).permute(0, 3, 1, 2).float()
    assert hof.seg(yhat, y).dim() == 0  # drops into a training loop: seg(yhat, y) -> scalar
    printed = capsys.readouterr().out
    assert "validation BF1" in printed and "BF1" in printed


def test_a_voc_folder_of_non_square_images(cli, tmp_path, capsys):
    from gp_loss.cli import main
    voc = tmp_path / "voc"
    assert main(["data", "digits-voc", "--out", str(voc), "--images", "12", "--height", "40", "--width", "56"]) == 0
    out = tmp_path / "run"
    assert _run(cli, ["--out", str(out), "--data", str(voc), "--num-classes", "11"] + TINY) == 0
    final = json.loads((out / "final.json").read_text())
    assert all(0 <= row["metrics"]["mIoU"] <= 1 for row in final["rows"])


def test_a_bad_voc_folder_is_one_line_before_anything_is_written(cli, tmp_path, capsys):
    voc = tmp_path / "voc"
    (voc / "JPEGImages").mkdir(parents=True)
    code = _run(cli, ["--out", str(tmp_path / "run"), "--data", str(voc)] + TINY)
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and str(voc) in err
    assert not (tmp_path / "run").exists()
