"""Garbled frames against a real device server over TCP: every bit of the length prefix and of the
msgpack header of valid frames flipped in turn, then random flips anywhere (hypothesis). Each
frame gets answers that are valid frames and then a clean close (never a hang, never a garbled
answer), and a healthy client is served after every one. The counts are printed (-s) for
docs/reliability.md (the device server)."""
import socket
import time
from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orbitos.sim_hw.device_server import DeviceServer
from orbitos.sim_hw.hardware import SatelliteHardware
from orbitos.sim_hw.profile import load_profile
from orbitos.sim_hw.wire import FrameError, encode, read_frame

from tests.unit.test_device_server_attacks import PROFILE_PATH, T0

HEADER_BYTES = 16  # flipped after the 4-byte length: the map header, "v", "id", "type"...
MAX_FRAME_BYTES = 1 << 20


def valid_messages(t):
    """One of each kind of request a driver sends, stamped at the hardware's time t."""
    a = np.arange(16, dtype=np.float32).reshape(4, 4)

    def call(request_id, device, op, args):
        return {"v": 1, "id": request_id, "type": "call", "device": device, "op": op, "args": args, "t": t}

    return [
        {"v": 1, "id": 1, "type": "ping"},
        {"v": 1, "id": 2, "type": "hello"},
        call(3, "eps0", "status", {}),
        call(4, "gpu0", "run", {"kernel": "matmul", "inputs": {"a": a, "b": a}}),
        call(5, "gpu0", "alloc", {"nbytes": 4096}),
        call(6, "storage0", "read_block", {"block": 3}),
        call(7, "laser0", "stats", {}),
        call(8, "imager0", "capture", {"pixels": 8}),
        call(9, "fpga0", "info", {}),
        call(10, "eps0", "set_load", {"name": "heater", "power_w": 1.5}),
    ]


class Campaign:
    """A server, a healthy client, and the outcome of each garbled frame."""

    def __init__(self):
        self.hardware = SatelliteHardware(load_profile(PROFILE_PATH), "TB01", start_utc_s=T0)
        self.server = DeviceServer(self.hardware, port=0, max_frame_bytes=MAX_FRAME_BYTES,
                                   frame_timeout_s=2.0)
        self.host, self.port = self.server.start()
        self.healthy = socket.create_connection((self.host, self.port), timeout=5)
        self.outcomes = Counter()
        self.frames = 0

    def now(self):
        self.healthy.sendall(encode({"v": 1, "id": 99, "type": "hello"}))
        reply = read_frame(self.healthy)
        assert reply["ok"] and reply["id"] == 99  # the server keeps serving
        return reply["result"]["now_utc_s"]

    def frames_now(self):
        return [encode(m) for m in valid_messages(self.now())]

    def send(self, data, region):
        """Send one garbled frame on its own connection, half-close, read until the server
        closes. Records the outcome; fails on a hang or a garbled answer."""
        self.frames += 1
        with socket.create_connection((self.host, self.port), timeout=5) as sock:
            try:
                sock.sendall(data)
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # the server answered and closed before the whole frame was sent
            answers, end = [], None
            started = time.monotonic()
            while end is None:
                try:
                    answer = read_frame(sock, MAX_FRAME_BYTES)
                except socket.timeout:
                    pytest.fail(f"no answer and no close within 5 s for {data[:40]!r}")
                except ConnectionResetError:
                    end = "reset"
                    break
                except FrameError as exc:
                    pytest.fail(f"garbled answer ({exc}) to {data[:40]!r}")
                if answer is None:
                    end = "close"
                else:
                    assert answer["v"] == 1 and answer["ok"] in (True, False), answer
                    if answer["ok"] is False:  # a bug caught by the server's last resort is a failure
                        assert "internal error" not in answer["error"]["message"], answer
                    answers.append(answer)
            assert time.monotonic() - started < 5.0
        first = answers[0] if answers else None
        if first is None:
            kind = f"no answer, {end}"
        elif first["ok"]:
            kind = "ok answer (the flip left a valid request)"
        else:
            kind = f"error answer {first['error']['code']}"
        self.outcomes[(region, kind)] += 1
        self.now()  # a healthy client is served after every garbled frame

    def close(self):
        self.healthy.close()
        self.server.close()

    def report(self, title):
        lines = [f"[devserver] {title}: {self.frames} frames"]
        for (region, kind), count in sorted(self.outcomes.items()):
            lines.append(f"  {region:<8} {kind:<45} {count}")
        lines.append(f"  server counters: {self.server.counters}")
        return "\n".join(lines)


def flip(frame, bit):
    data = bytearray(frame)
    data[bit // 8] ^= 1 << (bit % 8)
    return bytes(data)


def flip_every_bit(capsys, title, whole_frame):
    campaign = Campaign()
    try:
        count = len(campaign.frames_now())
        for index in range(count):
            bits = 8 * len(campaign.frames_now()[index]) if whole_frame else 8 * (4 + HEADER_BYTES)
            for bit in range(bits):
                frame = campaign.frames_now()[index]
                region = "length" if bit < 32 else ("header" if bit < 8 * (4 + HEADER_BYTES) else "body")
                campaign.send(flip(frame, bit), region)
        with capsys.disabled():
            print("\n" + campaign.report(title))
        # Every flip of the top 12 length bits announces more than the 1 MiB limit: EMSGSIZE.
        assert campaign.outcomes[("length", "error answer EMSGSIZE")] == count * 12
        return campaign.frames
    finally:
        campaign.close()


def test_every_bit_of_the_length_and_header_of_valid_frames_flipped(capsys):
    assert flip_every_bit(capsys, "exhaustive flips of length and header bits", False) == 10 * 160


@pytest.mark.slow
def test_every_bit_of_valid_frames_flipped(capsys):
    assert flip_every_bit(capsys, "exhaustive flips of every bit (slow)", True) > 6000


def campaign_of_random_flips(examples, capsys, title):
    campaign = Campaign()

    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(index=st.integers(0, 9), bits=st.lists(st.integers(0, 10 ** 6), min_size=1, max_size=3),
           cut=st.integers(0, 10 ** 6), truncate=st.booleans())
    def one(index, bits, cut, truncate):
        frame = campaign.frames_now()[index]
        data = frame
        for bit in bits:
            data = flip(data, bit % (8 * len(data)))
        region = "anywhere"
        if truncate:
            data = data[:cut % len(data)]
            region = "cut"
        campaign.send(data, region)

    try:
        one()
        with capsys.disabled():
            print("\n" + campaign.report(title))
        assert campaign.frames >= examples
    finally:
        campaign.close()


def test_random_bit_flips_and_cuts_of_valid_frames(capsys):
    campaign_of_random_flips(400, capsys, "hypothesis: 1-3 random flips anywhere, or a cut")


@pytest.mark.slow
def test_random_bit_flips_and_cuts_of_valid_frames_long_campaign(capsys):
    campaign_of_random_flips(4000, capsys, "hypothesis (slow): 1-3 random flips anywhere, or a cut")
