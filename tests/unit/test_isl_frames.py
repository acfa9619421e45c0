"""The ISL network's frames: sealed when they leave (a message in custody is not pushed out of
the replay window by frames that leave before it), bound to their origin, destination, message
id and port (an adversary re-injecting, re-targeting or editing frames reaches no wrong
satellite), delivery outcomes that come back later (another host's answer), and the lasers'
energy while they carry traffic."""
import dataclasses
import errno
import random
import struct
from concurrent.futures import Future
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from orbitos.runtime.isl_network import FRAME_OVERHEAD_BYTES, IslNetwork
from orbitos.runtime.link_crypto import (HEADER_BYTES, REPLAY_WINDOW, FrameRejected, MessageBinding, SatelliteIdentity,
                                 SealedFrame, establish)
from orbitos.sim_hw.clock import VirtualClock
from orbitos.sim_hw.contact_plan import ContactPlan, ContactWindow
from orbitos.sim_hw.device_ops import OpError
from orbitos.sim_hw.hardware import SatelliteHardware
from orbitos.sim_hw.profile import load_profile
from orbitos.sim_hw.track import SatelliteTrack
from orbitos.sim_hw.wire import encode

ROOT = Path(__file__).resolve().parents[2]
PROFILE = load_profile(ROOT / "examples" / "profiles" / "three-body.toml")


def recording_network(plan, t0=0.0):
    clock = VirtualClock(t0)
    network = IslNetwork(plan, clock)
    arrivals = []
    for node in sorted({w.source for w in plan.windows} | {w.target for w in plan.windows}):
        network.attach(node, lambda port, data, sender, node=node: arrivals.append((node, port, data, sender)))
    return clock, network, arrivals


# -- 1. sealed when it leaves ---------------------------------------------------------------------

def custody_plan():
    """A reaches B at once; D reaches B only from 200 s; B reaches C only from 500 s."""
    return ContactPlan([ContactWindow(0.0, 1000.0, "A", "B", 1e6, 0.01),
                        ContactWindow(200.0, 300.0, "D", "B", 1e6, 0.01),
                        ContactWindow(500.0, 1000.0, "B", "C", 1e6, 0.01)])


def test_a_message_in_custody_is_not_a_replay_when_later_frames_leave_before_it():
    """The failure seen before this fix: 70 messages from D are routed first (they leave B for
    C first); M from A reaches B at once and waits there for the B->C window. Sealed when its
    hop was scheduled (at B, t = 1 s) M held the link's first sequence number; the 70 frames
    sealed at B at 200 s overtook it and M arrived 70 behind the highest seen: a replay, with no
    adversary. Sealed at departure, M's number follows theirs."""
    clock, network, arrivals = recording_network(custody_plan())
    count = REPLAY_WINDOW + 6
    with clock.participant():
        network.start()
        receipts = [network.send("D", "C", 7, f"L{i}", "D:app") for i in range(count)]
        clock.sleep(1.0)
        m = network.send("A", "C", 7, "M", "A:app")
        assert m.route == ("A", "B", "C") and m.arrival_utc_s > max(r.arrival_utc_s for r in receipts)
        clock.sleep(700.0)
        network.stop()
    assert sorted(a[2] for a in arrivals if a[0] == "C") == sorted([f"L{i}" for i in range(count)] + ["M"])
    assert network.counters["replayed"] == 0 and network.counters["delivered"] == count + 1
    assert network.counters["hops"] == 2 * (count + 1)


def test_frames_leave_each_link_in_the_order_they_were_sealed():
    """The sequence numbers a link's receiver sees only grow: each hop is sealed at departure,
    and departures on one window are in time order."""
    clock, network, _ = recording_network(custody_plan())
    seen: dict[int, list[int]] = {}

    def watch(frame):
        _, _, session, sequence = struct.unpack(">16s16sIQ", frame.header[:44])
        seen.setdefault(session, []).append(sequence)
        return frame

    network.tamper = watch
    with clock.participant():
        network.start()
        for i in range(30):
            network.send("D", "C", 7, i, "D:app")
            network.send("A", "C", 7, i, "A:app")
            clock.sleep(3.0)
        clock.sleep(800.0)
        network.stop()
    assert network.counters["delivered"] == 60
    assert all(sequences == sorted(sequences) for sequences in seen.values()) and len(seen) == 3


# -- 2. bound to origin, destination, message id, port --------------------------------------------

def test_the_header_binds_the_message_and_a_changed_field_fails_authentication():
    sealing, opening = establish(SatelliteIdentity("A"), SatelliteIdentity("B"), 3)
    frame = sealing.seal(b"payload", MessageBinding("S1", "S9", 42, 5000))
    assert len(frame.header) == HEADER_BYTES and frame.size_bytes == HEADER_BYTES + len(b"payload") + 16
    opened = opening.open(frame)
    assert opened.binding == MessageBinding("S1", "S9", 42, 5000) and opened.payload == b"payload"
    fields = list(struct.unpack(">16s16sIQ16s16sQH", frame.header))
    for index, value in ((4, b"S2"), (5, b"S8"), (6, 43), (7, 5001), (3, 1)):
        edited = list(fields)
        edited[index] = value
        forged = SealedFrame(struct.pack(">16s16sIQ16s16sQH", *edited), frame.ciphertext)
        with pytest.raises(FrameRejected) as rejected:
            opening.open(forged)
        assert rejected.value.reason == "tampered"
    other_link, _ = establish(SatelliteIdentity("A"), SatelliteIdentity("C"), 3)
    with pytest.raises(FrameRejected, match="frame of link A->C on A->B"):
        opening.open(other_link.seal(b"x", MessageBinding("A", "C", 1, 1)))
    with pytest.raises(FrameRejected, match="malformed"):
        opening.open(SealedFrame(frame.header[:-1], frame.ciphertext))
    with pytest.raises(FrameRejected, match="not a sealed frame"):
        opening.open(b"raw bytes")


@pytest.mark.parametrize("kwargs, problem", [
    ({"origin": ""}, "origin"), ({"destination": "x" * 17}, "destination"),
    ({"message_id": -1}, "message id"), ({"message_id": 1 << 64}, "message id"),
    ({"port": 65536}, "port"), ({"port": "80"}, "port")])
def test_a_binding_that_does_not_fit_the_header_is_refused(kwargs, problem):
    fields = {"origin": "A", "destination": "B", "message_id": 1, "port": 1, **kwargs}
    with pytest.raises(ValueError, match=problem):
        MessageBinding(**fields)


def ring_plan():
    """Eight satellites in a ring, each linked both ways to its neighbours, plus two chords:
    routes of one to four hops, so frames are captured at relays as well as at the end."""
    names = [f"S{i}" for i in range(1, 9)]
    pairs = [(names[i], names[(i + 1) % 8]) for i in range(8)] + [("S1", "S5"), ("S3", "S7")]
    return ContactPlan([ContactWindow(0.0, 10_000.0, a, b, 1e7, 0.005)
                        for x, y in pairs for a, b in ((x, y), (y, x))])


def adversary_campaign(seed: int, messages: int, attacks: int) -> dict[str, int]:
    """Send `messages` genuine messages between random satellites (each says where it is for),
    capture every frame on the links (passing some on, swallowing others so that they stay
    fresh), then re-inject `attacks` captured frames: on their own link claiming another
    target, on another link, with a header bit flipped, with a header field rewritten, spliced
    with another frame's ciphertext. Returns the network's counters and the wrong deliveries."""
    plan = ring_plan()
    rng = random.Random(seed)
    clock, network, arrivals = recording_network(plan)
    names = sorted({w.source for w in plan.windows})
    captured: list[SealedFrame] = []

    def capture(frame):
        captured.append(frame)
        if rng.random() < 0.2:  # swallowed: the receiver never sees it, the capture stays fresh
            return SealedFrame(frame.header, b"")
        return frame

    network.tamper = capture
    with clock.participant():
        network.start()
        for i in range(messages):
            source, target = rng.sample(names, 2)
            port = rng.randrange(1, 6)
            network.send(source, target, port, {"to": target, "port": port, "n": i}, f"{source}:app")
            if i % 50 == 0:
                clock.sleep(1.0)
        clock.sleep(60.0)
        network.tamper = None
        genuine = len(arrivals)
        before = dict(network.counters)
        kinds = {"same link, other target": 0, "other link": 0, "header bit": 0, "field rewritten": 0,
                 "spliced": 0, "ciphertext bit": 0}
        for n in range(attacks):
            frame = rng.choice(captured)
            session = struct.unpack(">I", frame.header[32:36])[0]
            kind = rng.choice(sorted(kinds))
            kinds[kind] += 1
            window, target = session, None
            if kind == "same link, other target":  # the link's receiver included: a relay's frame as its own
                target = rng.choice(names)
            elif kind == "other link":
                window = rng.choice([i for i in range(len(plan.windows)) if i != session])
            elif kind == "header bit":
                bit = rng.randrange(HEADER_BYTES * 8)
                header = bytearray(frame.header)
                header[bit // 8] ^= 1 << bit % 8
                frame = SealedFrame(bytes(header), frame.ciphertext)
            elif kind == "field rewritten":
                fields = list(struct.unpack(">16s16sIQ16s16sQH", frame.header))
                field = rng.choice([4, 5, 7])
                fields[field] = rng.choice(names).encode() if field < 7 else rng.randrange(1, 6)
                frame = SealedFrame(struct.pack(">16s16sIQ16s16sQH", *fields), frame.ciphertext)
            elif kind == "spliced":
                frame = SealedFrame(frame.header, rng.choice(captured).ciphertext)
            else:
                flipped = bytearray(frame.ciphertext or b"\0")
                flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
                frame = SealedFrame(frame.header, bytes(flipped))
            network.inject(window, frame, target)
            if n % 100 == 0:
                clock.sleep(0.1)
        clock.sleep(1.0)
        network.stop()
    wrong = sum(1 for node, port, data, _ in arrivals if node != data["to"] or port != data["port"])
    twice = len(arrivals) - len({data["n"] for _, _, data, _ in arrivals})
    after = {key: network.counters[key] - before[key] for key in ("delivered", "tampered", "replayed", "faults")}
    return {**network.counters, "genuine_delivered": genuine, "wrong_satellite_or_port": wrong,
            "delivered_twice": twice, "captured": len(captured), "attacks": attacks,
            **{f"attack_{key}": value for key, value in after.items()}, **kinds}


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_an_adversary_on_the_links_reaches_no_wrong_satellite(seed):
    """3,000 re-injected frames (of 1,500 messages' captured frames, relays' included): none
    reaches a satellite or port it was not sent to, none is delivered twice, and each one is
    refused (tampered or replayed) or, a swallowed frame put back on its own last link,
    delivered where it was going."""
    result = adversary_campaign(seed=seed, messages=1500, attacks=3000)
    assert result["wrong_satellite_or_port"] == 0 and result["delivered_twice"] == 0
    assert result["attack_tampered"] + result["attack_replayed"] + result["attack_delivered"] == 3000
    assert result["faults"] == 0 and result["attack_tampered"] > 1500 and result["attack_replayed"] > 100
    assert result["captured"] > 1500 * 1.5  # relays' frames too
    assert all(result[kind] > 300 for kind in ("same link, other target", "other link", "header bit",
                                               "field rewritten", "spliced", "ciphertext bit"))


def test_an_authentic_frame_claimed_for_another_satellite_is_refused():
    """Fresh and authentic on its link, but claimed to be for another target, or a relay's frame
    offered to the relay as its own: tampered. (Opening it used its sequence number: put back
    where it belongs afterwards, it is a replay; an adversary who can do this can also drop it.)"""
    plan = ContactPlan([ContactWindow(0.0, 100.0, "A", "B", 1e6, 0.0),
                        ContactWindow(0.0, 100.0, "B", "C", 1e6, 0.0)])
    clock, network, arrivals = recording_network(plan)
    held = []
    network.tamper = lambda frame: held.append(frame) or SealedFrame(frame.header, b"")  # swallowed
    with clock.participant():
        network.start()
        for text in ("for B", "for C", "for B too"):
            network.send("A", text[4], 1, text, "A:app")  # "for C": its first hop, A->B, held back
        clock.sleep(1.0)
        network.tamper = None
        assert network.counters["tampered"] == 3 and len(held) == 3
        network.inject(0, held[1])  # for C, offered to B (the link's receiver) as its own
        network.inject(0, held[0], "C")  # for B, claimed for C
        clock.sleep(1.0)
        assert arrivals == [] and network.counters["tampered"] == 5
        network.inject(0, held[2])  # where it belongs: late, but genuine and fresh
        network.inject(0, held[0])  # its number was used by the refused claim above
        clock.sleep(1.0)
        network.stop()
    assert arrivals == [("B", 1, "for B too", "A:app")] and network.counters["replayed"] == 1


# -- 3. outcomes that come back later ---------------------------------------------------------------

def test_a_delivery_answered_later_is_counted_by_its_answer():
    """An endpoint on another host answers with a Future: True delivered, False refused, an
    exception (the host died) lost; `awaiting` counts answers not yet back."""
    clock = VirtualClock(0.0)
    network = IslNetwork(ContactPlan([ContactWindow(0.0, 100.0, "A", "B", 1e6, 0.0)]), clock)
    pending: list[Future] = []

    def remote(port, message, sender):
        pending.append(Future())
        return pending[-1]

    network.attach("A", lambda *a: None)
    network.attach("B", remote)
    with clock.participant():
        network.start()
        for i in range(4):
            network.send("A", "B", 9, i, "A:app")
        clock.sleep(1.0)
        assert len(pending) == 4 and network.counters["awaiting"] == 4 and network.counters["delivered"] == 0
        pending[0].set_result(True)
        pending[1].set_result(False)
        pending[2].set_exception(RuntimeError("the host actor died"))
        assert {k: network.counters[k] for k in ("delivered", "refused", "lost", "awaiting")} == \
            {"delivered": 1, "refused": 1, "lost": 1, "awaiting": 1}
        pending[3].set_result(True)
        network.stop()
    assert network.counters["delivered"] == 2 and network.counters["awaiting"] == 0


@pytest.mark.parametrize("port", [-1, 65536, "80", 1.0, True])
def test_a_port_that_fits_no_header_is_einval_before_anything_is_queued(port):
    clock, network, _ = recording_network(ContactPlan([ContactWindow(0.0, 100.0, "A", "B", 1e6, 0.0)]))
    with pytest.raises(OSError) as error:
        network.send("A", "B", port, "x", "A:app")
    assert error.value.errno == errno.EINVAL and "port" in str(error.value)
    assert network.counters["queued"] == 0 and network._link_free_at == {}


def test_an_endpoint_that_refuses_at_once_is_counted_refused():
    clock, network, _ = recording_network(ContactPlan([ContactWindow(0.0, 100.0, "A", "B", 1e6, 0.0)]))

    def refuse(port, message, sender):
        raise OSError(errno.ECONNREFUSED, f"nothing bound to port {port}")

    network.attach("B", refuse)
    with clock.participant():
        network.start()
        network.send("A", "B", 9, "x", "A:app")
        clock.sleep(1.0)
        network.stop()
    assert network.counters["refused"] == 1 and network.counters["delivered"] == 0


# -- 4. lasers draw while they carry traffic ------------------------------------------------------

def hardware_pair(profile=PROFILE, t0=0.0):
    return {name: SatelliteHardware(profile, name, SatelliteTrack.reference(name, t0)) for name in ("A", "B")}


def test_traffic_costs_active_minus_idle_laser_power_times_transmit_time():
    """40 messages of 100 kB over a 1 Mbit/s link: the sender's and the receiver's terminal each
    draw (power_w - idle_power_w) x the frames' transmit time more than twins without traffic."""
    window = ContactWindow(0.0, 3600.0, "A", "B", 1e6, 0.004)
    clock = VirtualClock(0.0)
    network = IslNetwork(ContactPlan([window]), clock)
    busy, quiet = hardware_pair(), hardware_pair()
    for name, hardware in busy.items():
        network.attach(name, lambda *a: None, hardware)
    message = b"\x5a" * 100_000
    count = 40
    with clock.participant():
        network.start()
        for _ in range(count):
            network.send("A", "B", 3, message, "A:app")
            clock.sleep(0.5)  # the link is busy 0.8 s per frame: they queue
        clock.sleep(60.0)
        network.stop()
    assert network.counters["delivered"] == count
    frame_bytes = len(encode({"sender": "A:app", "data": message})) + FRAME_OVERHEAD_BYTES
    transmit_s = count * frame_bytes * 8 / window.rate_bps
    laser = PROFILE.laser
    expected_wh = (laser.power_w - laser.idle_power_w) * transmit_s / 3600.0
    end = clock.now() + 10.0
    for name in ("A", "B"):
        for hardware in (busy[name], quiet[name]):
            hardware.power.advance_to(end)
        extra_wh = busy[name].power.ledger.consumed_wh - quiet[name].power.ledger.consumed_wh
        assert extra_wh == pytest.approx(expected_wh, rel=1e-6), name
        assert busy[name].power.loads["laser0"] == laser.idle_power_w  # back at rest
    assert expected_wh == pytest.approx(35.0 * 32.0 / 3600.0, rel=1e-2)  # ~0.31 Wh: 32 s at 35 W


def test_a_terminal_draws_once_for_overlapping_traffic_and_separately_per_peer():
    hardware = hardware_pair()["A"]
    laser = PROFILE.laser
    assert hardware.laser_active("B", 10.0, 20.0) == "laser0"
    assert hardware.laser_active("B", 15.0, 25.0) == "laser0"  # overlaps: 5 s more, not 10
    assert hardware.laser_active("C", 12.0, 22.0) == "laser1"  # another peer, at the same time
    quiet = hardware_pair()["A"]
    for h in (hardware, quiet):
        h.power.advance_to(100.0)
    extra_wh = hardware.power.ledger.consumed_wh - quiet.power.ledger.consumed_wh
    assert extra_wh == pytest.approx((laser.power_w - laser.idle_power_w) * (15.0 + 10.0) / 3600.0, rel=1e-9)


def test_laser_active_refuses_bad_input_and_a_satellite_without_terminals():
    hardware = hardware_pair()["A"]
    for peer, start, end in (("", 0.0, 1.0), (None, 0.0, 1.0), ("B", 2.0, 1.0), ("B", float("nan"), 1.0),
                             ("B", 0.0, float("inf"))):
        with pytest.raises(OpError) as error:
            hardware.laser_active(peer, start, end)
        assert error.value.code == "EINVAL"
    bare = dataclasses.replace(PROFILE, laser=dataclasses.replace(PROFILE.laser, terminals=0))
    with pytest.raises(OpError) as error:
        SatelliteHardware(bare, "A", SatelliteTrack.reference("A", 0.0)).laser_active("B", 0.0, 1.0)
    assert error.value.code == "ENODEV"


def test_a_satellite_without_terminals_still_passes_traffic_and_the_fault_is_counted():
    bare = dataclasses.replace(PROFILE, laser=dataclasses.replace(PROFILE.laser, terminals=0))
    clock = VirtualClock(0.0)
    network = IslNetwork(ContactPlan([ContactWindow(0.0, 100.0, "A", "B", 1e6, 0.0)]), clock)
    network.attach("A", lambda *a: None, SatelliteHardware(bare, "A", SatelliteTrack.reference("A", 0.0)))
    network.attach("B", lambda *a: None)  # hosted elsewhere: nobody here charges its laser
    with clock.participant():
        network.start()
        network.send("A", "B", 1, "x", "A:app")
        clock.sleep(1.0)
        network.stop()
    assert network.counters["delivered"] == 1 and network.counters["faults"] == 1
    assert network.counters["laser_uncharged"] == 1


# -- properties of one link direction ---------------------------------------------------------------

_SEALING, _OPENING = establish(SatelliteIdentity("P"), SatelliteIdentity("Q"), 9)


@settings(max_examples=300, deadline=None)
@given(payload=st.binary(max_size=200), origin=st.sampled_from(["P", "X1", "TB01"]),
       destination=st.sampled_from(["Q", "Y2", "TB12"]), message_id=st.integers(0, 2**64 - 1),
       port=st.integers(0, 65535), bit=st.integers(0, (HEADER_BYTES + 216) * 8 - 1))
def test_any_one_bit_changed_anywhere_in_a_frame_is_refused_as_tampered(payload, origin, destination,
                                                                         message_id, port, bit):
    frame = _SEALING.seal(payload, MessageBinding(origin, destination, message_id, port))
    whole = bytearray(frame.header + frame.ciphertext)
    bit %= len(whole) * 8
    whole[bit // 8] ^= 1 << bit % 8
    forged = SealedFrame(bytes(whole[:HEADER_BYTES]), bytes(whole[HEADER_BYTES:]))
    with pytest.raises(FrameRejected) as rejected:
        _OPENING.open(forged)
    assert rejected.value.reason == "tampered"
    opened = _OPENING.open(frame)  # the genuine one still opens, once, with what was bound
    assert opened.binding == MessageBinding(origin, destination, message_id, port) and opened.payload == payload
