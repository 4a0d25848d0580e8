"""The task registry: metadata without data, one table of baselines, one-line errors."""
import pytest

from gp_loss.errors import GpLossError
from gp_loss.evolution.config import SearchConfig
from gp_loss.paper_losses import PAPER_LOSSES
from gp_loss.tasks import TASKS, make_task, task_info
from gp_loss.tasks import classification


def test_every_task_is_registered_with_complete_metadata():
    assert set(TASKS) == {"classification", "detection", "segmentation", "instance_segmentation", "pose"}
    for name, info in TASKS.items():
        assert info.name == name and info.metric and info.summary
        assert set(info.branches.values()) <= set(info.kinds)
        options = info.make_options({})
        assert info.layout(options) == info.branches  # the default options' layout
        for losses in info.baseline_losses.values():
            assert set(losses) == set(info.branches)
            assert all(PAPER_LOSSES[loss].kind == info.branches[b] for b, loss in losses.items())
        for texts in info.baselines_for(options).values():  # every baseline names every branch
            assert set(texts) == set(info.branches)


def test_a_task_module_is_imported_only_when_asked_for():
    import subprocess
    import sys
    code = ("import sys, gp_loss.cli; from gp_loss.tasks import task_info; "
            "print('torchvision' in sys.modules); task_info('detection'); print('torchvision' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True"]  # the CLI starts without torchvision's detection models


def test_the_registry_summaries_are_the_tasks_own():
    from gp_loss.tasks.registry import TASK_SUMMARIES
    assert TASK_SUMMARIES == {name: info.summary for name, info in TASKS.items()}


def test_baselines_come_from_the_paper_losses_table():
    assert task_info("classification").baselines["label_smoothing_ce"] == {
        "cls": PAPER_LOSSES["label_smoothing_ce"].formula}


@pytest.mark.parametrize("name", ["segmentaton", "", None, 3])
def test_unknown_task_is_one_line(name):
    with pytest.raises(GpLossError, match=r"unknown task .*; known: classification, detection, segmentation, "
                                          r"instance_segmentation, pose$"):
        task_info(name)


def test_options_must_be_a_mapping():
    with pytest.raises(GpLossError, match="must be a mapping"):
        task_info("classification").make_options(["proxy_epochs"])


def test_checking_a_configuration_loads_no_data(monkeypatch):
    def refuse(*args):
        raise AssertionError("task data loaded")
    monkeypatch.setattr(classification, "_load", refuse)
    SearchConfig(baselines=["ce", "focal"]).check()
    with pytest.raises(AssertionError, match="task data loaded"):
        make_task("classification")


def test_make_task_puts_the_data_on_the_device():
    t = make_task("classification", {"proxy_epochs": 1}, device="cpu")
    assert t.info is task_info("classification") and t.images.device.type == "cpu"
