"""Fixtures more than one test file uses."""
import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """For files of tiny models (pytestmark = pytest.mark.usefixtures("one_thread")): one thread is 3-4x faster than
    two fighting other processes for the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
