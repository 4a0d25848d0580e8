import os
import sys

# Tests import the in-tree packages even when gp-loss is not installed.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import gc  # noqa: E402

import pytest  # noqa: E402

from tests.helpers import ROOT  # noqa: E402


@pytest.fixture(autouse=True)
def _unfreeze_gc():
    """A search warms its worker up and then freezes the garbage collector's view of it
    (gp_loss.evolution.jobs.prepare); in the test process, let later tests collect it."""
    yield
    gc.unfreeze()


@pytest.fixture(scope="session")
def load_script():
    """``load_script("search_classification")``: a ``runs/`` script loaded as a module (its ``main`` not run)."""
    import importlib.util

    loaded = {}

    def load(name: str):
        if name not in loaded:
            path = ROOT / "runs" / f"{name}.py"
            spec = importlib.util.spec_from_file_location(f"{name}_script", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            loaded[name] = module
        return loaded[name]
    return load
