"""Shared by the ``ml`` tests."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """One torch thread per test module, restored after it.

    Two OpenMP threads on a 2-core machine shared with other work stall for seconds, and the
    data-parallel tests run two processes of one thread each, as on this machine.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
