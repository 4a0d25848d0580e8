"""HPS-Det's dynamic sample assignment: top-k per ground truth, conflicts, bins, candidates, training, options."""
import pytest
import torch
from torchvision.models.detection import FCOS

from gp_loss.errors import GpLossError
from gp_loss.tasks import make_task, task_info
from gp_loss.tasks.detection.assignment import (BinLayout, DynamicAssigner, DynamicAssignmentFCOS,
                                                DynamicAssignmentRetinaNet, aspect_bin, fcos_candidates,
                                                select_positives)

TINY = {"image_size": 64, "canvases": 12, "batch_size": 4, "proxy_steps": 3, "final_steps": 3,
        "warmup_steps": 1, "eval_batch_size": 8}
# Two ground truths far apart in a 64 px image: no anchor or point is a candidate of both.
APART = torch.tensor([[2.0, 3.0, 18.0, 15.0], [36.0, 34.0, 60.0, 62.0]])


@pytest.fixture(autouse=True)
def _one_thread(_deterministic):
    """One torch thread: these tiny tensors gain nothing from two, and lose much on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _capture(model, images, targets):
    """The arguments of the model-level compute_loss in one training forward pass."""
    seen = {}
    inner = model.compute_loss

    def grab(*args):
        seen["args"] = args
        return inner(*args)
    model.compute_loss = grab
    model(images, targets)
    return seen["args"]


# ----------------------------------------------------------------------------- selection

def test_each_ground_truth_gets_its_lowest_cost_candidates_min_s_and_count():
    g = torch.Generator().manual_seed(0)
    cost = torch.rand(3, 40, generator=g)
    candidates = torch.zeros(3, 40, dtype=torch.bool)
    candidates[0, 0:10] = True    # 10 candidates, s = 4
    candidates[1, 10:13] = True   # 3 candidates, s = 5: all three
    candidates[2, 20:40] = True   # 20 candidates, s = 20
    matched = select_positives(cost, candidates, torch.tensor([4, 5, 20]), 20)
    assert [(matched == k).sum().item() for k in range(3)] == [4, 3, 20]
    chosen = (matched == 0).nonzero().squeeze(1)
    assert set(chosen.tolist()) == set(cost[0, :10].argsort()[:4].tolist())
    assert (matched[~candidates.any(0)] == -1).all()


def test_a_candidate_claimed_twice_goes_to_the_lower_cost_ground_truth():
    cost = torch.tensor([[0.1, 0.5, 0.9, 5.0],
                         [0.9, 0.2, 0.3, 5.0]])
    candidates = torch.tensor([[True, True, True, False], [True, True, True, False]])
    # s = 2 each: gt 0 picks {0, 1}, gt 1 picks {1, 2}; anchor 1 costs gt 1 less (0.2 < 0.5).
    matched = select_positives(cost, candidates, torch.tensor([2, 2]), 2)
    assert matched.tolist() == [0, 1, 1, -1]


def test_no_ground_truth_means_no_positive():
    none = torch.zeros(0, dtype=torch.int64)
    matched = select_positives(torch.zeros(0, 5), torch.zeros(0, 5, dtype=torch.bool), none, 3)
    assert matched.tolist() == [-1] * 5


# ----------------------------------------------------------------------------- bins

def test_aspect_bins_are_closed_on_the_right():
    def boxes(ratios):  # height 10, width ratio * 10
        return torch.tensor([[0.0, 0.0, 10.0 * r, 10.0] for r in ratios])
    ratios = [0.2, 0.25, 0.3, 0.5, 0.51, 1.0, 2.0, 2.01, 4.0, 4.5]
    assert aspect_bin(boxes(ratios), 3).tolist() == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert aspect_bin(boxes(ratios), 5).tolist() == [0, 0, 1, 1, 2, 2, 2, 3, 3, 4]
    assert aspect_bin(boxes(ratios), 1).tolist() == [0] * len(ratios)


def test_fcos_best_level_holds_half_the_longer_side():
    # small backbone: anchor sizes 4, 8, 16 -> lower bounds 0, 32, 64 of max(l, t, r, b).
    points = torch.tensor([[30.0, 30.0, 34.0, 34.0], [28.0, 28.0, 36.0, 36.0], [24.0, 24.0, 40.0, 40.0]])
    boxes = torch.tensor([[0.0, 0.0, 40.0, 20.0],    # max side / 2 = 20 -> level 0
                          [0.0, 0.0, 10.0, 64.0],    # 32: not above 32 -> level 0
                          [0.0, 0.0, 66.0, 10.0],    # 33 -> level 1
                          [0.0, 0.0, 150.0, 100.0]])  # 75 -> level 2
    _, level = fcos_candidates(points, torch.tensor([0, 1, 2]), torch.tensor([4.0, 8.0, 16.0]), boxes)
    assert level.tolist() == [0, 0, 1, 2]


def test_the_bin_index_is_level_times_aspect_bins_plus_aspect_bin():
    boxes = torch.tensor([[0.0, 0.0, 30.0, 10.0], [0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 4.0, 10.0]])  # w/h 3, 1, 0.4
    level = torch.tensor([2, 0, 1])
    assert DynamicAssigner([1] * 9, BinLayout(3, 3)).bins(boxes, level).tolist() == [8, 1, 3]
    assert DynamicAssigner([1] * 3, BinLayout(1, 3)).bins(boxes, level).tolist() == [2, 1, 0]
    assert DynamicAssigner([1] * 3, BinLayout(3, 1)).bins(boxes, level).tolist() == [2, 0, 1]


def test_layouts_parse_as_the_paper_writes_them():
    assert BinLayout.parse("default", 3) == BinLayout(3, 3) and BinLayout.parse("default", 5).size == 15
    assert BinLayout.parse("1,1,1", 3) == BinLayout(3, 1) and BinLayout.parse("(3,3,3,3,3)", 5) == BinLayout(5, 3)
    assert BinLayout.parse("5", 3) == BinLayout(1, 5) and BinLayout(1, 5).notation() == "(5)"
    assert BinLayout(3, 3).bin_names()[:2] == ["level0 w/h<=1/2", "level0 1/2<w/h<=2"]
    for bad in ("3,3,3,3,3", "2", "3,1,3", "x"):
        with pytest.raises(GpLossError) as err:
            BinLayout.parse(bad, 3)
        assert "\n" not in str(err.value)


# ----------------------------------------------------------------------------- the detectors

@pytest.mark.parametrize("candidates, radius", [("box", 1e9), ("centre", None)])
def test_fcos_candidates_are_fcos_positives(det, candidates, radius):
    """With s above every ground truth's candidate count, dynamic assignment is FCOS's own on ground
    truths that share no point: with centre sampling off ("box") and with torchvision's radius ("centre")."""
    assigner = DynamicAssigner([100] * 9, BinLayout(3, 3), centre_sampling=candidates == "centre")
    model = det.small_model("fcos", assigner=assigner)
    assert isinstance(model, DynamicAssignmentFCOS)
    if radius is not None:
        model.center_sampling_radius = radius
    images, _ = det.make_batch("fcos", images=1)
    targets = [{"boxes": APART, "labels": torch.tensor([0, 2])}]
    args = _capture(model, images, targets)
    dynamic = model.assign(*args)[0]
    own = []
    model.head.compute_loss = lambda t, h, a, m: own.append(m[0]) or {}
    FCOS.compute_loss(model, *args)  # torchvision's own matching
    assert torch.equal(dynamic, own[0]) and (dynamic >= 0).sum() > 0


def test_centre_candidates_are_fewer_than_the_whole_box(det):
    model = det.small_model("fcos", assigner=DynamicAssigner([100] * 9, BinLayout(3, 3)))
    images, _ = det.make_batch("fcos", images=1)
    args = _capture(model, images, [{"boxes": APART, "labels": torch.tensor([0, 2])}])
    centre = (model.assign(*args)[0] >= 0).sum()
    model.assigner.centre_sampling = False
    assert centre < (model.assign(*args)[0] >= 0).sum()


@pytest.mark.parametrize("detector,s", [("fcos", 3), ("retinanet", 7)])
def test_each_ground_truth_gets_min_s_and_its_candidates(det, detector, s):
    model = det.small_model(detector, assigner=DynamicAssigner([s], BinLayout(1, 1)))
    images, _ = det.make_batch(detector, images=1)
    targets = [{"boxes": APART, "labels": torch.tensor([1, 0])}]
    args = _capture(model, images, targets)
    matched = model.assign(*args)[0]
    anchors = args[2][0]
    if detector == "fcos":
        counts = args[3]
        level = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
        starts = torch.tensor([0] + counts[:-1]).cumsum(0)
        candidates, _ = fcos_candidates(anchors, level, anchors[starts, 2] - anchors[starts, 0], APART)
    else:
        from torchvision.ops import box_iou
        candidates = box_iou(APART, anchors) > 0.1
        assert sum(model.anchors_per_level()) == anchors.shape[0]
    assert not (candidates[0] & candidates[1]).any()
    for k in range(2):
        assert (matched == k).sum().item() == min(s, candidates[k].sum().item()) > 0
        assert candidates[k][matched == k].all()
    assert ((matched == -1) | (matched >= 0)).all()  # everything else negative, nothing ignored


def test_retinanet_best_level_is_its_max_iou_anchors(det):
    model = det.small_model("retinanet", assigner=DynamicAssigner([1] * 3, BinLayout(3, 1)))
    assert isinstance(model, DynamicAssignmentRetinaNet)
    images, _ = det.make_batch("retinanet", images=1)
    # torchvision places anchors at multiples of the stride: these two are anchors of levels 0 and 2 exactly.
    boxes = torch.tensor([[4.0, 4.0, 12.0, 12.0], [16.0, 16.0, 48.0, 48.0]])  # 8 px (stride 4), 32 px (stride 16)
    args = _capture(model, images, [{"boxes": boxes, "labels": torch.tensor([0, 1])}])
    counts = model.anchors_per_level()
    level_of_anchor = torch.repeat_interleave(torch.arange(3), torch.tensor(counts))
    from gp_loss.tasks.detection.assignment import retinanet_candidates
    _, level = retinanet_candidates(args[2][0], level_of_anchor, boxes)
    assert level.tolist() == [0, 2]


@pytest.mark.parametrize("detector,genome", [("fcos", "FOCAL_GIOU"), ("fcos", None), ("retinanet", "FOCAL_GIOU"),
                                            ("retinanet", None)])
def test_training_with_dynamic_assignment_gives_finite_losses(det, detector, genome):
    """A few SGD steps, with the genome heads and with torchvision's own loss code."""
    s = [5] * 9 if detector == "fcos" else [20] * 9
    model = det.small_model(detector, genome and getattr(det, genome), assigner=DynamicAssigner(s, BinLayout(3, 3)))
    images, targets = det.make_batch(detector, images=2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    for _ in range(3):
        losses = model(images, targets)
        total = sum(losses.values())
        assert all(torch.isfinite(v) for v in losses.values()), losses
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
    model.eval()
    assert len(model(images)) == 2  # inference is torchvision's


def test_the_task_builds_and_trains_the_dynamic_detector():
    task = make_task("detection", {**TINY, "proxy_steps": 2, "assignment": "dynamic", "positives": [4] * 3,
                                   "aspect_bins": 3})
    model = task.build("fl_giou", 0)
    assert isinstance(model, DynamicAssignmentFCOS) and model.assigner.layout == BinLayout(1, 3)
    out = task.proxy_fitness("fl_giou", seed=0)
    assert out.status == "ok" and all(v is not None for v in out.losses.values()), out


@pytest.mark.parametrize("options,message", [
    ({"assignment": "dynamic", "positives": [3] * 8}, "positives needs one count per bin: 9 or 3 integers"),
    ({"assignment": "dynamic", "positives": []}, "positives needs one count per bin"),
    ({"assignment": "dynamic", "positives": [3] * 8 + [26]}, "positives[8] must be an integer in [1, 25] for fcos"),
    ({"assignment": "dynamic", "positives": [0, 1, 1]}, "positives[0] must be an integer in [1, 25]"),
    ({"assignment": "dynamic", "positives": [True, 1, 1]}, "positives[0] must be an integer"),
    ({"assignment": "dynamic", "model": "retinanet", "positives": [81]}, "got 1"),
    ({"assignment": "dynamic", "model": "retinanet", "aspect_bins": 1, "positives": [81]}, "[1, 80] for retinanet"),
    ({"assignment": "dynamic", "model": "fasterrcnn", "positives": [3] * 3}, "is for fcos and retinanet"),
    ({"assignment": "dynamic", "aspect_bins": 2, "positives": [3] * 2}, "aspect_bins must be one of 1, 3, 5"),
    ({"assignment": "static"}, "assignment must be one of default, dynamic"),
    ({"positives": [3] * 9}, "positives is for assignment 'dynamic'"),
    ({"assignment": "dynamic", "positives": [3] * 9, "assignment_alpha": -1.0}, "assignment_alpha"),
    ({"positives": 3}, "positives must be of type list"),
])
def test_bad_assignment_options_are_one_line(options, message):
    with pytest.raises(GpLossError) as err:
        task_info("detection").make_options(options)
    assert message in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_positives_for_another_level_count_are_refused_by_the_model(det):
    model = det.small_model("fcos", assigner=DynamicAssigner([3] * 15, BinLayout(5, 3)))
    images, targets = det.make_batch("fcos", images=1)
    with pytest.raises(GpLossError, match="for 5 FPN levels"):
        model(images, targets)
