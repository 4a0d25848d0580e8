"""Search tasks, by name: ``make_task(name, options)`` builds one from its JSON-able spec."""
from __future__ import annotations

from gp_loss.errors import GpLossError
from gp_loss.tasks.base import Task, TrainOutcome

TASK_NAMES = ("classification",)


def task_options(name: str, options: dict | None = None):
    """The options object of task ``name`` (checked)."""
    if name == "classification":
        from gp_loss.tasks.classification import ClassificationOptions
        opts = ClassificationOptions.from_dict(dict(options or {}))
        opts.check()
        return opts
    raise GpLossError(f"unknown task {name!r}; known: {', '.join(TASK_NAMES)}")


def make_task(name: str, options: dict | None = None) -> Task:
    """Build task ``name`` with ``options`` (a dict of its option fields)."""
    opts = task_options(name, options)
    if name == "classification":
        from gp_loss.tasks.classification import ClassificationTask
        return ClassificationTask(opts)
    raise AssertionError(name)


__all__ = ["TASK_NAMES", "Task", "TrainOutcome", "make_task", "task_options"]
