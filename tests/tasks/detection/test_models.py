"""build_detector: every detector trains and predicts on the small backbone; ResNets build; weights files."""
import pytest
import torch
import torchvision

from gp_loss.errors import GpLossError
from gp_loss.tasks.detection import DETECTORS, build_detector, category_index, target_labels


@pytest.mark.parametrize("detector", list(DETECTORS))
def test_small_detector_trains_a_step_and_predicts(det, detector):
    model = det.small_model(detector, det.GENOMES[detector])
    images, targets = det.make_batch(detector)
    optimiser = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01)
    before = [p.detach().clone() for p in model.parameters()]
    losses = model(images, targets)
    assert set(losses) == set(DETECTORS[detector].loss_terms)
    assert all(torch.isfinite(v) for v in losses.values())
    optimiser.zero_grad()
    sum(losses.values()).backward()
    optimiser.step()
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))

    model.eval()
    with torch.no_grad():
        detections = model(images)
    assert len(detections) == len(images)
    offset = DETECTORS[detector].label_offset
    keys = {"boxes", "scores", "labels"} | ({"masks"} if detector == "maskrcnn" else set())
    for d in detections:
        assert set(d) == keys and d["boxes"].shape[1:] == (4,)
        assert ((d["labels"] >= offset) & (d["labels"] < det.CLASSES + offset)).all()


def test_resnet18_detectors_build_and_fcos_runs_a_forward(det):
    models = {}
    for detector in DETECTORS:
        torch.manual_seed(0)
        models[detector] = build_detector(detector, det.CLASSES, backbone="resnet18", image_size=det.SIZE,
                                          genome=det.GENOMES[detector])
        assert type(models[detector].backbone.body.layer4[0]).__name__ == "BasicBlock"  # a ResNet-18/34 body
    images, targets = det.make_batch("fcos", images=1)
    losses = models["fcos"](images, targets)
    assert set(losses) == set(DETECTORS["fcos"].loss_terms) and all(torch.isfinite(v) for v in losses.values())


def test_labels_follow_each_detectors_convention():
    categories = torch.tensor([0, 2, 1])
    assert target_labels("fcos", categories).tolist() == [0, 2, 1]
    assert target_labels("retinanet", categories).tolist() == [0, 2, 1]
    assert target_labels("fasterrcnn", categories).tolist() == [1, 3, 2]
    assert target_labels("maskrcnn", categories).tolist() == [1, 3, 2]
    for detector in DETECTORS:
        assert torch.equal(category_index(detector, target_labels(detector, categories)), categories)


def test_each_detector_record_is_consistent():
    from gp_loss.paper_losses import PAPER_LOSSES
    from gp_loss.tasks.detection.models import PAPBaseline

    for name, spec in DETECTORS.items():
        assert spec.name == name
        searched = [branch for branch in spec.loss_terms.values() if branch is not None]
        assert sorted(searched) == sorted(spec.branches)  # every branch yields exactly one loss term
        assert spec.pap_loss_terms and spec.label_offset in (0, 1)
        for baseline in spec.baselines.values():
            if baseline is None or isinstance(baseline, PAPBaseline):
                continue
            losses, _ = baseline
            assert {b: PAPER_LOSSES[loss].kind for b, loss in losses.items()} == dict(spec.branches)


def test_a_new_detector_is_one_record(det, monkeypatch):
    from dataclasses import replace

    monkeypatch.setitem(DETECTORS, "fcos2", replace(DETECTORS["fcos"], name="fcos2", label_offset=1))
    assert target_labels("fcos2", torch.tensor([0, 2])).tolist() == [1, 3]
    model = build_detector("fcos2", det.CLASSES, backbone="small", image_size=det.SIZE, genome=det.GENOMES["fcos"])
    assert type(model).__name__ == "FCOS"


def test_unknown_names_are_user_errors():
    with pytest.raises(GpLossError, match="unknown detector 'yolo'"):
        build_detector("yolo", 3, backbone="small", image_size=64, genome=None)
    with pytest.raises(GpLossError, match="unknown backbone 'vgg'"):
        build_detector("fcos", 3, backbone="vgg", image_size=64, genome=None)


def test_weights_file_round_trip(det, tmp_path):
    model = det.small_model("retinanet", seed=3)
    path = tmp_path / "retinanet.pt"
    torch.save(model.state_dict(), path)
    again = build_detector("retinanet", det.CLASSES, backbone="small", image_size=det.SIZE, genome=None,
                           weights=str(path))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_a_torchvision_resnet_file_loads_into_the_backbone(det, tmp_path):
    torch.manual_seed(5)
    resnet = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pt"
    torch.save(resnet.state_dict(), path)
    model = build_detector("fcos", det.CLASSES, backbone="resnet18", image_size=det.SIZE, genome=None,
                           weights=str(path))
    assert torch.equal(model.backbone.body.conv1.weight, resnet.conv1.weight)
    assert torch.equal(model.backbone.body.layer4[1].conv2.weight, resnet.layer4[1].conv2.weight)


def test_bad_weights_files_are_one_line_errors(det, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint\nsecond line\n")
    other = tmp_path / "fcos.pt"
    torch.save(det.small_model("fcos").state_dict(), other)
    listing = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], listing)
    cases = {text: "not a PyTorch state dict", tmp_path / "missing.pt": "no such file",
             other: "does not fit", listing: "expected a state dict"}
    for path, reason in cases.items():
        with pytest.raises(GpLossError) as err:
            build_detector("retinanet", det.CLASSES, backbone="small", image_size=det.SIZE, genome=None,
                           weights=str(path))
        message = str(err.value)
        assert reason in message and str(path) in message and "\n" not in message, message
