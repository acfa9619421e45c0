"""Polling for the integration tests: a condition on a running constellation, within a time."""
import time


def wait_for(predicate, timeout_s=60.0, poll_s=0.2):
    """predicate()'s first truthy value; AssertionError when none comes in time."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError("condition not met in time")
