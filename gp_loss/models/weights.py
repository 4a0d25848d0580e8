"""Weights files a user gives a task's model: read safely, load whole, or say in one line what does not fit.

``torch.load(..., weights_only=True)`` reads tensors and plain containers only, never
arbitrary pickled objects; training checkpoints that wrap the state dict under
``model`` or ``state_dict`` are unwrapped. Every problem is one
:class:`~gp_loss.errors.GpLossError` naming the file.
"""
from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from gp_loss.errors import GpLossError


def first_line(err: BaseException) -> str:
    """``"TypeName: first line of the message"``, for one-line errors."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def read_state_dict(path: str) -> dict[str, Tensor]:
    """The state dict (parameter name -> tensor) in ``path``."""
    if not os.path.isfile(path):
        raise GpLossError(f"weights file {path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a file that is not a checkpoint
        raise GpLossError(f"weights file {path}: not a PyTorch state dict ({first_line(err)})") from None
    # Training checkpoints often wrap the state dict.
    for key in ("model", "state_dict"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if not isinstance(state, Mapping) or not state or not all(
            isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()):
        raise GpLossError(f"weights file {path}: expected a state dict (parameter name -> tensor), "
                          f"got {type(state).__name__}")
    return dict(state)


def load_state(target: nn.Module, state: Mapping[str, Tensor], path: str, what: str) -> None:
    """Load ``state`` into ``target`` exactly (every name, every shape), or one line saying what does not fit.

    ``what`` names the model in the message (e.g. ``"the FCOS built"``).
    """
    own = target.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing (e.g. {missing[0]!r})")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]!r})")
        if wrong:
            k = wrong[0]
            problems.append(f"{len(wrong)} of another shape (e.g. {k!r}: {list(state[k].shape)} "
                            f"in the file, {list(own[k].shape)} in the model)")
        raise GpLossError(f"weights file {path} does not fit {what}: " + "; ".join(problems))
    try:
        target.load_state_dict(state)
    except Exception as err:
        raise GpLossError(f"weights file {path}: {first_line(err)}") from None
