"""Calo tests run single-threaded: the many small tensor ops of the blockwise loss and the GravNet
layers are latency-bound, and an oversubscribed thread pool on a shared 2-core machine makes each of
them wait for a core (measured: 35 s with 2 threads vs 1 s with 1 thread for the same loss)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
