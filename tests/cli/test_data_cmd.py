"""``gp-loss data digits-coco``: the folder it writes is the drawn data, read back as users' COCO data is."""
import numpy as np
import pytest
import torch

from gp_loss.cli import main
from gp_loss.data.canvases import square_spec
from gp_loss.data.canvases import draw_canvases
from gp_loss.data.coco import load_images, read_instances

SMALL = ["--images", "6", "--size", "64"]


def _write(out, *extra: str) -> int:
    return main(["data", "digits-coco", "--out", str(out), *SMALL, *extra])


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """One folder (seed 3) and the canvases drawn directly with the same spec."""
    out = tmp_path_factory.mktemp("coco") / "nested" / "digits"
    assert _write(out, "--seed", "3") == 0
    return out, draw_canvases(square_spec(6, 64, 4, 3))


def test_folder_round_trips_through_the_coco_reader(written):
    out, drawn = written
    instances = read_instances(out / "instances.json")
    assert [im["file_name"] for im in instances.dataset["images"]] == [
        f"images/canvas_{n:05d}.png" for n in range(1, 7)]
    assert instances.dataset["annotations"] == drawn.coco["annotations"]
    assert instances.dataset["categories"] == drawn.coco["categories"]
    assert instances.dropped.count == 0
    loaded = load_images(instances, 64)
    assert torch.all(loaded.scales == 1.0)
    assert (loaded.images - drawn.images).abs().max() <= 1 / 255 + 1e-6
    assert not list(out.parent.glob(".*.tmp"))  # the temporary sibling was renamed into place


def test_rle_masks_decode_to_their_boxes(written):
    from pycocotools import mask as mask_utils

    out, _ = written
    for a in read_instances(out / "instances.json").dataset["annotations"]:
        mask = mask_utils.decode({**a["segmentation"], "counts": a["segmentation"]["counts"].encode()})
        ys, xs = np.nonzero(mask)
        box = [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()]
        assert [float(v) for v in box] == a["bbox"]
        assert float(mask.sum()) == a["area"]


def test_same_seed_same_bytes_other_seed_differs(written, tmp_path, capsys):
    out, _ = written
    assert _write(tmp_path / "again", "--seed", "3") == 0
    assert (tmp_path / "again" / "instances.json").read_bytes() == (out / "instances.json").read_bytes()
    assert _write(tmp_path / "other", "--seed", "4") == 0
    assert (tmp_path / "other" / "instances.json").read_bytes() != (out / "instances.json").read_bytes()
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("wrote 6 images and ") and "--data " + str(tmp_path / "other" / "instances.json") in line


def test_empty_out_folder_is_used(tmp_path):
    (tmp_path / "empty").mkdir()
    assert _write(tmp_path / "empty") == 0
    assert len(list((tmp_path / "empty" / "images").iterdir())) == 6


@pytest.mark.parametrize("extra, fragment", [
    (["--images", "0"], "--images must be between 1 and 100000, got 0"),
    (["--size", "31"], "--size must be between 32 and 2048"),
    (["--max-digits", "51"], "--max-digits must be between 1 and 50"),
    (["--seed", "-1"], "--seed must be between 0 and 4294967295"),
    (["--images", "100000", "--size", "2048"], "lower --images or --size"),
])
def test_bad_numbers_exit_2_with_one_line(tmp_path, capsys, extra, fragment):
    assert _write(tmp_path / "out", *extra) == 2
    err = capsys.readouterr().err
    assert fragment in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_refuses_non_empty_or_file_out(tmp_path, capsys):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    assert _write(tmp_path / "full") == 2
    err = capsys.readouterr().err
    assert "is not empty" in err and len(err.strip().splitlines()) == 1
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["keep.txt"]
    (tmp_path / "file").write_text("")
    assert _write(tmp_path / "file") == 2
    assert "is a file" in capsys.readouterr().err


def test_non_integer_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        _write(tmp_path / "out", "--images", "many")
    assert info.value.code == 2
    assert "invalid int value" in capsys.readouterr().err


def test_interrupted_write_leaves_nothing(tmp_path, monkeypatch, capsys):
    from PIL import Image

    saved = []
    real_save = Image.Image.save

    def save_then_interrupt(self, *args, **kwargs):
        if len(saved) == 2:
            raise KeyboardInterrupt
        saved.append(args[0])
        return real_save(self, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", save_then_interrupt)
    assert _write(tmp_path / "out") == 130
    assert "interrupted" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # neither DIR nor its temporary sibling
