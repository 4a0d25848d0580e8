"""Torch's intra-op thread count, set for a block of code and then restored."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch CPU threads (``None`` or 0: as they are), then restore the count.

    The count is process-wide, so it is always restored, and only switched
    when it differs (switching costs microseconds).
    """
    previous = torch.get_num_threads()
    if n and n != previous:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)
