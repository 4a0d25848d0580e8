import os
import sys

# Tests import the in-tree packages even when gp-loss is not installed.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import gc  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _unfreeze_gc():
    """A search warms its worker up and then freezes the garbage collector's view of it
    (gp_loss.evolution.jobs.prepare); in the test process, let later tests collect it."""
    yield
    gc.unfreeze()
