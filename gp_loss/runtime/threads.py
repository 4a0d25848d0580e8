"""Torch's intra-op thread count: set it, or set it for a block of code and restore it."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch


def set_torch_threads(n: int | None) -> None:
    """Use ``n`` torch CPU threads from now on (``None`` or 0: leave the count as it is).

    Only switched when it differs: the count is process-wide, and a worker
    that runs thousands of jobs with the same count should not pay for
    re-setting it each time.
    """
    if n and torch.get_num_threads() != n:
        torch.set_num_threads(n)


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch CPU threads (``None`` or 0: as they are), then restore the count.

    The count is process-wide, so it is always restored.
    """
    previous = torch.get_num_threads()
    set_torch_threads(n)
    try:
        yield
    finally:
        set_torch_threads(previous)
