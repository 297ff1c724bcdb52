"""Shared test configuration."""

import sys

import pytest


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tests use small tensors: on a shared 2-core machine extra intra-op threads only add
    contention. Acts only where the test module has already imported torch (the core tests
    must not import it)."""
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory):
    """One data cache and model zoo for the experiment and merge tests: the shared CIFAR-10 is
    decoded once per test run, not once per module (zoo keys hold everything that determines
    a model, so sharing the zoo reuses only identical models)."""
    return tmp_path_factory.mktemp("shared-cache")
