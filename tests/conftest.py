"""Shared test configuration."""

import os
import sys

import pytest
from hypothesis import settings

# Property tests draw the same examples on every run and machine (a CI run must not meet a new,
# possibly pathological, random formula each time); HYPOTHESIS_PROFILE=explore draws fresh ones.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


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
