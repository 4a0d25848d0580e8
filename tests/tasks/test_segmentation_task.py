"""The segmentation task: baselines equal their torch references, ignored pixels are ignored, training is safe."""
import json

import pytest
import torch
import torch.nn.functional as F

from gp_loss.errors import GpLossError
from gp_loss.language.genome import Genome
from gp_loss.metrics.segmentation import METRIC_NAMES, SegmentationMeter
from gp_loss.tasks import make_task, task_info
from gp_loss.tasks.segmentation.models import MODELS, build_model
from gp_loss.tasks.segmentation.task import BASELINES, IGNORE, SegmentationOptions, loss_terms, metric_name

# No collapse check in the tiny proxies: three steps of a random network are not a verdict on a loss.
TINY = {"canvases": 16, "image_size": 32, "proxy_steps": 3, "final_steps": 4, "batch_size": 4, "max_digits": 2,
        "collapse_check": 0.0}


@pytest.fixture(scope="module")
def task():
    return make_task("segmentation", TINY)


def _genome(formula: str) -> Genome:
    return Genome.from_formulas([("seg", "zero", formula)])


def _baseline_terms(name: str):
    from gp_loss.paper_losses import PAPER_LOSSES
    return loss_terms(_genome(PAPER_LOSSES[BASELINES[name]].formula))


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 7, 6, generator=g)
    labels = torch.randint(0, 5, (3, 7, 6), generator=g)
    labels[0, :2] = IGNORE  # void rows, as VOC marks object borders and the letterbox pads
    labels[2, :, -1] = IGNORE
    return logits, labels


def test_ce_is_torch_cross_entropy_with_ignore_index(batch):
    logits, labels = batch
    ours = _baseline_terms("ce")(logits, labels)["seg"]
    assert torch.allclose(ours, F.cross_entropy(logits, labels.long(), ignore_index=IGNORE), rtol=1e-5)


def test_focal_is_the_softmax_focal_loss_over_labelled_pixels(batch):
    logits, labels = batch
    valid = labels != IGNORE
    logp = F.log_softmax(logits, 1).gather(1, torch.where(valid, labels, 0)[:, None])[:, 0]
    reference = (-(1 - logp.exp()) ** 2 * logp)[valid].mean()
    assert torch.allclose(_baseline_terms("focal")(logits, labels)["seg"], reference, rtol=1e-5)


def _dice_reference(logits, labels):
    valid = (labels != IGNORE)[:, None]
    p = logits.softmax(1) * valid
    y = F.one_hot(torch.where(valid[:, 0], labels, 0), logits.shape[1]).permute(0, 3, 1, 2) * valid
    dice = 2 * (p * y).sum((0, 2, 3)) / (p.sum((0, 2, 3)) + y.sum((0, 2, 3)) + 1e-12)
    return 1 - dice.mean()


def test_dice_and_ce_dice_are_their_references(batch):
    logits, labels = batch
    dice = _dice_reference(logits, labels)
    assert torch.allclose(_baseline_terms("dice")(logits, labels)["seg"], dice, rtol=1e-5)
    ce = F.cross_entropy(logits, labels.long(), ignore_index=IGNORE)
    assert torch.allclose(_baseline_terms("ce_dice")(logits, labels)["seg"], ce + dice, rtol=1e-5)


def test_ignored_pixels_change_neither_the_loss_nor_get_a_gradient(batch):
    logits, labels = batch
    # 1/yhat^4 overflows float32 where yhat is 0, as it is at every ignored pixel (and only there).
    terms = loss_terms(_genome("add(square(square(inv(yhat))), neg(mul(y, log(yhat))))"))
    logits = logits.clone().requires_grad_()
    loss = terms(logits, labels)["seg"]
    assert torch.isfinite(loss)
    loss.backward()
    ignored = (labels == IGNORE)[:, None].expand_as(logits)
    assert torch.isfinite(logits.grad).all() and (logits.grad[ignored] == 0).all()
    other = logits.detach().clone()
    other[ignored] = 1e4  # whatever the network says where nothing is labelled
    assert torch.equal(terms(other, labels)["seg"], loss.detach())


def test_a_branch_of_another_kind_is_one_line():
    with pytest.raises(GpLossError, match="kind cls; segmentation takes zero"):
        loss_terms(Genome.from_formulas([("seg", "cls", "neg(dot(y, log(softmax(x))))")]))


def test_the_registry_knows_the_task_and_its_baselines():
    info = task_info("segmentation")
    assert info.branches == {"seg": "zero"} and info.metric == "mIoU"
    assert set(info.baselines) == {"ce", "dice", "ce_dice", "focal"}
    assert info.metric_for(SegmentationOptions(metric="bf1")) == "BF1"


@pytest.mark.parametrize("text,name", [("miou", "mIoU"), ("BF1", "BF1"), ("biou", "BIoU"), ("FWIOU", "FWIoU")])
def test_metric_names_in_any_case(text, name):
    assert metric_name(text) == name


@pytest.mark.parametrize("options,message", [
    ({"metric": "dice"}, "metric must be one of mIoU"),
    ({"model": "unet"}, "model must be one of small"),
    ({"num_classes": 255}, "num_classes must be 0"),
    ({"image_size": 8}, "image_size must be at least 16"),
    ({"data": "/no/such/voc"}, "/no/such/voc"),
    ({"weights": "/no/such.pt"}, "/no/such.pt"),
    ({"lr": -1.0}, "lr must be positive"),
    ({"boundary_tolerance": -1}, "boundary_tolerance"),
    ({"batch_size": 0}, "batch_size must be in"),
    ({"optimiser": "adam"}, "unknown"),
    ({"collapse_check": 1.0}, "collapse_check must be in"),
    ({"collapse_check": -0.1}, "collapse_check must be in"),
])
def test_bad_options_are_one_line(options, message):
    with pytest.raises(GpLossError, match=message) as err:
        task_info("segmentation").make_options(options)
    assert "\n" not in str(err.value)


def test_a_proxy_training_reports_every_metric_and_the_branch_loss(task):
    out = task.proxy_fitness(task.baseline("ce"), seed=0)
    assert out.status == "ok" and out.steps == TINY["proxy_steps"]
    assert set(out.metrics) == set(METRIC_NAMES)
    assert out.score == out.metrics["mIoU"] and 0 <= out.score <= 1
    assert set(out.losses) == {"seg"} and out.losses["seg"] > 0


def test_the_same_seed_trains_the_same_model(task):
    a, b = task.proxy_fitness("dice", seed=3), task.proxy_fitness("dice", seed=3)
    assert a.metrics == b.metrics and a.losses == b.losses


def test_a_non_finite_loss_stops_training_naming_the_branch(task):
    out = task.proxy_fitness(_genome("exp(exp(exp(exp(inv(mul(yhat, y))))))"), seed=0)
    assert out.status == "non-finite" and out.score == 0.0
    assert "branch 'seg'" in out.reason and out.steps == 0


def test_an_unknown_baseline_is_one_line(task):
    with pytest.raises(GpLossError, match="unknown baseline 'bce'; known: ce, dice, ce_dice, focal"):
        task.baseline("bce")


class _BiasOnly(torch.nn.Module):
    """Logits = a learnable per-class bias at every pixel: argmax is one class everywhere while it leads."""

    def __init__(self, bias):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.tensor(bias))

    def forward(self, images):
        n, _, h, w = images.shape
        return {"out": self.bias[None, :, None, None].expand(n, -1, h, w) + 0 * images.mean()}


def _collapsing_task(monkeypatch, bias, **options):
    task = make_task("segmentation", {**TINY, "proxy_steps": 6, "collapse_check": 0.5, **options})
    monkeypatch.setattr(task, "build", lambda seed: _BiasOnly(bias))
    return task


def test_a_proxy_no_better_than_one_class_everywhere_stops_at_the_check(monkeypatch):
    task = _collapsing_task(monkeypatch, [5.0] + [0.0] * 10)  # class 0 (background) far ahead
    chance, label = task.chance()
    out = task.proxy_fitness("ce", seed=0)
    assert out.status == "collapsed" and out.steps == 3  # half of 6 steps
    assert f"at step 3 is no better than predicting class {label} everywhere" in out.reason
    # Scored as what it predicts: every metric of the background-everywhere map, which is chance.
    assert out.score == out.metrics["mIoU"] == chance and set(out.metrics) == set(METRIC_NAMES)
    assert label == 0 and 0 < chance < 1
    # The final retraining never stops early: the same network trains all its steps.
    final = task.final_score("ce", seed=0)
    assert final.status == "ok" and final.steps == TINY["final_steps"]


@pytest.mark.parametrize("metric", ["mIoU", "aAcc", "BF1"])
def test_chance_is_the_best_constant_prediction_of_the_metric(metric):
    task = make_task("segmentation", {**TINY, "metric": metric})
    scores = []
    for c in range(task.data.num_classes):
        meter = SegmentationMeter(task.data.num_classes, IGNORE, task.options.boundary_tolerance)
        for target in task.data.val.targets:
            meter.update(torch.full_like(target, c), target)
        scores.append(meter.compute()[metric] or 0.0)
    assert task.chance() == (max(scores), scores.index(max(scores)))
    if metric == "BF1":
        assert task.chance()[0] == 0  # one class everywhere draws no boundary


def test_a_proxy_that_beats_chance_trains_on(monkeypatch):
    # A network predicting one class other than background everywhere is below chance: caught too.
    task = _collapsing_task(monkeypatch, [0.0, 0.0, 0.0, 5.0] + [0.0] * 7)
    out = task.proxy_fitness("ce", seed=0)
    assert out.status == "collapsed" and out.score < task.chance()[0]

    class Bright(_BiasOnly):
        def forward(self, images):  # class 1 on the digits' strokes, background elsewhere: above chance
            out = super().forward(images)["out"].clone()
            out[:, 1] += 10 * (images.mean(1) > 0.5)
            return {"out": out}

    monkeypatch.setattr(task, "build", lambda seed: Bright([5.0] + [0.0] * 10))
    out = task.proxy_fitness("ce", seed=0)
    assert out.status == "ok" and out.steps == 6 and out.score > task.chance()[0]


def test_collapse_check_zero_never_stops(monkeypatch):
    task = _collapsing_task(monkeypatch, [5.0] + [0.0] * 10, collapse_check=0.0)
    out = task.proxy_fitness("ce", seed=0)
    assert out.status == "ok" and out.steps == 6


def test_the_fitness_is_the_chosen_metric():
    task = make_task("segmentation", {**TINY, "metric": "bf1"})
    out = task.proxy_fitness("ce", seed=0)
    assert out.score == out.metrics["BF1"]


@pytest.mark.parametrize("name", MODELS)
def test_every_model_maps_images_to_logits_of_their_size(name):
    torch.manual_seed(0)
    model = build_model(name, 3).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 40, 56))["out"]
    assert out.shape == (1, 3, 40, 56)


def test_weights_of_the_whole_model_load_and_a_mismatch_is_one_line(tmp_path):
    torch.manual_seed(0)
    model = build_model("small", 4)
    path = tmp_path / "small.pt"
    torch.save(model.state_dict(), path)
    again = build_model("small", 4, str(path))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    with pytest.raises(GpLossError, match="does not fit the small built: .* of another shape"):
        build_model("small", 5, str(path))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(GpLossError, match="not a PyTorch state dict"):
        build_model("small", 4, str(tmp_path / "junk.pt"))


def test_a_mobilenet_backbone_checkpoint_loads_into_the_backbone(tmp_path):
    from torchvision.models import mobilenet_v3_large
    torch.manual_seed(0)
    net = mobilenet_v3_large(weights=None, dilated=True)
    torch.save(net.state_dict(), tmp_path / "mnv3.pt")
    model = build_model("lraspp_mobilenet_v3_large", 3, str(tmp_path / "mnv3.pt"))
    assert torch.equal(model.backbone["0"][0].weight, net.features[0][0].weight)


def test_evaluate_json_has_every_metric_per_loss(capsys):
    from gp_loss.cli import main
    code = main(["evaluate", "--task", "segmentation", "--loss", "ce", "--loss", "seg=neg(mul(y, log(yhat)))",
                 "--seeds", "1", "--steps", "2", "--image-size", "32", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["metric"] == "validation mIoU"
    assert len(out["losses"]) == 2
    for metrics in out["losses"].values():
        assert set(metrics) == set(METRIC_NAMES)
    first, second = out["losses"].values()
    assert first == second  # the CE baseline is that formula
