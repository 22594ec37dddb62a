import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    # On a loaded 2-core machine, OpenMP threads contend and small convolutions run ~50x
    # slower; these tests use one thread and restore the setting afterwards.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
