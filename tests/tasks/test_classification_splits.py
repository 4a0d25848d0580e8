"""Classification on data with its own validation / test folders, symmetric label noise, shortened proxies, GCE."""
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from gp_loss.data.label_noise import flip_labels
from gp_loss.errors import GpLossError
from gp_loss.evolution import script
from gp_loss.language import compile_loss, parse_formula
from gp_loss.language.genome import Genome
from gp_loss.paper_losses import PAPER_LOSSES
from gp_loss.tasks.classification import INFO, ClassificationOptions, ClassificationTask
from primitives import get_kind
from tests.helpers import assert_user_error

CE = Genome.from_formulas([("cls", "cls", PAPER_LOSSES["ce"].formula)])


def _folder(root, classes=("cat", "dog", "eel"), per_class=4, size=8, seed=0):
    """An ImageFolder of ``per_class`` random ``size``×``size`` PNGs per class, each class its own brightness."""
    rng = np.random.default_rng(seed)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(40 + 80 * c + rng.integers(-20, 20, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return str(root)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    base = tmp_path_factory.mktemp("folders")
    return {"train": _folder(base / "train", per_class=10), "val": _folder(base / "val", per_class=3, seed=1),
            "test": _folder(base / "test", per_class=2, seed=2, size=12)}


def _task(**options):
    return ClassificationTask(ClassificationOptions(image_size=8, proxy_epochs=2, final_epochs=1, batch_size=4,
                                                    **options))


@pytest.fixture(scope="module")
def cli(load_script):
    return load_script("search_classification")


def _one_line_error(capsys, code: int) -> str:
    return assert_user_error(code, capsys.readouterr().err)


# -- splits from their own folders ----------------------------------------------------------------
def test_both_folders_given_all_of_data_trains(folders):
    t = _task(data=folders["train"], val_data=folders["val"], test_data=folders["test"])
    assert {s: len(i) for s, i in t.splits.items()} == {"train": 30, "val": 9, "test": 6}
    assert t.classes == 3 and tuple(t.images.shape) == (45, 3, 8, 8)  # the 12×12 test images resized too
    assert t.labels[t.splits["val"]].tolist() == [0] * 3 + [1] * 3 + [2] * 3
    assert t.labels[t.splits["test"]].tolist() == [0] * 2 + [1] * 2 + [2] * 2
    assert sorted(t.splits["train"].tolist()) == list(range(30))


@pytest.mark.parametrize("given, cut", [("val", "test"), ("test", "val")])
def test_one_folder_given_data_splits_into_train_and_the_other(folders, given, cut):
    t = _task(data=folders["train"], **{f"{given}_data": folders[given]}, train_fraction=0.6, val_fraction=0.2)
    # 30 images in the ratio 0.6 : 0.2: 22.5 -> 22 train (round half to even), 8 in the split cut from data.
    assert len(t.splits["train"]) == 22 and len(t.splits[cut]) == 8
    assert len(t.splits[given]) == {"val": 9, "test": 6}[given]
    cut_from_data = set(t.splits["train"].tolist()) | set(t.splits[cut].tolist())
    assert cut_from_data == set(range(30))
    again = _task(data=folders["train"], **{f"{given}_data": folders[given]}, split_seed=1)
    assert set(again.splits["train"].tolist()) != set(t.splits["train"].tolist())


def test_separate_folders_train_and_score(folders):
    t = _task(data=folders["train"], val_data=folders["val"], test_data=folders["test"])
    proxy, final = t.proxy_fitness(CE, seed=0), t.final_score(CE, seed=0)
    assert proxy.status == final.status == "ok" and proxy.steps == 2 * math.ceil(30 / 4)
    assert 0 <= proxy.score <= 1 and 0 <= final.score <= 1


def test_mismatched_class_folders_are_one_line_naming_the_difference(folders, tmp_path):
    odd = _folder(tmp_path / "odd", classes=("dgo", "eel"))
    with pytest.raises(GpLossError) as info:
        ClassificationOptions(data=folders["train"], val_data=odd).check()
    message = str(info.value)
    assert message.startswith(f"--val-data {str(odd)!r}: its class folders differ from --data "
                              f"{str(folders['train'])!r}'s: missing 'cat', 'dog'; extra 'dgo'")
    assert "\n" not in message
    hostile = _folder(tmp_path / "v\nal\x1b[31m", classes=("dgo",))  # a newline and an escape in the path
    with pytest.raises(GpLossError) as info:
        ClassificationOptions(data=folders["train"], val_data=str(hostile)).check()
    assert "\n" not in str(info.value) and "\x1b" not in str(info.value)
    with pytest.raises(GpLossError, match="--test-data .*missing 'eel'"):
        ClassificationOptions(data=folders["train"], test_data=_folder(tmp_path / "two", classes=("cat", "dog")
                                                                       )).check()


def test_bad_folder_options_are_one_line(folders, tmp_path):
    with pytest.raises(GpLossError, match="task option val_data .*missing.* does not exist"):
        ClassificationOptions(data=folders["train"], val_data=str(tmp_path / "missing")).check()
    with pytest.raises(GpLossError, match="task option test_data needs an ImageFolder as data"):
        ClassificationOptions(test_data=folders["test"]).check()  # data: digits


def test_the_script_refuses_mismatched_folders_with_exit_2(cli, capsys, folders, tmp_path):
    odd = _folder(tmp_path / "odd", classes=("cat", "dgo", "eel"))
    code = script.main(cli.__doc__, cli.defaults, "out/unused", cli.TASK_FLAGS,
                       ["--data", folders["train"], "--val-data", odd, "--out", str(tmp_path / "run")])
    err = _one_line_error(capsys, code)
    assert "its class folders differ" in err and "missing 'dog'; extra 'dgo'" in err
    assert not (tmp_path / "run").exists()


# -- label noise -------------------------------------------------------------------------------------
@pytest.mark.parametrize("rate", [-0.1, 1.0, float("nan"), True, "0.2"])
def test_label_noise_out_of_bounds_is_one_line(rate):
    with pytest.raises(GpLossError, match="label_noise") as info:
        ClassificationOptions(label_noise=rate).check()
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("rate", ["-0.1", "1.0", "nan"])
def test_the_script_refuses_label_noise_out_of_bounds_with_exit_2(cli, capsys, tmp_path, rate):
    code = script.main(cli.__doc__, cli.defaults, "out/unused", cli.TASK_FLAGS,
                       ["--label-noise", rate, "--out", str(tmp_path / "run")])
    assert "label_noise" in _one_line_error(capsys, code)


def test_label_noise_flips_exactly_its_share_to_other_classes(folders):
    clean = _task(data=folders["train"], val_data=folders["val"], test_data=folders["test"])
    noisy = _task(data=folders["train"], val_data=folders["val"], test_data=folders["test"], label_noise=0.3)
    assert clean.flipped == 0 and noisy.flipped == round(0.3 * 30) == 9
    changed = (noisy.labels != clean.labels).nonzero().flatten()
    assert torch.equal(changed, noisy.noisy_indices)  # every flip moved the label to another class
    assert set(changed.tolist()) <= set(noisy.splits["train"].tolist())
    for split in ("val", "test"):
        assert torch.equal(noisy.labels[noisy.splits[split]], clean.labels[clean.splits[split]])
    assert torch.equal(noisy.images, clean.images)


def test_label_noise_on_digits_touches_only_the_training_split():
    clean, noisy = ClassificationTask(), ClassificationTask(ClassificationOptions(label_noise=0.4, noise_seed=3))
    n_train = len(clean.splits["train"])
    assert noisy.flipped == round(0.4 * n_train)
    assert int((noisy.labels != clean.labels).sum()) == noisy.flipped
    for split in ("val", "test"):
        assert torch.equal(noisy.labels[noisy.splits[split]], clean.labels[clean.splits[split]])


def test_the_noise_seed_sets_the_noise_and_nothing_else(folders):
    opts = {"data": folders["train"], "val_data": folders["val"], "label_noise": 0.5}
    a, b, c = _task(noise_seed=4, **opts), _task(noise_seed=4, **opts), _task(noise_seed=5, **opts)
    assert torch.equal(a.labels, b.labels) and torch.equal(a.noisy_indices, b.noisy_indices)
    assert not torch.equal(a.labels, c.labels)
    assert torch.equal(a.splits["train"], c.splits["train"])  # the split follows split_seed alone


def test_flip_labels_is_uniform_over_the_other_classes():
    labels = torch.zeros(30_000, dtype=torch.int64)
    noisy, picked = flip_labels(labels, torch.arange(30_000), 0.5, 4, seed=0)
    assert len(picked) == 15_000 and (noisy[picked] != 0).all()
    counts = torch.bincount(noisy[picked], minlength=4)[1:].double() / 15_000
    assert torch.allclose(counts, torch.full((3,), 1 / 3, dtype=torch.float64), atol=0.02)


def test_the_script_records_label_noise_and_the_run_seed(cli, capsys, folders, tmp_path):
    out = tmp_path / "run"
    code = script.main(cli.__doc__, cli.defaults, "out/unused", cli.TASK_FLAGS,
                       ["--data", folders["train"], "--val-data", folders["val"], "--test-data", folders["test"],
                        "--label-noise", "0.2", "--seed", "7", "--image-size", "8", "--out", str(out),
                        "--population", "2", "--offspring", "1", "--evaluations", "2", "--final-seeds", "1",
                        "--final-top", "1", "--proxy-epochs", "1", "--final-epochs", "1", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    options = json.loads((out / "config.json").read_text())["task_options"]
    assert options["label_noise"] == 0.2 and options["noise_seed"] == 7
    assert options["val_data"] == folders["val"] and options["test_data"] == folders["test"]


def test_the_noise_seed_of_a_config_file_wins_over_the_run_seed(cli, tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"task_options": {"noise_seed": 11}}))
    args = script.build_parser("", cli.TASK_FLAGS).parse_args(["--seed", "3", "--config", str(tmp_path / "c.json")])
    config, _, _ = script.config_from_args(args, cli.TASK_FLAGS, cli.defaults, "out/x")
    assert config.seed == 3 and config.task_options["noise_seed"] == 11


def test_evaluate_draws_the_noise_from_its_seed_unless_told(folders):
    from gp_loss.cli import build_parser
    from gp_loss.cli.evaluate_cmd import task_options_from
    from gp_loss.tasks import task_info

    def options(*flags, task="classification"):
        args = build_parser().parse_args(["evaluate", "--loss", "ce", "--task", task, *flags])
        return task_options_from(args, task_info(task))

    assert options("--label-noise", "0.2", "--seed", "4") == {"label_noise": 0.2, "noise_seed": 4}
    assert options("--label-noise", "0.2", "--seed", "4", "--noise-seed", "9")["noise_seed"] == 9
    assert options("--val-data", folders["val"], "--test-data", folders["test"]) == {
        "val_data": folders["val"], "test_data": folders["test"]}
    with pytest.raises(GpLossError, match="--label-noise does not apply to the segmentation task"):
        options("--label-noise", "0.2", task="segmentation")


def test_evaluate_trains_on_the_given_folders(capsys, folders):
    from gp_loss.cli import main

    argv = ["evaluate", "--loss", "gce", "--data", folders["train"], "--val-data", folders["val"], "--test-data",
            folders["test"], "--label-noise", "0.1", "--image-size", "8", "--epochs", "1", "--seeds", "1",
            "--device", "cpu", "--json"]
    assert main(argv) == 0
    row = json.loads(capsys.readouterr().out)["rows"][0]
    assert row["loss"] == "gce" and row["status"] == ["ok"]


# -- proxy fidelity ---------------------------------------------------------------------------------
def test_fidelity_trains_its_share_of_the_proxy_steps(folders):
    t = _task(data=folders["train"], val_data=folders["val"], test_data=folders["test"])
    full = 2 * t.steps_per_epoch  # 2 epochs of 8 batches (30 images, 4 a batch)
    assert full == 16
    assert t.proxy_fitness(CE, seed=0, fidelity=0.5).steps == 8
    assert t.proxy_fitness(CE, seed=0, fidelity=0.3).steps == round(0.3 * 16)
    assert t.proxy_fitness(CE, seed=0, fidelity=1e-6).steps == 1
    default, one = t.proxy_fitness(CE, seed=0), t.proxy_fitness(CE, seed=0, fidelity=1.0)
    assert default.steps == one.steps == full
    assert (default.score, default.status, default.losses) == (one.score, one.status, one.losses)


def test_fidelity_one_equals_the_full_training_on_digits():
    t = ClassificationTask(ClassificationOptions(proxy_epochs=1))
    a, b = t.proxy_fitness(CE, seed=2), t.proxy_fitness(CE, seed=2, fidelity=1.0)
    trained = t.train(CE, 2, 1, "val")
    assert a.score == b.score == trained.score and a.losses == b.losses == trained.losses


@pytest.mark.parametrize("fidelity", [0.0, 1.5, float("nan")])
def test_a_fidelity_outside_0_1_is_refused(fidelity):
    with pytest.raises(GpLossError, match="fidelity"):
        ClassificationTask(ClassificationOptions(proxy_epochs=1)).proxy_fitness(CE, seed=0, fidelity=fidelity)


# -- GCE ------------------------------------------------------------------------------------------
def test_gce_is_one_minus_the_root_of_the_true_class_probability():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 5, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 5, (16,), generator=g)
    y = torch.nn.functional.one_hot(labels, 5).double()
    kind = get_kind("cls")
    value = compile_loss(kind, parse_formula(kind, PAPER_LOSSES["gce"].formula))(x, y, torch.ones_like(y))
    p_true = torch.softmax(x, 1).gather(1, labels[:, None]).squeeze(1)
    torch.testing.assert_close(value, (1 - p_true.sqrt()).mean())


def test_the_gce_baseline_trains():
    assert INFO.baselines["gce"] == {"cls": "sub(1, sqrt(dot(y, softmax(x))))"}
    t = ClassificationTask(ClassificationOptions(proxy_epochs=2))
    outcome = t.proxy_fitness(t.baseline("gce"), seed=0)
    assert outcome.status == "ok" and outcome.score > 0.3  # chance: 0.1
