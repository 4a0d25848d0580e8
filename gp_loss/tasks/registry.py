"""Every search task by name, with what can be known of it without loading its data.

A task is registered by its :class:`~gp_loss.tasks.base.TaskInfo`, written beside the task itself
(e.g. ``gp_loss/tasks/classification.py``'s ``INFO``) and listed in
:data:`TASKS` below. The parent process of a search reads only this: it checks
the configuration, names the metric and writes the baselines' formulas, while
the task's data is loaded where training happens (each worker, or the parent
itself under the serial map).

A new task: a module in ``gp_loss/tasks/`` with an options dataclass
(``from_dict``, ``check``), a class implementing :class:`~gp_loss.tasks.base.Task`
and its ``INFO``; one line in :data:`_MODULES` (its module and its summary); a script in ``runs/``.
"""
from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping

import torch

from gp_loss.errors import GpLossError
from gp_loss.tasks.base import TaskInfo


# Task name -> (the module whose ``INFO`` registers it, one line for help texts). A task's module is
# imported only when the task is asked for: the detection task imports torchvision's detection
# models, which every other command (and every classification worker) would otherwise pay for.
_MODULES: dict[str, tuple[str, str]] = {
    "classification": ("gp_loss.tasks.classification",
                       "image classification (digits built in, or an ImageFolder); metric: accuracy"),
    "detection": ("gp_loss.tasks.detection.task",
                  "object detection with torchvision's FCOS, RetinaNet or Faster R-CNN (digit canvases built "
                  "in, or a COCO instances JSON); metric: COCO AP"),
    "segmentation": ("gp_loss.tasks.segmentation.task",
                     "semantic segmentation with torchvision's segmentation models (digit canvases built in, a "
                     "Pascal VOC folder or a COCO instances JSON); metric: mIoU (or BF1, boundary IoU, ...)"),
    "instance_segmentation": ("gp_loss.tasks.instance_segmentation.task",
                              "instance segmentation with torchvision's Mask R-CNN, five loss branches (digit "
                              "canvases built in, or a COCO instances JSON with masks); metric: COCO mask AP"),
    "pose": ("gp_loss.tasks.pose.task",
             "top-down pose estimation with SimpleBaseline heatmaps on ground-truth boxes (digit canvases with ink "
             "keypoints built in, or a COCO keypoints JSON); metric: OKS AP"),
}
TASK_NAMES: tuple[str, ...] = tuple(_MODULES)
TASK_SUMMARIES: dict[str, str] = {name: summary for name, (_, summary) in _MODULES.items()}


class _LazyTasks(Mapping):
    """Task name -> :class:`TaskInfo`, each imported on first use."""

    def __getitem__(self, name: str) -> TaskInfo:
        if name not in _MODULES:
            raise KeyError(name)
        return importlib.import_module(_MODULES[name][0]).INFO

    def __iter__(self) -> Iterator[str]:
        return iter(_MODULES)

    def __len__(self) -> int:
        return len(_MODULES)


TASKS: Mapping[str, TaskInfo] = _LazyTasks()


def task_info(name: object) -> TaskInfo:
    """The registered task ``name``, or a :class:`GpLossError` listing the known ones."""
    if not isinstance(name, str) or name not in TASKS:
        raise GpLossError(f"unknown task {name!r}; known: {', '.join(TASK_NAMES)}")
    return TASKS[name]


def task_options(name: str, options: dict | None = None):
    """The checked options object of task ``name``."""
    return task_info(name).make_options(options)


def make_task(name: str, options: dict | None = None, device: str | torch.device = "cpu"):
    """Build task ``name`` (loading its data onto ``device``) from a dict of its option fields."""
    info = task_info(name)
    return info.task_class(info.make_options(options), torch.device(device))


_PROCESS_TASKS: dict[str, object] = {}


def process_task(name: str, options: dict, device: str | torch.device, threads: int | None = None):
    """Task ``name`` of ``options`` on ``device``, built once in this process and reused while they stay the same.

    For the objectives of a script's parallel map, which run in worker processes and must
    not reload the task's data for every job. ``threads``: torch's intra-op threads here.
    Only the latest configuration is kept (one task's data in memory at a time).
    """
    import json

    from gp_loss.runtime.device import resolve_device

    if threads is not None:
        torch.set_num_threads(threads)
    key = json.dumps([name, options, str(device)], sort_keys=True)
    if key not in _PROCESS_TASKS:
        _PROCESS_TASKS.clear()
        _PROCESS_TASKS[key] = make_task(name, options, resolve_device(device))
    return _PROCESS_TASKS[key]
