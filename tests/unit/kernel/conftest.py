import pytest

from tests.unit.kernel.harness import Signer, make_kernel


@pytest.fixture(scope="session")
def signer(tmp_path_factory):
    return Signer(tmp_path_factory.mktemp("keys"))


@pytest.fixture
def kernel(signer):
    """A booted kernel on a virtual clock; the test thread is a participant."""
    kernel = make_kernel(signer)
    with kernel.clock.participant():
        kernel.boot()
        yield kernel
        kernel.shutdown()
