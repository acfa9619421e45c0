"""The device server and the TCP transport under bad input and failure: clear errors, no hang,
and one client's garbage never disturbs another."""
import errno
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest

from orbitos.drivers.transport import TcpTransport
from orbitos.sim_hw.device_server import DeviceServer
from orbitos.sim_hw.hardware import SatelliteHardware
from orbitos.sim_hw.profile import load_profile
from orbitos.sim_hw.wire import (FrameError, FrameTooLarge, decode_body, encode, read_frame)

ROOT = Path(__file__).resolve().parents[2]
PROFILE = ROOT / "examples" / "profiles" / "three-body.toml"
T0 = 1_780_272_000.0


@pytest.fixture(scope="module")
def server():
    hardware = SatelliteHardware(load_profile(PROFILE), "TB01", start_utc_s=T0)
    server = DeviceServer(hardware, port=0, max_frame_bytes=1 << 20, frame_timeout_s=0.5)
    host, port = server.start()
    yield server, f"tcp://{host}:{port}"
    server.close()


def raw_connection(endpoint):
    host, port = endpoint.removeprefix("tcp://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=5)
    return sock


def send_body(sock, body: bytes):
    sock.sendall(struct.pack(">I", len(body)) + body)
    return read_frame(sock)


def ping(sock, request_id=99):
    return send_body(sock, msgpack.packb({"v": 1, "id": request_id, "type": "ping"}))


@pytest.mark.parametrize("body, code", [
    (b"\xc1\xc1 not msgpack", "EPROTO"),
    (msgpack.packb([1, 2, 3]), "EPROTO"),
    (msgpack.packb({"v": 1, "type": "ping"}), "EPROTO"),
    (msgpack.packb({"v": 7, "id": 1, "type": "ping"}), "EPROTONOSUPPORT"),
    (msgpack.packb({"v": 1, "id": 1, "type": "reboot"}), "EPROTO"),
    (msgpack.packb({"v": 1, "id": 1, "type": "call", "device": "warp0", "op": "status", "t": T0}), "ENODEV"),
    (msgpack.packb({"v": 1, "id": 1, "type": "call", "device": "gpu0", "op": "melt", "t": T0}), "EINVAL"),
    (msgpack.packb({"v": 1, "id": 1, "type": "call", "device": "gpu0", "op": "alloc",
                    "args": {"nbytes": -1}, "t": T0}), "EINVAL"),
    (msgpack.packb({"v": 1, "id": 1, "type": "call", "device": "gpu0", "op": "status", "t": "noon"}), "EINVAL"),
    (msgpack.packb({"v": 1, "id": 1, "type": "call", "device": "gpu0", "op": "run", "t": T0,
                    "args": {"kernel": "matmul", "inputs": {"a": msgpack.ExtType(1, b"junk")}}}), "EPROTO"),
])
def test_bad_frames_get_an_error_answer_and_the_connection_lives_on(server, body, code):
    _, endpoint = server
    with raw_connection(endpoint) as sock:
        reply = send_body(sock, body)
        assert reply["ok"] is False and reply["error"]["code"] == code
        assert reply["error"]["errno"] == getattr(errno, code)
        assert reply["error"]["message"]
        assert ping(sock)["ok"] is True  # still in step


def test_oversized_frame_is_answered_then_the_connection_closed(server):
    srv, endpoint = server
    with raw_connection(endpoint) as sock:
        sock.sendall(struct.pack(">I", (1 << 20) + 1))
        reply = read_frame(sock)
        assert reply["error"]["code"] == "EMSGSIZE"
        assert sock.recv(1) == b""  # closed cleanly


def test_a_client_stalling_mid_frame_is_dropped_and_others_are_served(server):
    srv, endpoint = server
    stalled = raw_connection(endpoint)
    stalled.sendall(struct.pack(">I", 100) + b"only part")
    with raw_connection(endpoint) as healthy:
        assert ping(healthy)["ok"]
        time.sleep(0.8)  # past the server's 0.5 s frame timeout
        assert ping(healthy)["ok"]
    stalled.settimeout(5)
    assert stalled.recv(1) == b""
    stalled.close()


def test_many_clients_at_once_with_garbage_among_them(server):
    _, endpoint = server
    failures = []

    def good_client(k):
        transport = TcpTransport(endpoint)
        try:
            for i in range(20):
                a = np.full((8, 8), float(k), dtype=np.float32)
                out = transport.call("gpu0", "run", {"kernel": "matmul", "inputs": {"a": a, "b": a},
                                                     "params": {}, "precision": "fp32"}, T0 + i).value["output"]
                if not np.allclose(out, a @ a):
                    failures.append(k)
        except Exception as exc:  # collected and asserted below
            failures.append(repr(exc))
        finally:
            transport.close()

    def bad_client():
        for _ in range(20):
            with raw_connection(endpoint) as sock:
                send_body(sock, os.urandom(64))

    threads = [threading.Thread(target=good_client, args=(k,)) for k in range(4)]
    threads.append(threading.Thread(target=bad_client))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert failures == []


def test_transport_maps_device_errors_to_oserror_subclasses(server):
    _, endpoint = server
    transport = TcpTransport(endpoint)
    with pytest.raises(OSError) as error:
        transport.call("gpu0", "alloc", {"nbytes": 1 << 62}, T0)
    assert error.value.errno == errno.ENOMEM and "out of device memory" in str(error.value)
    with pytest.raises(OSError) as error:
        transport.call("nope0", "status", {}, T0)
    assert error.value.errno == errno.ENODEV
    assert transport.hello()["satellite"] == "TB01"
    transport.close()


def test_connection_refused_is_clear():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    transport = TcpTransport(f"tcp://127.0.0.1:{port}", connect_timeout_s=2)
    with pytest.raises(ConnectionRefusedError, match="cannot connect"):
        transport.call("gpu0", "status", {}, T0)
    with pytest.raises(ValueError, match="tcp://HOST:PORT"):
        TcpTransport("udp://somewhere")


@pytest.fixture
def server_process():
    process = subprocess.Popen([sys.executable, "-m", "orbitos.runtime.cli", "hw", "serve", str(PROFILE),
                                "--port", "0", "--start", "2026-06-01T00:00:00Z"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    line = process.stdout.readline()
    assert line.startswith("listening on "), process.stderr.read()
    yield process, "tcp://" + line.split()[2]
    if process.poll() is None:
        os.kill(process.pid, signal.SIGCONT)
        process.kill()
    process.wait(10)
    process.stdout.close()
    process.stderr.close()


def wait_until_stopped(pid, timeout_s=5.0):
    """Signals are delivered asynchronously: wait until the kernel shows the process stopped."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state in ("T", "t"):
            return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} did not stop")


@pytest.mark.slow
def test_a_hung_server_gives_timeout_and_a_killed_one_a_connection_error(server_process):
    process, endpoint = server_process
    transport = TcpTransport(endpoint, timeout_s=1.0)
    assert transport.call("eps0", "status", {}, T0).value["soc"] > 0
    os.kill(process.pid, signal.SIGSTOP)  # hung: the request is sent, no answer comes
    wait_until_stopped(process.pid)
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="no answer to eps0.status within 1 s"):
        transport.call("eps0", "status", {}, T0)
    assert time.monotonic() - started < 5
    # Killed in the middle of a big request: a clear connection error, not a hang.
    a = np.ones((2000, 2000), dtype=np.float64)
    errors = []

    def big_request():
        try:
            transport.call("gpu0", "run", {"kernel": "matmul", "inputs": {"a": a, "b": a},
                                           "params": {}, "precision": "fp32"}, T0)
        except OSError as exc:
            errors.append(exc)

    transport.timeout_s = 20.0
    thread = threading.Thread(target=big_request)
    thread.start()
    time.sleep(0.3)
    process.kill()
    thread.join(30)
    assert not thread.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], ConnectionError), errors
    with pytest.raises(ConnectionRefusedError):
        transport.call("eps0", "status", {}, T0)  # reconnecting finds nobody


def test_wire_arrays_round_trip_and_bad_frames_are_refused():
    arrays = {"f": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.array([True, False]),
              "u": np.arange(5, dtype=np.uint16), "empty": np.zeros((0, 3))}
    decoded = decode_body(encode({"x": arrays, "n": np.int64(7)})[4:])
    for key, value in arrays.items():
        assert decoded["x"][key].dtype == value.dtype and np.array_equal(decoded["x"][key], value)
    assert decoded["n"] == 7
    with pytest.raises(TypeError, match="cannot be sent"):
        encode({"s": np.array(["text"])})
    with pytest.raises(TypeError, match="cannot encode"):
        encode({"o": object()})
    with pytest.raises(FrameTooLarge):
        encode({"blob": b"x" * 2000}, max_frame_bytes=1000)
    bad_array = msgpack.packb({"a": msgpack.ExtType(1, msgpack.packb(["<f4", [10], b"\0" * 8]))})
    with pytest.raises(FrameError, match="malformed array"):
        decode_body(bad_array)
    with pytest.raises(FrameError, match="unknown msgpack extension"):
        decode_body(msgpack.packb({"a": msgpack.ExtType(9, b"")}))
