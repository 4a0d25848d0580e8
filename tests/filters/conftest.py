import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    # Tiny tensors: with several OpenMP threads on a busy machine, softmax and
    # max-pooling stall for milliseconds waiting for a descheduled thread.
    # One thread keeps these tests fast; the previous setting is restored.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
