"""The shared decoder's budget: a frame may not create more containers (arrays, maps) and numpy
arrays than max(65,536, body bytes / 64), nor announce an array or map of more than 1 M entries.
Before this bound a 16 MiB frame of 16 M empty maps became 16 M dicts (1.25 GB of RSS)."""
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import msgpack
import numpy as np
import pytest

from orbitos.sim_hw.wire import (MAX_CONTAINER_LEN, MIN_CONTAINER_BUDGET, FrameError, container_budget, decode_body, encode,
                         unpack_length)

ROOT = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024


def body_of(message):
    frame = encode(message)
    assert unpack_length(frame[:4]) == len(frame) - 4
    return frame[4:]


def test_legitimate_frames_with_many_small_containers_still_decode():
    message = {"v": 1, "id": 1, "type": "call",
               "args": {"items": [{"k": i, "tags": [i, i + 1]} for i in range(10_000)],
                        "arrays": [np.arange(4, dtype=np.float32) + i for i in range(100)]}}
    decoded = decode_body(body_of(message))
    assert decoded["args"]["items"][9_999] == {"k": 9_999, "tags": [9_999, 10_000]}
    assert len(decoded["args"]["arrays"]) == 100
    assert np.array_equal(decoded["args"]["arrays"][99], np.arange(4, dtype=np.float32) + 99)
    big = {"data": np.zeros(8 * MIB, dtype=np.uint8), "list": list(range(100_000))}
    assert decode_body(body_of(big))["data"].nbytes == 8 * MIB


def test_the_budget_counts_empty_containers_and_arrays():
    budget = container_budget(0)
    assert budget == MIN_CONTAINER_BUDGET
    fits = {"a": [{} for _ in range(budget - 2)]}  # the outer map and the list count too
    assert len(decode_body(msgpack.packb(fits))["a"]) == budget - 2
    for over in ({"a": [{} for _ in range(budget)]}, {"a": [[] for _ in range(budget)]}):
        with pytest.raises(FrameError, match="containers and arrays"):
            decode_body(msgpack.packb(over))
    arrays = {"a": [np.zeros(1, np.uint8) for _ in range(budget)]}
    with pytest.raises(FrameError, match="containers and arrays"):
        decode_body(body_of(arrays))


def test_an_array_or_map_announcing_more_than_the_limit_is_a_frame_error():
    n = MAX_CONTAINER_LEN + 1
    for body in (b"\x81\xa1a\xdd" + struct.pack(">I", n) + b"\x00" * n,
                 b"\x81\xa1a\xdf" + struct.pack(">I", n) + b"\x00\x00" * n):
        with pytest.raises(FrameError):
            decode_body(body)


HOSTILE = textwrap.dedent("""
    import resource, struct, sys
    from orbitos.sim_hw.wire import FrameError, decode_body
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # the frame itself counts
    n = 16 << 20
    kind = sys.argv[1]
    if kind == "one_array":  # the attack: one array32 of 16 M empty maps
        body = b"\\xdd" + struct.pack(">I", n) + b"\\x80" * n
    else:  # 16 arrays of 1 M empty maps in one map: each under the per-array limit
        chunk = 1 << 20
        body = b"\\xde" + struct.pack(">H", 16) + b"".join(
            b"\\xa1" + bytes([65 + i]) + b"\\xdd" + struct.pack(">I", chunk) + b"\\x80" * chunk
            for i in range(16))
    try:
        decode_body(body)
        outcome = "decoded"
    except FrameError:
        outcome = "FrameError"
    growth_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    print(outcome, growth_kib)
""")


@pytest.mark.parametrize("kind", ["one_array", "many_arrays"])
def test_a_hostile_16_mib_frame_is_refused_without_growing_memory(kind):
    """Measured in a fresh process (ru_maxrss is a high-water mark): the old decoder grew by
    ~1.2 GB for either frame; now a FrameError, with less than 100 MB of growth."""
    result = subprocess.run([sys.executable, "-c", HOSTILE, kind], cwd=ROOT, capture_output=True,
                            text=True, timeout=120, env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert result.returncode == 0, result.stderr
    outcome, growth_kib = result.stdout.split()
    print(f"{kind}: {outcome}, peak RSS growth {int(growth_kib) / 1024:.1f} MB")
    assert outcome == "FrameError"
    assert int(growth_kib) < 100 * 1024


def test_what_encode_accepts_decode_accepts():
    """The kernel and the ISL decode frames they encoded themselves: encode refuses what the
    decoder would, so that a sender learns it (a ValueError) rather than a receiver failing."""
    fine = {"m": [[i, i] for i in range(60_000)]}  # 60,002 containers in ~420 KB: in budget
    assert len(decode_body(encode(fine)[4:])["m"]) == 60_000
    for bad in ({"m": [[i] for i in range(200_000)]},  # 200,002 containers in ~600 KB
                {"m": [np.zeros(1, np.uint8) for _ in range(100_000)]},
                {"m": list(range(MAX_CONTAINER_LEN + 1))}):
        with pytest.raises(FrameError):
            encode(bad)
    assert decode_body(encode({"m": list(range(MAX_CONTAINER_LEN))})[4:])["m"][-1] == MAX_CONTAINER_LEN - 1
