"""Faults that happen, on a satellite host driven by a virtual clock: scripted node resets, link
outages and brownouts of a config take effect at their simulated time and clear after; faults
injected at run time (`SatelliteHost.inject_fault`) too; bad injections are refused naming what
is wrong. The router goes around an outage, waits it out, and comes back after it."""
import errno
import math
import tempfile
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from orbitos.runtime.fault_injection import (FAULT_KINDS, MAX_FAULT_S, check_fault, isl_neighbours,
                                     parse_target, terminal_peers)
from orbitos.runtime.routing import ContactGraphRouter
from orbitos.runtime.satellite_host import HostSpec, SatelliteHost
from orbitos.sim_hw.clock import VirtualClock
from orbitos.sim_hw.constellation import load_constellation
from orbitos.sim_hw.world import World
from tests.unit.kernel.harness import Signer

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "examples" / "constellations" / "three-body-12.toml"
PROFILE = ROOT / "examples" / "profiles" / "three-body.toml"
_PLANS: dict[str, str] = {}


def write_config(directory: Path, scripted: str = "") -> Path:
    """three-body-12 with no random faults and these [[faults.scripted]] entries."""
    text = CONFIG.read_text().replace('"../profiles/three-body.toml"', f'"{PROFILE}"')
    head, _, tail = text.partition("[faults.rates]")
    rates = "[faults.rates]\n" + "\n".join(f"{k} = 0.0" for k in (
        "device_failures_per_day", "node_resets_per_day", "link_outages_per_day", "brownouts_per_day"))
    rest = tail[tail.index("[[faults.ground_events]]"):]
    path = directory / "faulty.toml"
    path.write_text(head + rates + "\n\n" + rest + "\n" + scripted)
    return path


def make_host(config: Path, satellites=None, state_dir=None, signer=None):
    constellation = load_constellation(config)
    if "plan" not in _PLANS:
        _PLANS["plan"] = World(constellation, 1.0).contact_plan.to_json()
    signer = signer or Signer(Path(tempfile.mkdtemp()))
    public = signer.key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    ids = constellation.satellite_ids
    spec = HostSpec(str(config), tuple(satellites or ids), 1.0, constellation.epoch_utc_s, time.time(),
                    1.0, _PLANS["plan"], (public,), 60.0, state_dir, ids)
    clock = VirtualClock(constellation.epoch_utc_s)

    def elsewhere(satellite, port, message, sender):  # the other satellites' host refuses all
        raise OSError(errno.ECONNREFUSED, f"{satellite} is on a host this test does not run")

    return SatelliteHost(spec, elsewhere, clock=clock), clock, signer


def events(host, satellite, event_id):
    return [e for e in host.kernel(satellite).events.events(event_id)]


def test_terminal_mapping_is_the_sorted_neighbours_in_turn():
    plan = World(load_constellation(CONFIG), 1.0).contact_plan
    assert isl_neighbours(plan, "TB01") == ["TB02", "TB12"]  # a ring of 12
    assert terminal_peers(plan, "TB01", 0, 4) == ["TB02"]
    assert terminal_peers(plan, "TB01", 1, 4) == ["TB12"]
    assert terminal_peers(plan, "TB01", 2, 4) == [] and terminal_peers(plan, "TB01", 3, 4) == []
    assert terminal_peers(plan, "TB01", 0, 1) == ["TB02", "TB12"]  # one terminal carries both
    with pytest.raises(ValueError, match="no laser terminal 4"):
        terminal_peers(plan, "TB01", 4, 4)


def test_bad_fault_arguments_are_refused_naming_what_is_wrong():
    plan = World(load_constellation(CONFIG), 1.0).contact_plan
    ids = load_constellation(CONFIG).satellite_ids
    assert check_fault("TB01-TB02", "link_outage", 30, ids, plan) == ("TB01", "TB02", 30.0)
    assert check_fault("TB03", "node_reset", 0, ids, plan) == ("TB03", None, 0.0)
    assert parse_target("TB12-TB01", ids) == ("TB12", "TB01")
    cases = [("XX", "node_reset", 1, "'XX' is neither"), ("TB01", "meteor", 1, "unknown fault kind 'meteor'"),
             ("TB01", None, 1, "unknown fault kind"), (None, "brownout", 1, "satellite id or SAT-SAT"),
             ("TB01", "link_outage", 1, "link_outage targets a link"),
             ("TB01-TB02", "brownout", 1, "brownout targets a satellite"),
             ("TB01-TB05", "link_outage", 1, "TB01 and TB05 have no laser link"),
             ("TB01-TB01", "link_outage", 1, "two different satellites"),
             ("TB01", "brownout", 0, "out of range"), ("TB01", "brownout", -1, "out of range"),
             ("TB01", "node_reset", -0.5, "out of range"), ("TB01", "brownout", MAX_FAULT_S + 1, "out of range"),
             ("TB01", "brownout", math.nan, "finite number"), ("TB01", "brownout", "10", "finite number"),
             ("TB01", "brownout", True, "finite number"), ("TB01", "brownout", math.inf, "finite number")]
    for target, kind, duration, message in cases:
        with pytest.raises(ValueError, match=message):
            check_fault(target, kind, duration, ids, plan)
    assert set(FAULT_KINDS) == {"node_reset", "link_outage", "brownout"}


def test_router_goes_around_an_outage_waits_it_out_and_comes_back():
    plan = World(load_constellation(CONFIG), 1.0).contact_plan
    router = ContactGraphRouter(plan)
    t0 = load_constellation(CONFIG).epoch_utc_s + 600.0
    before = router.earliest_arrival("TB01", "TB02", t0, 1000)
    assert before.nodes == ["TB01", "TB02"]
    covered = router.add_outage("TB01", "TB02", t0 + 100.0, t0 + 400.0)
    assert covered and all({plan.windows[i].source, plan.windows[i].target} == {"TB01", "TB02"}
                           for i in covered)
    assert router.earliest_arrival("TB01", "TB02", t0, 1000).nodes == ["TB01", "TB02"]  # before it
    during = router.earliest_arrival("TB01", "TB02", t0 + 150.0, 1000)
    assert during.nodes[0] == "TB01" and during.nodes[-1] == "TB02" and len(during.nodes) == 12
    assert "TB02" not in during.nodes[1:-1]  # the long way round the ring
    after = router.earliest_arrival("TB01", "TB02", t0 + 400.0, 1000)
    window = plan.windows[covered[0]]
    assert after.nodes == ["TB01", "TB02"]
    # the link is acquired again after the outage before it carries data
    assert after.hops[0].depart_utc_s == pytest.approx(t0 + 400.0 + window.data_start - window.start)
    # a satellite with its only other way out also cut waits in custody for the link
    router.add_outage("TB01", "TB12", t0 + 100.0, t0 + 400.0)
    waiting = router.earliest_arrival("TB01", "TB02", t0 + 150.0, 1000)
    assert waiting.nodes == ["TB01", "TB02"] and waiting.hops[0].depart_utc_s >= t0 + 400.0
    # a whole node out (a reset): nothing leads to it during the outage
    router.add_outage("TB05", None, t0, t0 + 1000.0)
    assert router.earliest_arrival("TB04", "TB05", t0 + 10.0, 1000).hops[-1].depart_utc_s >= t0 + 1000.0
    with pytest.raises(ValueError, match="finite times"):
        router.add_outage("TB01", "TB02", t0 + 5, t0)


def test_scripted_faults_take_effect_at_their_time_and_clear(tmp_path):
    epoch = load_constellation(CONFIG).epoch_utc_s
    scripted = """
[[faults.scripted]]
satellite = "TB02"
kind = "node_reset"
at_h = 0.05

[[faults.scripted]]
satellite = "TB01"
kind = "link_outage"
at_h = 0.1
target = "0"
duration_s = 300.0

[[faults.scripted]]
satellite = "TB03"
kind = "brownout"
at_h = 0.25
duration_s = 600.0
"""
    config = write_config(tmp_path, scripted)
    host, clock, signer = make_host(config, ("TB01", "TB02", "TB03"), state_dir=str(tmp_path / "state"))
    reset_at, outage_at, brownout_at = (epoch + h * 3600.0 for h in (0.05, 0.1, 0.25))
    with clock.participant():
        try:
            host.boot()
            low = signer.image(name="lowapp", priority="low", code="""
def main(sys, argv):
    while True:
        sys.sleep(5.0)
""")
            host.kernel("TB02").install(signer.example("hello"), ("kept",))
            pid_low = host.kernel("TB03").install(low)
            host.kernel("TB02").fs.write_file("/data/note.txt", b"kept across the reset", "runtime", None)
            first = host.kernel("TB02")
            clock.sleep_until(reset_at - 1.0)
            assert host.kernel("TB02") is first and not events(host, "TB02", "REBOOTED")
            clock.sleep_until(reset_at + 1.0)
            second = host.kernel("TB02")
            assert second is not first and second.state == "running" and first.state == "stopped"
            rebooted = events(host, "TB02", "REBOOTED")
            assert len(rebooted) == 1 and rebooted[0].time_utc_s == pytest.approx(reset_at)
            assert "node_reset" in rebooted[0].message
            assert second.fs.read_file("/data/note.txt") == b"kept across the reset"
            assert [p["name"] for p in second.ps() if p["state"] != "exited"] in (["hello"], [])
            assert any(e.fields.get("image") == "/images/hello.img" or "hello" in e.message
                       for e in second.events.events("APP_START") if e.time_utc_s >= reset_at)
            assert [e.event_id for e in second.events.events() if e.source == "faults"][:2] == \
                ["FAULT_INJECTED", "FAULT_CLEARED"]

            # the link outage of terminal 0 of TB01 is its link to TB02
            router = host.network.router
            clock.sleep_until(outage_at - 1.0)
            assert host.network.router.earliest_arrival("TB01", "TB02", clock.now(), 500).nodes == ["TB01", "TB02"]
            clock.sleep_until(outage_at + 1.0)
            during = router.earliest_arrival("TB01", "TB02", clock.now(), 500)
            assert during.nodes != ["TB01", "TB02"] or during.hops[0].depart_utc_s >= outage_at + 300.0
            assert [e.fields["target"] for e in events(host, "TB01", "FAULT_INJECTED")] == ["TB01-TB02"]
            assert "TB01-TB02" in [e.fields["target"] for e in events(host, "TB02", "FAULT_INJECTED")]
            clock.sleep_until(outage_at + 301.0)
            assert [e.fields["target"] for e in events(host, "TB01", "FAULT_CLEARED")] == ["TB01-TB02"]

            # the brownout: array off the bus, low apps suspended, then back
            clock.sleep_until(brownout_at - 1.0)
            tb03 = host.kernel("TB03")
            assert tb03.brownout is None and not tb03.process(pid_low).suspended
            clock.sleep_until(brownout_at + 10.0)
            assert tb03.brownout is not None and tb03.process(pid_low).suspended
            power = tb03.power_status(max_age_s=0.0)
            assert power["generation_w"] == 0.0 and power["brownout"] is True
            assert events(host, "TB03", "BROWNOUT")[0].time_utc_s == pytest.approx(brownout_at)
            assert host.status_row(list(host.kernels)[2])["brownout"] is True
            clock.sleep_until(brownout_at + 610.0)
            assert tb03.brownout is None and not tb03.process(pid_low).suspended
            assert tb03.power_status(max_age_s=0.0)["brownout"] is False
            assert events(host, "TB03", "BROWNOUT_END")[0].time_utc_s == pytest.approx(brownout_at + 600.0)
            counters = host.fault_counters()
            assert counters["node_reset"] == 1 and counters["brownout"] == 1
            assert counters["link_outage"] == 1 and counters["cleared"] == 3 and counters["active"] == 0
            assert counters["errors"] == 0
        finally:
            host.shutdown()


def test_brownout_energy_falls_by_the_load_integrated_then_recovers():
    """In sunlight, a 1,200 s brownout with loads switched inside it: the stored energy falls by
    exactly (integral of the load) / discharge efficiency, the ledger still balances, nothing is
    generated meanwhile; after it the array charges the battery again."""
    from orbitos.sim_hw.power import (BatterySpec, EnergyLedger, EpsSpec, GenerationProfile, PowerModelError,
                              PowerSystem, SolarArraySpec)
    battery = BatterySpec(capacity_wh=1000.0, charge_efficiency=0.9, discharge_efficiency=0.8,
                          reserve_fraction=0.3, critical_fraction=0.1, initial_soc=0.6)
    times = [0.0 + 60.0 * k for k in range(200)]
    import numpy as np
    profile = GenerationProfile(np.array(times), np.full(len(times), 500.0))  # always lit, 500 W
    system = PowerSystem(EpsSpec(SolarArraySpec(1.0, 0.3), battery, baseline_power_w=40.0), profile, 0.0)
    system.cut_generation(1000.0, 2200.0)
    system.advance_to(1000.0)
    before_wh, generated_wh = system.energy_wh, system.ledger.generated_wh
    assert system.generation_w() == 0.0 and system.generation_cut_at(1000.0)
    system.set_load("gpu0", 150.0, 1300.0)       # 40 W for 300 s, 190 W for 600 s,
    system.set_load("gpu0", 0.0, 1900.0)         # 40 W for 300 s
    system.advance_to(2200.0)
    load_wh = (40.0 * 300 + 190.0 * 600 + 40.0 * 300) / 3600.0
    assert before_wh - system.energy_wh == pytest.approx(load_wh / 0.8, rel=1e-12, abs=1e-9)
    assert system.ledger.generated_wh == generated_wh  # nothing generated in the brownout
    assert not system.generation_cut_at(2200.0) and system.generation_w() == 500.0
    system.advance_to(2800.0)
    assert system.energy_wh - (before_wh - load_wh / 0.8) == pytest.approx((500.0 - 40.0) * 0.9 * 600 / 3600)
    ledger = system.ledger
    start_wh = 0.6 * 1000.0
    assert ledger.generated_wh - (ledger.consumed_wh + system.energy_wh - start_wh + ledger.spilled_wh
                                  + ledger.loss_wh) == pytest.approx(0.0, abs=1e-9)
    for start, end in ((5.0, 4.0), (float("nan"), 10.0), (0.0, float("inf"))):
        with pytest.raises(PowerModelError):
            system.cut_generation(start, end)
    assert isinstance(EnergyLedger(), EnergyLedger)


def test_injected_brownout_shows_in_the_satellites_battery(tmp_path):
    """A brownout injected on a host: the satellite's battery falls by its loads (the bus's
    baseline and its devices' idle draw, at the discharge efficiency) for the whole interval,
    generation is 0, then comes back."""
    host, clock, _ = make_host(write_config(tmp_path), ("TB01",))
    with clock.participant():
        try:
            host.boot()
            kernel, hardware = host.kernel("TB01"), host.hardware["TB01"]
            clock.sleep(100.0)
            record = host.inject_fault("TB01", "brownout", 900.0)
            assert record["kind"] == "brownout" and record["target"] == "TB01"
            assert record["end_utc_s"] - record["start_utc_s"] == 900.0
            clock.sleep(1.0)
            hardware.power.advance_to(clock.now())
            start_wh, start_t = hardware.power.energy_wh, clock.now()
            consumed_wh, generated_wh = hardware.power.ledger.consumed_wh, hardware.power.ledger.generated_wh
            load_w = hardware.power.load_w  # idle loads only: no app runs
            assert kernel.brownout is not None and kernel.power_status(0.0)["generation_w"] == 0.0
            clock.sleep_until(record["end_utc_s"])
            hardware.power.advance_to(clock.now())
            drop_wh = start_wh - hardware.power.energy_wh
            eta = hardware.profile.eps.battery.discharge_efficiency
            # exactly the load served (the ledger's integral of the piecewise-constant load) / eta
            served_wh = hardware.power.ledger.consumed_wh - consumed_wh
            assert drop_wh == pytest.approx(served_wh / eta, rel=1e-12)
            assert hardware.power.ledger.generated_wh == generated_wh
            # and within 0.01 % of the idle loads alone (the scrubber's reads add a few pulses)
            assert drop_wh == pytest.approx(load_w * (clock.now() - start_t) / 3600.0 / eta, rel=1e-4)
            clock.sleep(30.0)
            assert kernel.brownout is None
            in_sun = hardware.track.illumination_at(clock.now()) > 0.5
            assert (kernel.power_status(0.0)["generation_w"] > 0.0) == in_sun
            assert [e.event_id for e in kernel.events.events() if e.source in ("faults", "eps")] == \
                ["FAULT_INJECTED", "BROWNOUT", "BROWNOUT_END", "FAULT_CLEARED"]
        finally:
            host.shutdown()


def test_a_hop_cut_by_an_outage_is_routed_again_from_the_satellite_holding_it():
    """A message on its way TB01 -> TB02 -> TB03 -> TB04 when TB01-TB02 goes down: the network
    routes it again from TB01, the long way round the ring, and it still arrives (counted
    rerouted); with both of TB01's links down it waits in TB01's custody until one is back."""
    from orbitos.runtime.isl_network import IslNetwork
    plan = World(load_constellation(CONFIG), 1.0).contact_plan
    t0 = load_constellation(CONFIG).epoch_utc_s + 60.0
    clock = VirtualClock(t0)
    network = IslNetwork(plan, clock)
    arrivals = []
    for node in {w.source for w in plan.windows}:
        network.attach(node, lambda port, data, sender, node=node: arrivals.append((node, data, clock.now())))
    with clock.participant():
        network.start()
        receipt = network.send("TB01", "TB04", 9, b"x" * 1000, "test")
        assert receipt.route == ("TB01", "TB02", "TB03", "TB04")
        network.router.add_outage("TB01", "TB02", clock.now(), clock.now() + 600.0)
        clock.sleep(5.0)
        assert arrivals and arrivals[0][0] == "TB04" and arrivals[0][2] > receipt.arrival_utc_s
        assert network.counters["rerouted"] == 1 and network.counters["delivered"] == 1
        assert network.counters["hops"] == 9  # TB01, TB12, TB11, ..., TB05, TB04: 9 hops, none over the cut link

        receipt = network.send("TB01", "TB02", 9, b"held", "test")
        network.router.add_outage("TB01", "TB12", clock.now(), clock.now() + 300.0)
        clock.sleep(299.0)
        assert len(arrivals) == 1 and network.counters["rerouted"] == 2  # waiting in TB01's custody
        clock.sleep(400.0)
        assert [a[1] for a in arrivals] == [b"x" * 1000, b"held"]
        window = plan.between("TB01", "TB12")[0]
        assert arrivals[1][2] >= t0 + 300.0 + (window.data_start - window.start)  # reacquired first
        network.stop()


def test_injected_faults_on_a_host_node_reset_keeps_files_and_apps(tmp_path):
    """inject_fault as set_damage/set_recovery: a 120 s node reset takes TB02 down (nothing
    delivered to it, routes wait for it), then it boots again with its files and installed app;
    a link outage and bad injections."""
    host, clock, signer = make_host(write_config(tmp_path), ("TB01", "TB02", "TB03"),
                                    state_dir=str(tmp_path / "state"))
    receiver = signer.image(name="rx", capabilities={"ports": [5000]}, code="""
def main(sys, argv):
    port = sys.bind(5000)
    while True:
        sys.recv(port, timeout_s=3600)
""")
    with clock.participant():
        try:
            host.boot()
            clock.sleep(30.0)
            host.kernel("TB02").install(receiver)
            host.kernel("TB02").fs.write_file("/data/keep.bin", b"\x01" * 5000, "runtime", None)
            clock.sleep(1.0)
            first = host.kernel("TB02")
            assert first.ports and first.live()
            record = host.inject_fault("TB02", "node_reset", 120.0)
            assert set(record) == {"target", "kind", "start_utc_s", "end_utc_s"}
            assert record["end_utc_s"] == record["start_utc_s"] + 120.0
            clock.sleep(1.0)
            assert first.state == "stopped" and host.kernel("TB02") is first
            assert host.status_row(list(host.kernels)[1])["state"] == "stopped"
            assert not host.deliver("TB02", 5000, "while down", "test")  # refused: it is off
            route = host.network.router.earliest_arrival("TB01", "TB02", clock.now(), 200)
            assert route.hops[-1].depart_utc_s >= record["end_utc_s"]  # waits in custody for it
            clock.sleep_until(record["end_utc_s"] + 5.0)
            second = host.kernel("TB02")
            assert second is not first and second.state == "running"
            assert second.fs.read_file("/data/keep.bin") == b"\x01" * 5000
            assert [p.name for p in second.live()] == ["rx"] and 5000 in second.ports
            assert host.deliver("TB02", 5000, "after", "test")
            ids = [e.event_id for e in second.events.events() if e.time_utc_s >= record["start_utc_s"]]
            assert ids.index("FAULT_INJECTED") < ids.index("RESETTING") < ids.index("SHUTDOWN") \
                < ids.index("REBOOTED") < ids.index("BOOT_COMPLETE") < ids.index("FAULT_CLEARED")
            assert second.events is first.events  # the log goes on across the reset

            outage = host.inject_fault("TB02-TB03", "link_outage", 200.0)
            clock.sleep(1.0)
            around = host.network.router.earliest_arrival("TB02", "TB03", clock.now(), 200)
            assert around.nodes[:2] == ["TB02", "TB01"]  # the other way round the ring
            assert host.kernel("TB03").events.last("FAULT_INJECTED").fields["target"] == "TB02-TB03"
            clock.sleep_until(outage["end_utc_s"] + 30.0)
            assert host.network.router.earliest_arrival("TB02", "TB03", clock.now(), 200).nodes == ["TB02", "TB03"]
            # a link between two satellites of other hosts is still routed around here
            assert host.inject_fault("TB07-TB08", "link_outage", 10.0)["target"] == "TB07-TB08"

            for args, message in ((("TB99", "node_reset", 1.0), "'TB99' is neither"),
                                  (("TB01", "reboot", 1.0), "unknown fault kind 'reboot'"),
                                  (("TB01", "brownout", -5.0), "out of range"),
                                  (("TB01-TB03", "link_outage", 5.0), "no laser link")):
                with pytest.raises(ValueError, match=message):
                    host.inject_fault(*args)
            with pytest.raises(ValueError, match="finite UTC time"):
                host.inject_fault("TB01", "brownout", 5.0, start_utc_s=float("nan"))
            clock.sleep(1.0)
            counters = host.fault_counters()
            assert counters["injected"] == 2 and counters["elsewhere"] == 1  # TB07-TB08: routing only here
            assert counters["node_reset"] == 1 and counters["errors"] == 0
        finally:
            host.shutdown()


@pytest.mark.slow
def test_orbitos_fault_refuses_bad_input_without_a_traceback(tmp_path):
    """`orbitos fault` with a bad kind, duration or missing argument: one line naming what is
    wrong and exit status 2, before any cluster is reached (no Ray is started)."""
    import os
    import subprocess
    import sys
    env = dict(os.environ, ORBITOS_HOME=str(tmp_path / "home"), PYTHONPATH=str(ROOT))
    cases = [(["TB01", "meteor", "--for", "10"], "unknown fault kind 'meteor'"),
             (["TB01", "brownout", "--for", "ten"], "--for 'ten': not a duration"),
             (["TB01", "brownout", "--for", "5parsecs"], "not a duration"),
             (["TB01", "brownout", "--for", "0"], "out of range for a brownout"),
             (["TB01", "node_reset", "--for", "-3"], "out of range"),
             (["TB01", "link_outage", "--for", "inf"], "finite number"),
             (["TB01", "brownout", "--for", "nan"], "not a duration"),
             (["TB01", "brownout", "--for", "31d"], "not a duration"),
             (["TB01", "brownout", "--for", "1000h"], "out of range"),
             (["TB01", "brownout"], "--for"),
             (["TB01"], "KIND")]
    for argv, message in cases:
        done = subprocess.run([sys.executable, "-m", "orbitos.runtime.cli", "fault", *argv], env=env,
                              capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert done.returncode == 2, (argv, done.stdout, done.stderr)
        assert message in done.stderr and "Traceback" not in done.stderr, (argv, done.stderr)
    from orbitos.runtime.cli_constellation import _fault_duration_s
    assert [_fault_duration_s(t) for t in ("90", "90s", "5m", "5min", "1.5h", " 2H ")] == \
        [90.0, 90.0, 300.0, 300.0, 5400.0, 7200.0]


def test_kernel_brownout_holds_low_and_normal_apps_with_safe_mode_and_after_it():
    """A brownout suspends low and normal apps (essential run on), holds apps started during it,
    and does not resume an app that safe mode also holds; safe mode left during a brownout does
    not resume one the brownout holds."""
    from tests.unit.kernel.harness import make_kernel
    signer = Signer(Path(tempfile.mkdtemp()))
    kernel = make_kernel(signer)
    loop = """
def main(sys, argv):
    while True:
        sys.sleep(5.0)
"""
    with kernel.clock.participant():
        kernel.boot()
        try:
            low = kernel.spawn(signer.image(name="low", priority="low", code=loop))
            essential = kernel.spawn(signer.image(name="ess", priority="essential", code=loop))
            kernel.clock.sleep(1.0)
            assert kernel.begin_brownout("test", kernel.clock.now() + 100.0) == [low]
            late = kernel.spawn(signer.image(name="late", priority="normal", code=loop))
            kernel.clock.sleep(10.0)
            assert kernel.process(low).state == "suspended" and kernel.process(late).suspended
            assert not kernel.process(essential).suspended
            assert kernel.housekeeping()["brownout"] == "test"
            kernel.enter_safe_mode("a service keeps failing")  # holds low and normal too
            kernel.apply_safe_mode(0.99)  # safe mode left: the brownout still holds them
            assert not kernel.governor.safe_mode and kernel.process(low).suspended
            assert sorted(kernel.end_brownout()) == [low, late]
            kernel.clock.sleep(10.0)
            assert kernel.process(low).state != "suspended" and kernel.end_brownout() == []
            kernel.enter_safe_mode("again")
            kernel.begin_brownout("second", None)
            kernel.end_brownout()
            assert kernel.process(low).suspended  # safe mode holds it still
        finally:
            kernel.shutdown()


_RING = {}


def _ring_plan():
    if "plan" not in _RING:
        _RING["plan"] = World(load_constellation(CONFIG), 1.0).contact_plan
    return _RING["plan"]


def test_routes_never_cross_an_outage_and_never_arrive_earlier_for_one():
    """Property (hypothesis): random outages on random links and nodes, random senders, sizes
    and times: no hop of a route sends during an outage of its window, and a route with
    outages never arrives before the same message's route without them."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    plan = _ring_plan()
    ids = sorted({w.source for w in plan.windows if w.kind == "isl"})
    t0 = load_constellation(CONFIG).epoch_utc_s
    outage = st.tuples(st.sampled_from(ids), st.one_of(st.none(), st.sampled_from(ids)),
                       st.floats(0.0, 3000.0), st.floats(1.0, 900.0))
    checked = {"routes": 0, "none": 0}

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(outage, max_size=6), st.sampled_from(ids), st.sampled_from(ids),
           st.floats(0.0, 3000.0), st.integers(1, 10_000_000))
    def check(outages, source, target, offset, size):
        clear = ContactGraphRouter(plan)
        router = ContactGraphRouter(plan)
        for a, b, start, length in outages:
            if a != b:
                router.add_outage(a, b, t0 + start, t0 + start + length)
        route = router.earliest_arrival(source, target, t0 + offset, size)
        baseline = clear.earliest_arrival(source, target, t0 + offset, size)
        if route is None:
            checked["none"] += 1
            return
        checked["routes"] += 1
        assert baseline is not None and route.arrival_utc_s >= baseline.arrival_utc_s
        for hop in route.hops:
            sent = hop.depart_utc_s + size * 8.0 / hop.window.rate_bps
            for start, stop in router.outages(hop.window_index):
                assert not (start <= sent and hop.depart_utc_s < stop), (hop, start, stop)
            assert not router.interrupted(hop, size)

    check()
    assert checked["routes"] > 50


@pytest.mark.slow
def test_a_storm_of_faults_leaves_every_satellite_running_with_its_files():
    """40 faults of every kind at seeded random times and durations on three satellites (resets
    during brownouts, outages during resets, resets in a row), with an installed app and a
    sender across the cut links: afterwards every satellite runs one copy of its app, keeps its
    files, no fault failed, every fault cleared, and no thread is left over from the old kernels."""
    import random
    import threading
    tmp = Path(tempfile.mkdtemp())
    host, clock, signer = make_host(write_config(tmp), ("TB01", "TB02", "TB03"), state_dir=str(tmp / "state"))
    rng = random.Random(11)
    app = signer.image(name="pinger", priority="low", capabilities={"isl_send": True, "ports": [6000]}, code="""
def main(sys, argv):
    port = sys.bind(6000)
    peer = {"TB01": "TB02", "TB02": "TB03", "TB03": "TB01"}[argv[0]]
    while True:
        try:
            sys.send(peer, 6000, "ping")
        except OSError:
            pass
        try:
            sys.recv(port, timeout_s=20.0)
        except TimeoutError:
            pass
        sys.sleep(10.0)
""")
    with clock.participant():
        try:
            host.boot()
            for satellite in ("TB01", "TB02", "TB03"):
                host.kernel(satellite).install(app, (satellite,))
                host.kernel(satellite).fs.write_file("/data/id", satellite.encode(), "runtime", None)
            clock.sleep(30.0)
            threads_before = threading.active_count()
            targets = {"node_reset": ["TB01", "TB02", "TB03"], "brownout": ["TB01", "TB02", "TB03"],
                       "link_outage": ["TB01-TB02", "TB02-TB03", "TB12-TB01"]}
            start = clock.now()
            for _ in range(40):
                kind = rng.choice(sorted(targets))
                duration = 0.0 if kind == "node_reset" and rng.random() < 0.3 else rng.uniform(5.0, 300.0)
                host.inject_fault(rng.choice(targets[kind]), kind, duration, start + rng.uniform(0.0, 1800.0))
            clock.sleep_until(start + 1800.0 + 300.0 + 60.0)
            counters = host.fault_counters()
            assert counters["errors"] == 0 and counters["active"] == 0 and counters["injected"] == 40
            assert counters["cleared"] == 40
            for satellite in ("TB01", "TB02", "TB03"):
                kernel = host.kernel(satellite)
                crashed = [e.message for e in kernel.events.events("APP_EXIT") if "crashed" in e.message]
                assert not crashed
                assert kernel.state == "running" and kernel.brownout is None
                assert [p.name for p in kernel.live()] == ["pinger"]
                assert kernel.fs.read_file("/data/id") == satellite.encode()
                assert not kernel.live()[0].suspended or kernel.governor.safe_mode
            assert threading.active_count() <= threads_before + 2
            assert host.network.counters["faults"] == 0 and host.network.counters["delivered"] > 50
            print("storm:", counters, host.network.counters)
        finally:
            host.shutdown()


def test_a_kernels_restart_request_is_a_reset_by_its_host(tmp_path):
    """A kernel whose services keep failing asks for a restart: its host resets it at once (a
    new kernel, REBOOTED naming the request), counted `requested`."""
    host, clock, _ = make_host(write_config(tmp_path), ("TB01",), state_dir=str(tmp_path / "state"))
    with clock.participant():
        try:
            host.boot()
            first = host.kernel("TB01")
            first.request_restart("scrubber keeps failing")
            clock.sleep(1.0)
            second = host.kernel("TB01")
            assert second is not first and second.state == "running" and first.state == "stopped"
            rebooted = second.events.last("REBOOTED")
            assert "restart requested: scrubber keeps failing" in rebooted.message
            assert "no restart handler" not in second.events.last("KERNEL_RESTART_REQUESTED").message
            assert host.fault_counters()["requested"] == 1 and host.fault_counters()["errors"] == 0
        finally:
            host.shutdown()
