"""Hardware-in-the-loop pytest plugin: run the device conformance suite against any backend.

Backends (the `hil` fixture is parametrised over those selected):

- `local`: the simulated hardware in the test process;
- `server`: a device server (`orbitos hw serve`) the plugin starts as a subprocess;
- `external`: a device server or board bridge you name with `--hil-endpoint tcp://HOST:PORT`
  or the environment variable ORBITOS_HIL_ENDPOINT.

Options: `--hil-endpoint`, `--hil-backends local,server,external` (default: local and server,
plus external when an endpoint is given), `--hil-profile PATH` (the hardware profile the devices
must conform to; default examples/profiles/three-body.toml). At the end of the run the plugin
prints the time spent per backend. See docs/hil.md.
"""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest

from orbitos.drivers.device_tree import DeviceTree
from orbitos.drivers.transport import TcpTransport
from orbitos.sim_hw.clock import VirtualClock
from orbitos.sim_hw.hardware import SatelliteHardware
from orbitos.sim_hw.profile import HardwareProfile, load_profile

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PROFILE = ROOT / "examples" / "profiles" / "three-body.toml"
START = datetime(2026, 6, 1, tzinfo=timezone.utc)
ENV_ENDPOINT = "ORBITOS_HIL_ENDPOINT"
_timings: dict[str, list[float]] = {}
_outcomes: dict[str, dict[str, int]] = {}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("orbitos-hil", "orbitos hardware-in-the-loop")
    group.addoption("--hil-endpoint", default=os.environ.get(ENV_ENDPOINT),
                    help=f"tcp://HOST:PORT of a device server or board bridge (or ${ENV_ENDPOINT})")
    group.addoption("--hil-backends", default=None,
                    help="comma list of local, server, external (default: local,server[,external])")
    group.addoption("--hil-profile", default=str(DEFAULT_PROFILE),
                    help="hardware profile the devices must conform to")


def _backends(config: pytest.Config) -> list[str]:
    chosen = config.getoption("--hil-backends")
    if chosen:
        names = [b.strip() for b in chosen.split(",") if b.strip()]
    else:
        names = ["local", "server"] + (["external"] if config.getoption("--hil-endpoint") else [])
    unknown = [b for b in names if b not in ("local", "server", "external")]
    if unknown:
        raise pytest.UsageError(f"--hil-backends: unknown backend {unknown[0]!r}")
    if "external" in names and not config.getoption("--hil-endpoint"):
        raise pytest.UsageError(f"the external backend needs --hil-endpoint or ${ENV_ENDPOINT}")
    return names


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "hil" in metafunc.fixturenames:
        metafunc.parametrize("hil_backend", _backends(metafunc.config), indirect=True, scope="session")


@dataclass
class Hil:
    """What a conformance test gets: the device tree, its clock, and the profile to check against."""

    backend: str
    tree: DeviceTree
    clock: VirtualClock
    profile: HardwareProfile

    def device(self, name: str):
        """The driver of `name`, opened; skips the test when the profile has no such device."""
        if name not in self.profile.device_names():
            pytest.skip(f"profile {self.profile.name} has no {name}")
        driver = self.tree[name]
        return driver.open()


class DeviceServerProcess:
    """`orbitos hw serve` in a subprocess, on a free port."""

    def __init__(self, profile: Path, start: datetime) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "orbitos.runtime.cli", "hw", "serve", str(profile), "--port", "0",
             "--start", start.isoformat().replace("+00:00", "Z")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        line = self.process.stdout.readline()
        if not line.startswith("listening on "):
            self.stop()
            raise RuntimeError(f"device server did not start: {line!r} {self.process.stderr.read()}")
        self.endpoint = "tcp://" + line.split()[2]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        for stream in (self.process.stdout, self.process.stderr):
            if stream:
                stream.close()


@pytest.fixture(scope="session")
def hil_backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="session")
def _hil_session(request: pytest.FixtureRequest, hil_backend: str):
    profile_path = Path(request.config.getoption("--hil-profile"))
    profile = load_profile(profile_path)
    server = None
    if hil_backend == "local":
        clock = VirtualClock(start_utc=START.timestamp())
        hardware = SatelliteHardware(profile, "HIL", start_utc_s=clock.now())
        tree = DeviceTree.build(profile, clock, "local", hardware=hardware)
    else:
        if hil_backend == "server":
            server = DeviceServerProcess(profile_path, START)
            endpoint = server.endpoint
        else:
            endpoint = request.config.getoption("--hil-endpoint")
        # A board is not reset between runs: start the clock at the device side's own time.
        hello = TcpTransport(endpoint, timeout_s=60.0)
        try:
            now = max(START.timestamp(), float(hello.hello().get("now_utc_s", 0.0)))
        finally:
            hello.close()
        clock = VirtualClock(start_utc=now)
        tree = DeviceTree.build(profile, clock, endpoint, timeout_s=60.0)
    yield Hil(hil_backend, tree, clock, profile)
    tree.close()
    if server is not None:
        server.stop()


@pytest.fixture
def hil(_hil_session: Hil):
    """The device tree of the backend under test; the test thread is a clock participant."""
    if _hil_session.tree.failures:
        failure = _hil_session.tree.failures[0]
        pytest.fail(f"{failure.device} did not probe on {_hil_session.backend}: {failure.reason}")
    with _hil_session.clock.participant():
        yield _hil_session


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    callspec = getattr(item, "callspec", None)
    backend = callspec.params.get("hil_backend") if callspec else None
    if backend and report.when == "call":
        _timings.setdefault(backend, []).append(report.duration)
        counts = _outcomes.setdefault(backend, {"passed": 0, "failed": 0, "skipped": 0})
        counts[report.outcome] = counts.get(report.outcome, 0) + 1


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if not _timings:
        return
    terminalreporter.section("orbitos hardware in the loop: time per backend")
    for backend, durations in _timings.items():
        counts = _outcomes[backend]
        terminalreporter.write_line(
            f"{backend:<9} {len(durations):>3} tests  {counts['passed']} passed, {counts['failed']} "
            f"failed, {counts['skipped']} skipped  total {sum(durations) * 1e3:8.1f} ms  "
            f"mean {sum(durations) / len(durations) * 1e3:6.2f} ms")
