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
    assert line.startswith("wrote 6 images of 64×64 pixels and ") and "--data " + str(tmp_path / "other" / "instances.json") in line


def test_empty_out_folder_is_used(tmp_path):
    (tmp_path / "empty").mkdir()
    assert _write(tmp_path / "empty") == 0
    assert len(list((tmp_path / "empty" / "images").iterdir())) == 6


@pytest.mark.parametrize("extra, fragment", [
    (["--images", "0"], "--images must be between 1 and 100000, got 0"),
    (["--size", "31"], "--size must be between 32 and 2048"),
    (["--max-digits", "51"], "--max-digits must be between 1 and 50"),
    (["--seed", "-1"], "--seed must be between 0 and 4294967295"),
    (["--images", "100000", "--size", "2048"], "lower --images or the size"),
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


# --- digits-voc -----------------------------------------------------------------------------------------

def _write_voc(out, *extra: str) -> int:
    return main(["data", "digits-voc", "--out", str(out), "--images", "6", "--size", "32", *extra])


def _load(data: str, image_size: int = 32, data_seed: int = 0, split_seed: int = 0, val_fraction: float = 0.25):
    from gp_loss.tasks.segmentation.data import load_segmentation_data

    return load_segmentation_data(data, "", image_size, 0, 6, 4, data_seed, split_seed, val_fraction,
                                  "train", "val", torch.device("cpu"))


def test_voc_folder_loads_as_the_built_in_digits(tmp_path, capsys):
    from PIL import Image

    out = tmp_path / "voc"
    assert _write_voc(out, "--seed", "5", "--val-fraction", "0.34") == 0
    line = capsys.readouterr().out.strip()
    assert len(line.splitlines()) == 1 and "2 in val.txt" in line
    assert line.endswith(f"search on them: python runs/search_segmentation.py --data {out} --num-classes 11")
    names = sorted(p.stem for p in (out / "JPEGImages").glob("*.jpg"))
    assert names == [f"canvas_{n:05d}" for n in range(1, 7)]
    assert sorted(p.stem for p in (out / "SegmentationClass").glob("*.png")) == names
    with Image.open(out / "SegmentationClass" / "canvas_00001.png") as mask:
        assert mask.mode == "P"
    assert not list(tmp_path.glob(".*.tmp"))
    from_disk = _load(str(out))
    built_in = _load("digits", data_seed=5, split_seed=5, val_fraction=0.34)  # the same seeded split
    assert from_disk.num_classes == 21  # a VOC folder: num_classes 0 means VOC's 21; the digits use 0..10
    for disk, memory in ((from_disk.train, built_in.train), (from_disk.val, built_in.val)):
        assert disk.names == [n.removesuffix(".png") for n in memory.names]
        assert torch.equal(disk.labels, memory.labels)
        assert all(torch.equal(a, b) for a, b in zip(disk.targets or [], memory.targets or []))
        # JPEG (quality 95, over the canvases' pixel noise): close per pixel, equal on average.
        assert (disk.images.float() - memory.images.float()).abs().mean() < 10
        assert (disk.images.float().mean((1, 2, 3)) - memory.images.float().mean((1, 2, 3))).abs().max() < 1
    assert len(from_disk.val) == 2 and len(from_disk.train) == 4


def test_coco_non_square_canvases(tmp_path, capsys):
    from gp_loss.data.canvases import CanvasSpec

    out = tmp_path / "coco"
    assert main(["data", "digits-coco", "--out", str(out), "--images", "4", "--height", "48", "--width", "80",
                 "--seed", "5"]) == 0
    assert "80×48 pixels" in capsys.readouterr().out
    instances = read_instances(out / "instances.json")
    assert {(im["height"], im["width"]) for im in instances.dataset["images"]} == {(48, 80)}
    # digit sizes scale with the smaller side, as the VOC folder's and the square canvases' do
    drawn = draw_canvases(CanvasSpec(count=4, height=48, width=80, max_digits=4, min_size=6, max_size=18, seed=5))
    assert instances.dataset["annotations"] == drawn.coco["annotations"]
    assert main(["data", "digits-coco", "--out", str(tmp_path / "bad"), "--height", "31"]) == 2
    assert "--height must be between 32 and 2048" in capsys.readouterr().err


def test_the_printed_search_commands_quote_a_path_with_spaces(tmp_path, capsys):
    import shlex

    out = tmp_path / "my data" / "coco"
    assert main(["data", "digits-coco", "--out", str(out), "--images", "4"]) == 0
    line = capsys.readouterr().out.strip()
    json_path = shlex.quote(str(out / "instances.json"))
    for script in ("search_detection.py", "search_instance_segmentation.py"):  # both read instances with masks
        assert f"python runs/{script} --data {json_path}" in line
    assert shlex.split(line.split(" or ")[-1])[-1] == str(out / "instances.json")  # one argument when pasted


def test_voc_non_square_canvases(tmp_path, capsys):
    out = tmp_path / "voc"
    assert _write_voc(out, "--height", "40", "--width", "64") == 0
    assert "64×40 pixels" in capsys.readouterr().out
    data = _load(str(out), image_size=32)
    assert set(data.train.content + data.val.content) == {(20, 32)}
    assert all(t.shape == (40, 64) for t in data.val.targets)
    assert (data.train.labels[:, 20:] == 255).all() and data.train.labels[:, :20].max() >= 1
    assert (out / "ImageSets" / "Segmentation" / "train.txt").read_text().count("\n") == len(data.train)


def test_voc_refuses_non_empty_out_and_bad_numbers(tmp_path, capsys):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    assert _write_voc(tmp_path / "full") == 2
    err = capsys.readouterr().err
    assert "is not empty" in err and len(err.strip().splitlines()) == 1
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["keep.txt"]
    for extra, fragment in [(["--width", "31"], "--width must be between 32 and 2048"),
                            (["--height", "4096"], "--height must be between 32 and 2048"),
                            (["--val-fraction", "1"], "--val-fraction must be between 0 and 1"),
                            (["--val-fraction", "0.01"], "leave the validation split empty"),
                            (["--images", "1"], "--images must be between 2 and 100000")]:
        assert _write_voc(tmp_path / "out", *extra) == 2
        err = capsys.readouterr().err
        assert fragment in err and len(err.strip().splitlines()) == 1
        assert not (tmp_path / "out").exists()
