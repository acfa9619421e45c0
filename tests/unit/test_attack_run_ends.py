"""Attack on "a dispatched task reaches done/failed with its own end" (runtime/satellite_host.py
run_once / _process_ended), by the attacker of issue 11: the ends of processes not started by
"run" are kept for a moment (an end can come before run_once notes its pid), keyed by satellite
and pid; a kernel started again by a node reset numbers its processes from 100 again, so an end
kept from the old kernel was handed to a new "run" that got the same pid: the scheduler heard
that its task ended while it was still running."""
import tempfile
import time

from orbitos.runtime.satellite_host import HostSpec, SatelliteHost
from tests.unit.test_control import ADMIN, CONFIG, CONSTELLATION, OPERATE_CAPABILITIES, PLAN_JSON, SIGNER, pem

QUICK = "def main(sys, argv):\n    return 0\n"
LONG = "def main(sys, argv):\n    sys.sleep(36000.0)\n"


class Ends:
    """Where the host sends the ends of the processes "run" started (the scheduler's hook)."""

    def __init__(self):
        self.heard = []

    def task_ended(self, ended):
        self.heard.append(ended)


def test_an_end_kept_from_before_a_reset_is_not_given_to_a_new_run_with_the_same_pid():
    ends = Ends()
    spec = HostSpec(str(CONFIG), ("TB01",), 600.0, CONSTELLATION.epoch_utc_s, time.time(), 1.0, PLAN_JSON,
                    (pem(SIGNER.key),), 60.0, tempfile.mkdtemp(),
                    operator_keys=((pem(ADMIN.private_key), OPERATE_CAPABILITIES),))
    host = SatelliteHost(spec, scheduler=ends)
    host.boot()
    try:
        kernel = host.kernel("TB01")
        child = kernel.spawn(SIGNER.image(QUICK, name="child"), ())  # not by "run": e.g. an app's child
        kernel.wait(child, timeout_s=30.0)
        # the host's exit listener keeps that end without failing (ENDS_KEPT was not defined:
        # every end of a process not started by "run" was an EXIT_LISTENER_FAILED error event)
        assert [e.message for e in kernel.events.events("EXIT_LISTENER_FAILED")] == []
        host.halt_satellite("TB01", "attack")
        host.restart_satellite("TB01", "attack")
        pid = host.run_once("TB01", SIGNER.image(LONG, name="task"), ())
        assert pid == child  # numbered from 100 again
        time.sleep(0.5)
        assert ends.heard == [], f"the scheduler heard an end of a process still running: {ends.heard}"
        assert host.kernel("TB01").ps()[0]["state"] != "exited"
        host.kernel("TB01").kill(pid, reason="attack: its real end")
        deadline = time.monotonic() + 10.0
        while not ends.heard and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [(e["pid"], e["name"]) for e in ends.heard] == [(pid, "task")]
    finally:
        host.shutdown()
