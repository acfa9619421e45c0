"""Benchmark of the remote (device server) transport on loopback, against a bare msgpack server.

Both servers run as subprocesses on 127.0.0.1, pinned to one core, the client to another. The baseline is the
least a msgpack request/reply over TCP can cost here: a server that reads a length-prefixed
msgpack frame, decodes it, and answers with a frame of the same size as the device server's
answer (an echo for small messages, a small acknowledgement after a 4 MiB upload, 4 MiB after a
small request). The ratio (device server time / baseline time) is the figure.

Figures (one JSON line each): `ping` (protocol only), `small_call` (eps0.status: the real
hardware path), `upload_4mib` (laser0.medium_deliver of a 4 MiB frame), `download_4mib`
(laser0.recv of a 4 MiB frame).

    python benchmarks/hil.py [--small N] [--large N]
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

import msgpack

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "examples" / "profiles" / "three-body.toml"
LENGTH = struct.Struct(">I")
FOUR_MIB = 4 * 1024 * 1024
T0 = 1_780_272_000.0


def recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = sock.recv(min(n - got, 1 << 20))
        if not chunk:
            raise ConnectionError("closed")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def serve_baseline() -> None:
    """The bare server: decode each frame, answer as the device server would in size."""
    listener = socket.create_server(("127.0.0.1", 0))
    print(f"listening on 127.0.0.1:{listener.getsockname()[1]}", flush=True)
    conn, _ = listener.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while True:
        try:
            (length,) = LENGTH.unpack(recv_exact(conn, 4))
        except ConnectionError:
            return
        message = msgpack.unpackb(recv_exact(conn, length), raw=False)
        shape = message.get("reply")
        if shape == "ack":
            reply = {"v": 1, "id": message["id"], "ok": True, "result": {"accepted": True}}
        elif shape == "big":
            reply = {"v": 1, "id": message["id"], "ok": True, "result": {"data": BIG_PAYLOAD}}
        else:
            reply = message
        body = msgpack.packb(reply, use_bin_type=True)
        conn.sendall(LENGTH.pack(len(body)) + body)


BIG_PAYLOAD = bytes(FOUR_MIB)


def cpu_plan() -> tuple[set[int], set[int]]:
    """(client CPUs, server CPUs): one core each when there are two or more, so both servers are
    measured under the same placement (a wake-up across cores costs differently than on one)."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return set(cpus), set(cpus)
    return {cpus[0]}, {cpus[1]}


def start(args: list[str], cpus: set[int]) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    os.sched_setaffinity(process.pid, cpus)
    line = process.stdout.readline()
    if not line.startswith("listening on "):
        process.kill()
        raise RuntimeError(f"server did not start: {line!r}")
    return process, line.split()[2]


def baseline_exchange(sock: socket.socket, message: dict) -> dict:
    body = msgpack.packb(message, use_bin_type=True)
    sock.sendall(LENGTH.pack(len(body)) + body)
    (length,) = LENGTH.unpack(recv_exact(sock, 4))
    return msgpack.unpackb(recv_exact(sock, length), raw=False)


def timed(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return times


def emit(figure: str, payload_bytes: int, device: list[float], baseline: list[float]) -> None:
    device_s = statistics.median(device)
    baseline_s = statistics.median(baseline)
    record = {"benchmark": "hil", "figure": figure, "payload_bytes": payload_bytes,
              "device_server_median_us": device_s * 1e6,
              "device_server_p99_us": sorted(device)[int(0.99 * (len(device) - 1))] * 1e6,
              "baseline": "bare msgpack request/reply over TCP, same sizes",
              "baseline_median_us": baseline_s * 1e6, "ratio": device_s / baseline_s,
              "samples": len(device)}
    if payload_bytes:
        record["device_server_mib_per_s"] = payload_bytes / device_s / 2**20
        record["baseline_mib_per_s"] = payload_bytes / baseline_s / 2**20
    print(json.dumps(record), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=3000, help="repeats of small requests")
    parser.add_argument("--large", type=int, default=40, help="repeats of 4 MiB requests")
    parser.add_argument("--serve-baseline", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_baseline:
        serve_baseline()
        return

    from orbitos.drivers.transport import TcpTransport

    client_cpus, server_cpus = cpu_plan()
    os.sched_setaffinity(0, client_cpus)
    device_process, device_address = start([sys.executable, "-m", "orbitos.runtime.cli", "hw", "serve",
                                            str(PROFILE), "--port", "0",
                                            "--start", "2026-06-01T00:00:00Z"], server_cpus)
    baseline_process, baseline_address = start([sys.executable, __file__, "--serve-baseline"],
                                               server_cpus)
    try:
        transport = TcpTransport(f"tcp://{device_address}")
        host, port = baseline_address.split(":")
        bare = socket.create_connection((host, int(port)))
        bare.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        ids = iter(range(1, 10**9))

        small = {"v": 1, "type": "ping"}
        for _ in range(200):  # warm up both
            transport._exchange(dict(small), "ping")
            baseline_exchange(bare, {"id": next(ids), **small})
        emit("ping", 0, timed(lambda: transport._exchange(dict(small), "ping"), args.small),
             timed(lambda: baseline_exchange(bare, {"id": next(ids), **small}), args.small))

        status_size = len(msgpack.packb(transport.call("eps0", "status", {}, T0).value))
        status_like = {"v": 1, "type": "call", "result": "x" * status_size}
        emit("small_call", 0, timed(lambda: transport.call("eps0", "status", {}, T0), args.small),
             timed(lambda: baseline_exchange(bare, {"id": next(ids), **status_like}), args.small))

        frame = bytes(FOUR_MIB)
        upload = timed(lambda: transport.call("laser0", "medium_deliver", {"data": frame}, T0), args.large)
        download = timed(lambda: transport.call("laser0", "recv", {}, T0), args.large)
        emit("upload_4mib", FOUR_MIB, upload,
             timed(lambda: baseline_exchange(bare, {"id": next(ids), "data": frame, "reply": "ack"}), args.large))
        emit("download_4mib", FOUR_MIB, download,
             timed(lambda: baseline_exchange(bare, {"id": next(ids), "reply": "big"}), args.large))
        transport.close()
        bare.close()
    finally:
        for process in (device_process, baseline_process):
            process.kill()
            process.wait(10)
            process.stdout.close()


if __name__ == "__main__":
    main()
