import pytest

from gp_loss.runtime.threads import torch_threads


@pytest.fixture(scope="module")
def one_thread():
    # Tiny tensors: with several OpenMP threads on a busy machine, softmax and
    # max-pooling stall for milliseconds waiting for a descheduled thread.
    # One thread keeps these tests fast; the previous setting is restored.
    with torch_threads(1):
        yield
