"""One local Ray for the whole test session (tests that need a multi-node cluster make their
own, after shutting this one down, and the next test that asks for it starts it again)."""
import pytest
import ray

from orbitos.runtime.ray_cluster import start_ray


@pytest.fixture
def local_ray():
    if not ray.is_initialized():
        start_ray(num_cpus=2)
    yield


@pytest.fixture(scope="session", autouse=True)
def _shutdown_ray_at_the_end():
    yield
    if ray.is_initialized():
        ray.shutdown()
