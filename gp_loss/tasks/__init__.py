"""Search tasks: the registry (:mod:`gp_loss.tasks.registry`) and the protocol tasks implement."""
from __future__ import annotations

from gp_loss.tasks.base import Task, TrainOutcome
from gp_loss.tasks.registry import TASK_NAMES, TASKS, TaskInfo, make_task, task_info, task_options

__all__ = ["TASKS", "TASK_NAMES", "Task", "TaskInfo", "TrainOutcome", "make_task", "task_info", "task_options"]
