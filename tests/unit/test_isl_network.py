"""The ISL network: latency from the contact plan, store-and-forward, time to live, shared
capacity, tampered and replayed frames, and kernels talking through it."""
import errno
from pathlib import Path

import pytest

from orbitos.runtime.isl_network import FRAME_OVERHEAD_BYTES, IslNetwork
from orbitos.runtime.link_crypto import SealedFrame
from orbitos.sim_hw.clock import VirtualClock
from orbitos.sim_hw.constellation import load_constellation
from orbitos.sim_hw.contact_plan import ContactPlan, ContactWindow
from orbitos.sim_hw.wire import encode
from orbitos.sim_hw.world import World

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ring():
    world = World(load_constellation(ROOT / "examples" / "constellations" / "three-body-12.toml"), 2.0)
    return world.contact_plan, world.times_utc_s[0]


def network_on(plan, t0):
    clock = VirtualClock(t0)
    network = IslNetwork(plan, clock)
    arrivals = []
    for node in {w.source for w in plan.windows} | {w.target for w in plan.windows}:
        network.attach(node, lambda port, data, sender, node=node: arrivals.append(
            (node, port, data, sender, clock.now())))
    return clock, network, arrivals


def size_of(message):
    return len(encode({"sender": "x", "data": message})) + FRAME_OVERHEAD_BYTES


def test_latency_is_the_contact_plans_figure(ring):
    """One hop: serialisation at the link rate + the window's one-way light time; three hops:
    the sum; during acquisition the message waits for data to flow."""
    plan, t0 = ring
    clock, network, arrivals = network_on(plan, t0)
    message = b"x" * 100_000
    with clock.participant():
        network.start()
        clock.sleep(20.0)  # past the 15 s acquisition of every ring link
        sent_at = clock.now()
        receipt = network.send("TB01", "TB02", 9, message, "test")
        window = plan.between("TB01", "TB02")[0]
        expected = size_of(message) * 8 / window.rate_bps + window.latency_s
        assert receipt.latency_s == pytest.approx(expected, abs=1e-6)  # float64 time resolution
        far = network.send("TB01", "TB04", 9, message, "test")
        assert far.route == ("TB01", "TB02", "TB03", "TB04")
        clock.sleep(1.0)
        (node, port, data, sender, at), (node2, *_rest, at2) = arrivals
        assert (node, port, data, sender) == ("TB02", 9, message, "test")
        assert at - sent_at == pytest.approx(expected, abs=1e-6)
        assert node2 == "TB04" and at2 == pytest.approx(far.arrival_utc_s, abs=1e-6)
        network.stop()
    early_clock, early, _ = network_on(plan, t0)
    with early_clock.participant():
        receipt = early.send("TB01", "TB02", 9, b"hi", "test")
        assert receipt.arrival_utc_s > t0 + 15.0  # nothing before acquisition completes


def gap_plan():
    """A -> B from 0 to 100 s, B -> C only from 500 s to 600 s: a message for C waits at B."""
    return ContactPlan([ContactWindow(0.0, 100.0, "A", "B", 1e6, 0.01),
                        ContactWindow(500.0, 600.0, "B", "C", 1e6, 0.01)])


def test_store_and_forward_across_a_gap():
    clock, network, arrivals = network_on(gap_plan(), 0.0)
    with clock.participant():
        network.start()
        clock.sleep(10.0)
        receipt = network.send("A", "C", 1, "hello C", "A:app")
        assert receipt.route == ("A", "B", "C") and receipt.arrival_utc_s > 500.0
        clock.sleep(300.0)
        assert arrivals == []  # in B's custody
        clock.sleep(300.0)
        assert [a[0] for a in arrivals] == ["C"] and 500.0 < arrivals[0][4] < 501.0
        assert network.counters["delivered"] == 1 and network.counters["hops"] == 2
        network.stop()


def test_time_to_live_and_no_route_are_told_to_the_sender():
    clock, network, _ = network_on(gap_plan(), 0.0)
    with clock.participant():
        with pytest.raises(TimeoutError, match="past the time to live"):
            network.send("A", "C", 1, "late", "A:app", ttl_s=100.0)
        with pytest.raises(OSError) as error:
            network.send("C", "A", 1, "no way back", "C:app")
        assert error.value.errno == errno.EHOSTUNREACH
        with pytest.raises(OSError) as error:
            network.send("A", "Z", 1, "nobody", "A:app")
        assert error.value.errno == errno.EHOSTUNREACH
    assert network.counters["expired"] == 1 and network.counters["unreachable"] == 2


def test_a_link_is_shared_by_what_crosses_it():
    """Two 1 MB messages on a 1 Mbit/s link: the second waits for the first (8 s more)."""
    clock, network, _ = network_on(ContactPlan([ContactWindow(0.0, 100.0, "A", "B", 1e6, 0.0)]), 0.0)
    with clock.participant():
        first = network.send("A", "B", 1, b"a" * 1_000_000, "x")
        second = network.send("A", "B", 1, b"b" * 1_000_000, "x")
        assert second.arrival_utc_s - first.arrival_utc_s == pytest.approx(size_of(b"b" * 1_000_000) * 8 / 1e6)
        with pytest.raises(OSError) as error:  # too big for what is left of the window
            network.send("A", "B", 1, b"c" * 12_000_000, "x")
        assert error.value.errno == errno.EHOSTUNREACH


def test_tampered_and_replayed_frames_are_dropped_and_counted():
    clock, network, arrivals = network_on(ContactPlan([ContactWindow(0.0, 100.0, "A", "B", 1e6, 0.0)]), 0.0)
    seen = []

    def adversary(frame):
        seen.append(frame)
        if len(seen) == 2:  # flip one bit of the second frame
            return SealedFrame(frame.header, bytes([frame.ciphertext[0] ^ 1]) + frame.ciphertext[1:])
        return frame

    network.tamper = adversary
    with clock.participant():
        network.start()
        network.send("A", "B", 1, "genuine", "x")
        network.send("A", "B", 1, "altered", "x")
        clock.sleep(5.0)
        network.tamper = None
        network.inject(0, seen[0], "B")  # the genuine frame, sent again
        clock.sleep(1.0)
        network.stop()
    assert [a[2] for a in arrivals] == ["genuine"]
    assert network.counters["tampered"] == 1 and network.counters["replayed"] == 1
    assert network.counters["delivered"] == 1


def test_kernels_talk_over_the_network(ring):
    """An app on TB01 sends to a port bound by an app on TB04, three hops away."""
    from tests.unit.kernel.harness import Signer, make_kernel
    import tempfile
    plan, t0 = ring
    clock = VirtualClock(t0)
    network = IslNetwork(plan, clock)
    signer = Signer(Path(tempfile.mkdtemp()))
    kernels = {sat: make_kernel(signer, satellite_id=sat, clock=clock) for sat in ("TB01", "TB04")}
    for sat, kernel in kernels.items():
        kernel.network = network
        network.attach(sat, kernel.deliver)
    for sat in ("TB02", "TB03"):
        network.attach(sat, lambda *a: None)
    receiver = signer.image(name="rx", capabilities={"ports": [5000]}, code="""
def main(sys, argv):
    port = sys.bind(5000)
    msg = sys.recv(port, timeout_s=600)
    sys.publish("test.out", [msg["data"], msg["sender"], msg["time_utc_s"]])
""")
    sender = signer.image(name="tx", capabilities={"isl_send": True}, code="""
def main(sys, argv):
    sys.sleep(30.0)
    receipt = sys.send("TB04", 5000, {"flood": True})
    sys.publish("test.out", [receipt["route"], receipt["arrival_utc_s"], sys.time()])
""")
    with clock.participant():
        for kernel in kernels.values():
            kernel.boot()
        network.start()
        got = kernels["TB04"].bus.subscribe("test.out", 10, lambda: None)
        sent = kernels["TB01"].bus.subscribe("test.out", 10, lambda: None)
        rx = kernels["TB04"].spawn(receiver)
        tx = kernels["TB01"].spawn(sender)
        assert kernels["TB01"].wait(tx, 100)["exit_code"] == 0
        assert kernels["TB04"].wait(rx, 100)["exit_code"] == 0
        route, planned, sent_at = kernels["TB01"].bus.take(sent)["data"]
        data, who, arrived = kernels["TB04"].bus.take(got)["data"]
        assert route == ["TB01", "TB02", "TB03", "TB04"] and data == {"flood": True}
        assert who.startswith("TB01:tx:") and arrived == pytest.approx(planned, abs=1e-6)
        network.stop()
        for kernel in kernels.values():
            kernel.shutdown()


def test_anti_replay_window_takes_frames_out_of_order_once():
    """Frames may arrive in another order than sealed (messages meeting on a link from two
    paths): within the 64-frame window each is taken once; a duplicate or one older than the
    window is a replay."""
    from orbitos.runtime.link_crypto import REPLAY_WINDOW, FrameRejected, MessageBinding, SatelliteIdentity, establish

    sealing, opening = establish(SatelliteIdentity("A"), SatelliteIdentity("B"), 7)
    frames = [sealing.seal(f"m{i}".encode(), MessageBinding("A", "B", i, 1)) for i in range(REPLAY_WINDOW + 10)]
    assert opening.open(frames[3]).payload == b"m3"
    assert opening.open(frames[1]).payload == b"m1"  # late, inside the window: taken
    with pytest.raises(FrameRejected) as again:
        opening.open(frames[1])
    assert again.value.reason == "replayed"
    assert opening.open(frames[REPLAY_WINDOW + 5]).payload == f"m{REPLAY_WINDOW + 5}".encode()
    with pytest.raises(FrameRejected, match="replay window"):
        opening.open(frames[2])  # now more than 64 behind the highest seen
    assert opening.open(frames[REPLAY_WINDOW]).payload == f"m{REPLAY_WINDOW}".encode()
