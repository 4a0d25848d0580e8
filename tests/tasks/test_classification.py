"""The classification task: splits, proxy fitness that tells good losses from bad, ImageFolder data."""
import numpy as np
import pytest
import torch
from PIL import Image

from gp_loss.data.digits import split_indices
from gp_loss.data.image_folder import image_folder_tensors
from gp_loss.errors import GpLossError
from gp_loss.language.genome import Genome
from gp_loss.models.conv_net import ConvNet
from gp_loss.tasks import TASK_NAMES, make_task, task_options
from gp_loss.tasks import base
from gp_loss.tasks.base import NonFiniteWatch, first_non_finite
from gp_loss.tasks.classification import INFO, ClassificationOptions, ClassificationTask

CE = "neg(dot(y, log(softmax(x))))"
ANTI_CE = "neg(dot(y, neg(log(softmax(x)))))"  # maximises cross-entropy


def _genome(*specs):
    return Genome.from_formulas(specs)


@pytest.fixture(scope="module")
def task():
    return ClassificationTask(ClassificationOptions(proxy_epochs=1, final_epochs=1))


def test_splits_are_disjoint_and_cover_the_data(task):
    n = len(task.labels)
    assert n == 1797 and task.classes == 10 and tuple(task.images.shape) == (n, 1, 8, 8)
    parts = [set(task.splits[s].tolist()) for s in ("train", "val", "test")]
    assert [len(p) for p in parts] == [round(0.6 * n), round(0.2 * n), n - round(0.6 * n) - round(0.2 * n)]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert set.union(*parts) == set(range(n))


def test_same_split_seed_same_split():
    a, b, c = split_indices(100, 3), split_indices(100, 3), split_indices(100, 4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])
    t1 = ClassificationTask(ClassificationOptions(split_seed=1))
    t2 = ClassificationTask(ClassificationOptions(split_seed=1))
    assert all(torch.equal(t1.splits[s], t2.splits[s]) for s in t1.splits)


def test_ce_clearly_beats_maximising_ce(task):
    ce = task.proxy_fitness(_genome(("cls", "cls", CE)), seed=0)
    anti = task.proxy_fitness(_genome(("cls", "cls", ANTI_CE)), seed=0)
    assert ce.status == anti.status == "ok"
    assert ce.score > anti.score + 0.3
    assert ce.score > 0.4 and anti.score < 0.2  # chance: 0.1


def test_training_is_deterministic_for_a_seed(task):
    genome = _genome(("cls", "cls", CE))
    a, b = task.proxy_fitness(genome, seed=3), task.proxy_fitness(genome, seed=3)
    assert (a.score, a.steps, a.status) == (b.score, b.steps, b.status)
    assert a.steps == -(-len(task.splits["train"]) // task.options.batch_size)  # one epoch
    final = task.final_score(genome, seed=3)
    assert final.status == "ok" and 0 <= final.score <= 1


@pytest.mark.parametrize("spec", [
    ("c", "zero", "neg(mul(y, log(yhat)))"),   # cross-entropy on softmax probabilities
    ("c", "bcls", "neg(add(mul(y, log(sigmoid(x))), mul(sub(1, y), log(sub(1, sigmoid(x))))))"),
])
def test_zero_and_bcls_branches_train(task, spec):
    outcome = task.proxy_fitness(_genome(spec), seed=0)
    assert outcome.status == "ok" and outcome.steps > 0 and 0 <= outcome.score <= 1


def test_zero_cross_entropy_equals_cls_cross_entropy(task):
    # yhat = softmax(logits), y one-hot: the same loss as cls CE, so the same training.
    zero = task.proxy_fitness(_genome(("c", "zero", "neg(mul(y, log(yhat)))")), seed=0)
    ce = task.proxy_fitness(_genome(("c", "cls", CE)), seed=0)
    assert zero.score == pytest.approx(ce.score, abs=0.02)


def test_unsupported_kind_errors(task):
    with pytest.raises(GpLossError, match="reg"):
        task.proxy_fitness(_genome(("box", "reg", "sub(1, div(i, u))")), seed=0)


def test_a_raising_or_non_finite_loss_ends_its_own_training(task):
    outcome = task.proxy_fitness(_genome(("cls", "cls", "sqrt(sub(y, 2))")), seed=0)
    assert (outcome.score, outcome.status, outcome.steps) == (0.0, "non-finite", 0)
    assert outcome.reason == "loss of branch 'cls' is nan at step 0"


def test_loss_terms_by_branch_and_last_values_recorded(task):
    genome = _genome(("a", "cls", CE), ("b", "cls", "mul(2, neg(dot(y, log(softmax(x)))))"))
    terms = task.loss_terms(genome)(torch.randn(4, 10), torch.arange(4))
    assert list(terms) == ["a", "b"] and torch.allclose(terms["b"], 2 * terms["a"])
    outcome = task.proxy_fitness(genome, seed=0)
    assert outcome.status == "ok" and set(outcome.losses) == {"a", "b"}
    assert outcome.losses["b"] == pytest.approx(2 * outcome.losses["a"], rel=1e-5)


def test_the_non_finite_stop_names_the_branch_that_broke(task):
    genome = _genome(("good", "cls", CE), ("bad", "cls", "log(sub(x, 1))"))
    outcome = task.proxy_fitness(genome, seed=0)
    assert outcome.status == "non-finite" and outcome.reason.startswith("loss of branch 'bad' is nan")
    assert outcome.losses["good"] > 0 and outcome.losses["bad"] is None  # NaN: kept strict JSON


def test_the_first_bad_step_of_a_checked_window_is_named():
    ok, nan, inf = torch.tensor(1.0), torch.tensor(float("nan")), torch.tensor(float("inf"))
    steps = [(ok, {"a": ok, "b": ok}), (inf, {"a": ok, "b": inf}), (nan, {"a": nan, "b": ok})]
    assert first_non_finite(steps) == (1, "loss of branch 'b' is inf")
    big = torch.tensor(3e38)
    assert first_non_finite([(big + big, {"a": big, "b": big})]) == (0, "the sum of the branch losses is inf")
    assert first_non_finite(steps[:1]) is None


def test_a_gpu_watch_checks_every_20_steps_and_counts_back_to_the_bad_one():
    watch = NonFiniteWatch(torch.device("cuda"))  # only its type is read: no GPU needed
    ok, nan = torch.tensor(1.0), torch.tensor(float("nan"))
    assert all(watch.add(ok, {"a": ok}) is None for _ in range(12))
    assert watch.add(nan, {"a": nan}) is None  # not checked yet
    assert all(watch.add(ok, {"a": ok}) is None for _ in range(6))
    assert watch.add(ok, {"a": ok}) == (7, "loss of branch 'a' is nan")  # 20th step: 7 steps past the bad one
    assert watch.losses == {"a": None}
    assert watch.flush() is None and NonFiniteWatch(torch.device("cpu")).every == 1


EXPLODES = "neg(mul(mul(exp(x), exp(x)), exp(x)))"  # -inf once a logit passes about 30


@pytest.mark.parametrize("formula, lr", [(EXPLODES, 0.05), (EXPLODES, 0.2), ("log(sub(x, 1))", 3e-3), (CE, 3e-3)])
def test_checking_every_20_steps_stops_at_the_same_step_as_checking_each(monkeypatch, formula, lr):
    """A GPU's batched check reports what the CPU's per-step check does (apart from the last losses)."""
    t = ClassificationTask(ClassificationOptions(proxy_epochs=1, lr=lr))
    genome = _genome(("good", "cls", CE), ("b", "cls", formula))
    each = t.proxy_fitness(genome, seed=0)
    monkeypatch.setattr(base, "NAN_CHECK_EVERY_GPU", 20)
    monkeypatch.setattr(NonFiniteWatch, "__init__", lambda self, device: (
        setattr(self, "every", base.NAN_CHECK_EVERY_GPU), setattr(self, "_pending", []),
        setattr(self, "_last", {}))[0])
    batched = t.proxy_fitness(genome, seed=0)
    assert (batched.status, batched.steps, batched.reason) == (each.status, each.steps, each.reason)
    if each.status == "non-finite":
        assert batched.losses == each.losses and each.losses["b"] is None


def test_plain_sgd_trains_with_the_learning_rate_given(monkeypatch):
    made = []
    real = torch.optim.SGD

    def spy(params, lr):
        made.append(lr)
        return real(params, lr=lr)

    from gp_loss.tasks import classification
    monkeypatch.setitem(classification.OPTIMIZERS, "sgd", spy)
    t = ClassificationTask(ClassificationOptions(proxy_epochs=1, optimizer="sgd", lr=0.1))
    outcome = t.proxy_fitness(_genome(("cls", "cls", CE)), seed=0)
    assert made == [0.1] and outcome.status == "ok" and outcome.score > 0.15  # chance: 0.1


def test_bf16_precision_trains_on_the_cpu():
    t = ClassificationTask(ClassificationOptions(proxy_epochs=1, precision="bf16"))
    outcome = t.proxy_fitness(_genome(("cls", "cls", CE)), seed=0)
    assert outcome.status == "ok" and outcome.score > 0.3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_training_on_cuda_keeps_data_there_and_learns():
    t = make_task("classification", {"proxy_epochs": 2}, device="cuda")
    assert t.images.is_cuda and t.labels.is_cuda
    ce = t.proxy_fitness(_genome(("cls", "cls", CE)), seed=0)
    anti = t.proxy_fitness(_genome(("cls", "cls", ANTI_CE)), seed=0)
    assert ce.status == "ok" and ce.score > anti.score + 0.3
    bad = t.proxy_fitness(_genome(("cls", "cls", "log(sub(x, 1))")), seed=0)
    assert bad.status == "non-finite" and bad.steps == 0 and "branch 'cls'" in bad.reason


def test_time_limit_stops_training(task):
    outcome = task.train(_genome(("cls", "cls", CE)), seed=0, epochs=50, eval_split="val", time_limit_s=1e-9)
    assert outcome.status == "too slow" and outcome.score == 0.0 and outcome.steps == 1


def test_baselines_parse_and_ce_is_one():
    assert INFO.baselines["ce"] == {"cls": CE}
    for formulas in INFO.baselines.values():
        Genome.from_formulas((n, "cls", f) for n, f in formulas.items())


def test_options():
    assert TASK_NAMES == ("classification", "detection", "segmentation", "instance_segmentation", "pose")
    assert task_options("classification", {"proxy_epochs": 2}).proxy_epochs == 2
    with pytest.raises(GpLossError, match="unknown classification task option"):
        task_options("classification", {"epochs": 2})
    with pytest.raises(GpLossError, match="train_fraction"):
        task_options("classification", {"train_fraction": 0.9, "val_fraction": 0.2})
    with pytest.raises(GpLossError, match="lr"):
        task_options("classification", {"lr": 0})
    with pytest.raises(GpLossError, match="lr"):
        task_options("classification", {"lr": float("nan")})
    with pytest.raises(GpLossError, match="optimizer must be one of adam, sgd, got 'lbfgs'"):
        task_options("classification", {"optimizer": "lbfgs"})
    with pytest.raises(GpLossError, match="precision must be one of fp32, bf16, got 'fp16'"):
        task_options("classification", {"precision": "fp16"})
    with pytest.raises(GpLossError, match="unknown task"):
        make_task("segmentaton")


def _image_folder(root, classes=("cat", "dog"), per_class=6, size=8):
    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            base = 40 if c == 0 else 200  # dark cats, bright dogs
            pixels = np.clip(base + rng.integers(-30, 30, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def test_image_folder_tensors(tmp_path):
    root = _image_folder(tmp_path / "imgs")
    images, labels, classes = image_folder_tensors(root, image_size=8)
    assert tuple(images.shape) == (12, 3, 8, 8) and classes == ["cat", "dog"]
    assert labels.tolist() == [0] * 6 + [1] * 6
    assert 0 <= images.min() and images.max() <= 1
    assert images[labels == 0].mean() < images[labels == 1].mean()
    gray, _, _ = image_folder_tensors(root, image_size=4, grayscale=True)
    assert tuple(gray.shape) == (12, 1, 4, 4)


def test_task_trains_on_an_image_folder(tmp_path):
    root = _image_folder(tmp_path / "imgs")
    t = make_task("classification", {"data": str(root), "image_size": 8, "proxy_epochs": 2,
                                     "final_epochs": 1})
    assert t.classes == 2 and tuple(t.images.shape[1:]) == (3, 8, 8)
    assert sum(len(s) for s in t.splits.values()) == 12
    outcome = t.proxy_fitness(_genome(("cls", "cls", CE)), seed=0)
    assert outcome.status == "ok" and outcome.steps == 2 and 0 <= outcome.score <= 1
    assert t.final_score(_genome(("cls", "cls", CE)), seed=0).status == "ok"


def test_image_folder_errors(tmp_path):
    with pytest.raises(GpLossError, match="not a directory"):
        image_folder_tensors(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(GpLossError):
        image_folder_tensors(tmp_path / "empty")
    root = _image_folder(tmp_path / "one", classes=("only",))
    with pytest.raises(GpLossError, match="at least 2"):
        image_folder_tensors(root)


def test_conv_net_shapes():
    net = ConvNet(3, 5, 16, width=4)
    assert tuple(net(torch.zeros(2, 3, 16, 16)).shape) == (2, 5)
    with pytest.raises(ValueError, match="divisible by 4"):
        ConvNet(1, 10, 10)
