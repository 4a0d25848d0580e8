"""Every search task by name, with what can be known of it without loading its data.

A task is registered by its :class:`~gp_loss.tasks.base.TaskInfo`, written beside the task itself
(e.g. ``gp_loss/tasks/classification.py``'s ``INFO``) and listed in
:data:`TASKS` below. The parent process of a search reads only this: it checks
the configuration, names the metric and writes the baselines' formulas, while
the task's data is loaded where training happens (each worker, or the parent
itself under the serial map).

A new task: a module in ``gp_loss/tasks/`` with an options dataclass
(``from_dict``, ``check``), a class implementing :class:`~gp_loss.tasks.base.Task`
and its ``INFO``; one line in :data:`TASKS`; a script in ``runs/``.
"""
from __future__ import annotations

import torch

from gp_loss.errors import GpLossError
from gp_loss.tasks.base import TaskInfo


def _tasks() -> dict[str, TaskInfo]:
    from gp_loss.tasks import classification
    from gp_loss.tasks.detection import task as detection
    return {info.name: info for info in (classification.INFO, detection.INFO)}


TASKS: dict[str, TaskInfo] = _tasks()
TASK_NAMES: tuple[str, ...] = tuple(TASKS)


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
