"""Property-based fuzz of the whole syscall surface (hypothesis), from inside real app processes
on a real kernel.

Hypothesis draws batches of calls to every `Sys` method; values are recipes that the fuzzing
app turns into hostile objects of its own classes (str, int, float, bytes, list and dict
subclasses whose `__eq__`, `__hash__`, `__index__`, `__str__`, `__iter__`... lie or raise, an
object claiming to be an int through `__class__`), lone surrogates, NUL, NaN, infinities, huge
integers, deep and cyclic structures, object arrays, wrong types, and also sensible values (its
own descriptors, device handles, paths and topics it may use) so that calls get deep into the
kernel. A victim app holds files, a subscription, a port, device memory and an FPGA slot
meanwhile.

Checked after every call (by the app, which calls the test's `invariants`): only an OSError with
a real errno escapes, never EIO "internal error"; the kernel runs; no KERNEL_FAULT event; the
victim's process, state, descriptors, subscription and queue, port, device memory, FPGA slot
and file index entries are unchanged; no process is a zombie (alive without its thread, or
whose thread is gone without having ended completely: descriptors, device memory or loaded
code left). After every batch of 50, the victim's file contents too; at the end, every process
but the victim has ended completely.

The quick fuzz (default run) makes 5,000 calls; the slow one 100,000 (eight kernels of 12,500).
"""
import collections
import errno
import hashlib
import itertools
import random
import sys as python_sys
import threading
import time
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from orbitos.kernel.api import SYSCALLS
from orbitos.kernel.kernel import KernelConfig
from tests.unit.kernel.harness import make_kernel

CALLS_PER_BATCH = 50
ARGUMENT_NAMES = ["path", "mode", "nonblock", "fd", "size", "data", "op", "timeout_s", "depth", "pid",
                  "seconds", "code", "image", "argv", "topic", "message", "pattern", "event", "severity",
                  "satellite", "port", "task", "source", "target", "nbytes", "handle", "kernel", "inputs",
                  "params", "block", "pixels", "slot", "bitstream", "manifest", "peer", "x", "message", "self"]
PATHS = ["/", "/dev", "/dev/gpu0", "/dev/fpga0", "/dev/laser0", "/dev/imager0", "/dev/storage0", "/dev/eps0",
         "/dev/nothing0", "/data", "/data/fuzz", "/data/fuzz/a", "/data/fuzz/b.txt", "/data/fuzz/dir/x",
         "/data/fuzz/child.img", "/apps/fuzz", "/apps/fuzz/notes", "/apps/victim/state.txt",
         "/data/victim/keep.txt", "/images", "/etc/installed.json", "relative", "/data/fuzz/../x",
         "/data/fuzz/\udc80", "/data/fuzz/a\x00b", "/data/fuzz/\u202e", "/data/fuzz/" + "n" * 300,
         "/data/fuzz/\U0001F6F0" * 70, "//data//fuzz//a//"]
TOPICS = ["fuzz.a", "fuzz.*", "fuzz", "victim.x", "victim.*", "hk.*", "events.*", "*", "test.out", "a..b",
          "bad topic", "fuzz.a\n", "fuzz.\udc80", "x" * 200]
OPS = ["alloc", "free", "run", "status", "info", "probe", "load", "unload", "point", "release", "send",
       "recv", "stats", "capture", "read_block", "write_block", "flush", "inject_bit_flip", "set_load",
       "medium_take", "medium_deliver", "melt", ""]
WORDS = ["r", "w", "a", "x", "info", "debug", "warning", "critical", "bogus", "TB01", "TB02", "EVENT_ID",
         "bad id!", "ndi", "fft", "fp32", "int8", "", "\udc80", "\x00", "a" * 300]

INTERESTING = [None, True, False, 0, 1, 3, 4, 5, 100, 101, -1, 4000, 4001, 65535, 65536, 2 ** 63, 2 ** 64,
               10 ** 30, -10 ** 30, 10 ** 5000, 0.0, -0.0, 0.001, 0.5, 1.0, 3.0, 1e9, 1e308, float("inf"),
               float("-inf"), float("nan"), 5e-324, "", b"", b"\x00" * 8]
TEXT = "aZ09._-/* \x00\x1b\x7f\x85\u202e\udc80\udfff\U0001F6F0\u00e9"
SPECIALS = [("victim_pid",), ("victim_handle",), ("impostor",), ("loud",), ("obj",), ("cycle",), ("array", "f4"),
            ("array", "O"), ("array", "c16"), ("deep", 40), ("big", 2_000_000), ("image",), ("bytearray",),
            ("memoryview",), ("npint",)]
LYING = {str: "lstr", int: "lint", float: "lfloat", bytes: "lbytes"}


def literal(rng):
    """An interesting or random None, bool, int, float, str or bytes."""
    kind = rng.randrange(9)
    if kind == 0:
        return rng.choice(INTERESTING)
    if kind == 1:
        return rng.randint(-3, 5000)
    if kind == 2:
        return rng.randint(-2 ** 70, 2 ** 70)
    if kind == 3:
        return rng.choice([rng.uniform(-10, 10), rng.expovariate(1e-6), -rng.expovariate(1.0)])
    if kind == 4:
        return "".join(rng.choice(TEXT) for _ in range(rng.randrange(12)))
    if kind == 5:
        return rng.randbytes(rng.randrange(32))
    return rng.choice(PATHS + TOPICS + OPS + WORDS)


def recipe(rng, depth=2):
    """A value as a recipe: ("v", literal), a lying subclass of a literal's type, a descriptor or
    handle the app holds, a special object, or a container (plain or lying) of recipes."""
    roll = rng.random()
    if depth and roll < 0.15:
        tag = rng.choice(["list", "tuple", "llist", "dict", "ldict"])
        if tag in ("dict", "ldict"):
            return (tag, [(recipe(rng, 0), recipe(rng, depth - 1)) for _ in range(rng.randrange(4))])
        return (tag, [recipe(rng, depth - 1) for _ in range(rng.randrange(4))])
    if roll < 0.55:
        return ("v", literal(rng))
    if roll < 0.75:
        value = literal(rng)
        tag = LYING.get(type(value))
        return (tag, value) if tag and (tag != "lfloat" or value == value) else ("v", value)
    if roll < 0.88:
        return (rng.choice(["fd", "fd", "handle"]), rng.randrange(8))
    return rng.choice(SPECIALS)


def like(rng, values):
    """A sensible value, sometimes wrapped in a lying subclass of its type, sometimes anything."""
    value = rng.choice(values)
    roll = rng.random()
    if roll < 0.65:
        return value if type(value) is tuple else ("v", value)
    if roll < 0.85 and type(value) in LYING:
        return (LYING[type(value)], value)
    return recipe(rng)


GOOD_PATHS = ["/data/fuzz/a", "/data/fuzz/b.txt", "/data/fuzz/dir", "/data/fuzz/dir/x", "/apps/fuzz/notes",
              "/dev/gpu0", "/dev/laser0", "/dev/imager0", "/dev/fpga0", "/dev/storage0", "/data/fuzz",
              "/apps/victim/state.txt", "/data/victim/keep.txt", "/data/fuzz/\udc80", "/data/fuzz/a\x00"]
FDS = [("fd", k) for k in range(8)]
MESSAGES = [("dict", [(("v", "n"), ("v", 1)), (("v", "b"), ("lbytes", b"xy"))]), ("v", "text"), ("v", 2 ** 64),
            ("list", [("array", "f4"), ("lstr", "s")]), ("v", b"x" * 2_000_000), ("cycle",), ("deep", 40)]
FPGA_SHA = hashlib.sha256(b"\x5a" * 1000).hexdigest()
ARRAYS = ("dict", [(("v", "a"), ("array", "f4")), (("v", "b"), ("array", "f4"))])
IOCTLS = {"alloc": lambda rng: {"nbytes": like(rng, [1, 100, 4096, 1 << 19, 1 << 21, 0, -1])},
          "free": lambda rng: {"handle": like(rng, [("handle", 0), ("handle", 1), ("victim_handle",), 1, 2])},
          "run": lambda rng: {"kernel": like(rng, ["ndi", "threshold", "fft"]), "inputs": like(rng, [ARRAYS])},
          "status": lambda rng: {}, "info": lambda rng: {},
          "unload": lambda rng: {"slot": like(rng, [0, 1, 2, 64, -1])},
          "load": lambda rng: {"slot": like(rng, [0, 1]), "bitstream": like(rng, [b"\x5a" * 1000]),
                               "manifest": like(rng, [("dict", [(("v", "name"), ("v", "x")), (("v", "kernel"), ("v", "ndi")),
                                                                (("v", "size_bytes"), ("v", 1000)),
                                                                (("v", "sha256"), ("v", FPGA_SHA))])])},
          "capture": lambda rng: {"pixels": like(rng, [16, 0, 5000])},
          "point": lambda rng: {"peer": like(rng, ["TB02", "TB01", ""])},
          "send": lambda rng: {"data": like(rng, [b"frame", b""])},
          "set_load": lambda rng: {"name": like(rng, ["x"]), "power_w": like(rng, [1.0, -1.0])}}
DEVICE_OF = {"alloc": "gpu0", "free": "gpu0", "run": "gpu0", "status": "imager0", "info": "laser0",
             "unload": "fpga0", "load": "fpga0", "capture": "imager0", "point": "laser0", "send": "laser0",
             "set_load": "gpu0"}
DEVICES = sorted(set(DEVICE_OF.values()))
SENSIBLE = {
    "open": lambda rng: ([like(rng, GOOD_PATHS), like(rng, ["r", "w", "a"])], {}),
    "stat": lambda rng: ([like(rng, GOOD_PATHS)], {}),
    "listdir": lambda rng: ([like(rng, GOOD_PATHS + ["/dev", "/"])], {}),
    "mkdir": lambda rng: ([like(rng, GOOD_PATHS)], {}),
    "unlink": lambda rng: ([like(rng, GOOD_PATHS)], {}),
    "rename": lambda rng: ([like(rng, GOOD_PATHS), like(rng, GOOD_PATHS)], {}),
    "close": lambda rng: ([like(rng, FDS)], {}),
    "fsync": lambda rng: ([like(rng, FDS)], {}),
    "read": lambda rng: ([like(rng, FDS + [("dev", d) for d in DEVICES]), like(rng, [-1, 0, 5, 10 ** 6])], {}),
    "write": lambda rng: ([like(rng, FDS + [("dev", "laser0")]), like(rng, [b"hello", b"x" * 5000, b"", bytes(70000)])], {}),
    "recv": lambda rng: ([like(rng, FDS), like(rng, [0, 0.0, 0.5, 2])], {}),
    "ioctl": lambda rng: (lambda op: ([like(rng, [("dev", DEVICE_OF[op])] * 3 + FDS), like(rng, [op])],
                                      IOCTLS[op](rng)))(rng.choice(sorted(IOCTLS))),
    "publish": lambda rng: ([like(rng, TOPICS), like(rng, MESSAGES)], {}),
    "subscribe": lambda rng: ([like(rng, ["fuzz.*", "fuzz.a", "hk.*", "victim.*"]), like(rng, [1, 2, 64, 0, 20000])], {}),
    "bind": lambda rng: ([like(rng, [4000, 4001, 0, 1, 65536])], {}),
    "send": lambda rng: ([like(rng, ["TB01", "TB02"]), like(rng, [4000, 4001, 0, 7]), like(rng, MESSAGES)], {}),
    "log": lambda rng: ([like(rng, ["FUZZ_EVENT", "bad id!"]), like(rng, ["info", "critical", "bogus"])],
                        {"message": like(rng, ["hello", "\udc80"]), "count": like(rng, [1, 2 ** 70])}),
    "sleep": lambda rng: ([like(rng, [0.0, 0.01, 1.0, -1.0, 1e9])], {}),
    "wait": lambda rng: ([like(rng, [("victim_pid",), 100, 101, 102, 103, 10 ** 30]), like(rng, [0.0, 0.5, 5.0])], {}),
    "kill": lambda rng: ([like(rng, [("victim_pid",), 100, 102, 10 ** 30])], {}),
    "spawn": lambda rng: ([like(rng, ["/data/fuzz/child.img", "/data/fuzz/a", ("image",)]),
                           like(rng, [("list", [("v", "a")]), ("v", [])])], {}),
    "submit": lambda rng: ([like(rng, MESSAGES)], {}),
    "exit": lambda rng: ([like(rng, [0, 3, 256, 10 ** 30])], {}),
}
for _name in ("getpid", "ps", "time", "monotonic", "heartbeat", "power_status"):
    SENSIBLE[_name] = lambda rng: ([], {})


HOSTILE_TAGS = {"lstr", "lint", "lfloat", "lbytes", "llist", "ldict", "impostor", "loud", "obj", "cycle", "array",
                "deep", "big"}


def hostile(recipe_value):
    """Whether a recipe holds a lying subclass or a foreign object (cycle, object array...)."""
    if type(recipe_value) is list:
        return any(map(hostile, recipe_value))
    if type(recipe_value) is not tuple or not recipe_value:
        return False
    tag = recipe_value[0]
    if type(tag) is not str:  # a (key, value) pair of a map
        return any(map(hostile, recipe_value))
    if tag == "v":
        return False
    return (tag in HOSTILE_TAGS and recipe_value != ("array", "f4")) or any(map(hostile, recipe_value[1:]))


def expand(name, sensible, seed):
    """The call (name, args, kwargs) of recipes that a drawn (name, sensible, seed) stands for."""
    rng = random.Random(seed)
    if sensible:
        args, kwargs = SENSIBLE[name](rng)
    else:
        args = [recipe(rng) for _ in range(rng.randrange(4))]
        kwargs = {rng.choice(["", "", "", "~"]) + rng.choice(ARGUMENT_NAMES): recipe(rng)
                  for _ in range(rng.randrange(3))}  # "~name": a keyword named by a lying str
    return name, args, kwargs


# Hypothesis draws one integer per call: which syscall (every one as likely as any other, exit a
# little less: it ends the process), close to a correct call or anything (2 to 1), and the seed
# of its values. One draw per call keeps 100,000 calls fast; shrinking still works on them.
CHOICES = [n for n in SYSCALLS if n != "exit"] * 4 + ["exit"]
BATCH = st.lists(st.integers(0, 2 ** 40 - 1), min_size=CALLS_PER_BATCH, max_size=CALLS_PER_BATCH)


def decode(drawn):
    """(name, sensible, seed) of a drawn integer; 0 is the simplest call (getpid-like)."""
    return CHOICES[drawn % len(CHOICES)], (drawn // len(CHOICES)) % 3 != 2, drawn // (3 * len(CHOICES))


FUZZER = '''
import errno
import numpy as np


def lie(*args):
    return True


def explode(*args):
    raise RuntimeError("app code ran inside the kernel")


LyingStr = type("LyingStr", (str,), {"__eq__": lie, "__ne__": lie, "__hash__": explode, "__str__": explode,
                                     "__repr__": explode, "__len__": explode, "__iter__": explode,
                                     "startswith": lie, "endswith": lie, "encode": explode, "__format__": explode})
LyingInt = type("LyingInt", (int,), {"__eq__": lie, "__lt__": lambda s, o: False, "__gt__": lambda s, o: False,
                                     "__le__": lie, "__ge__": lie, "__hash__": explode, "__index__": explode,
                                     "__int__": explode, "__repr__": explode, "__format__": explode,
                                     "__bool__": explode})
LyingFloat = type("LyingFloat", (float,), {"__float__": explode, "__lt__": lambda s, o: False, "__gt__": lie,
                                           "__repr__": explode, "__eq__": lie, "__hash__": explode})
LyingBytes = type("LyingBytes", (bytes,), {"__bytes__": explode, "__len__": explode, "__iter__": explode,
                                           "__eq__": lie, "__hash__": explode})
LyingList = type("LyingList", (list,), {"__iter__": explode, "__len__": explode, "__getitem__": explode,
                                        "copy": explode, "__eq__": lie})
LyingDict = type("LyingDict", (dict,), {"__iter__": explode, "items": explode, "keys": explode,
                                        "__getitem__": explode, "copy": explode, "__len__": explode})
LyingName = type("LyingName", (str,), {"__eq__": lie, "__ne__": lie, "__hash__": str.__hash__, "__str__": explode,
                                       "__repr__": explode, "startswith": lie, "__format__": explode})


class Impostor:
    __class__ = property(lambda self: int)


class Loud:
    __repr__ = __str__ = __eq__ = __hash__ = __index__ = __float__ = __len__ = explode


def scribble(value, depth=0):
    """Change everything reachable in a returned value."""
    if depth > 3:
        return
    if type(value) is dict:
        for item in list(value.values()):
            scribble(item, depth + 1)
        value.clear()
        value["scribbled"] = LyingStr("x")
    elif type(value) is list:
        for item in value:
            scribble(item, depth + 1)
        value.append(Loud())
    elif type(value) is np.ndarray and value.flags.writeable:
        value.fill(7)


def main(sys, argv):
    link = argv[0]  # from the test, not a list or map (ps() shows it): no syscall needed to report
    recipe_batch, record, victim, invariants = link.batch, link.record, link.victim, link.invariants
    fds, handles = [], []
    devices = {}
    for name in ("gpu0", "fpga0", "laser0", "imager0"):  # set up, not counted: its devices open
        devices[name] = sys.open("/dev/" + name)

    def build(r):
        tag = r[0]
        if tag == "v":
            return r[1]
        if tag == "lstr":
            return LyingStr(r[1])
        if tag == "lint":
            return LyingInt(r[1])
        if tag == "lfloat":
            return LyingFloat(r[1])
        if tag == "lbytes":
            return LyingBytes(r[1])
        if tag == "fd":
            return fds[r[1] % len(fds)] if fds else r[1]
        if tag == "handle":
            return handles[r[1] % len(handles)] if handles else r[1]
        if tag == "dev":
            return devices[r[1]]
        if tag == "victim_pid":
            return victim["pid"]
        if tag == "victim_handle":
            return victim["handle"]
        if tag == "impostor":
            return Impostor()
        if tag == "loud":
            return Loud()
        if tag == "obj":
            return object()
        if tag == "cycle":
            cycle = [1]
            cycle.append(cycle)
            return cycle
        if tag == "array":
            return np.zeros(4, dtype=r[1])
        if tag == "deep":
            deep = []
            for _ in range(r[1]):
                deep = [deep]
            return deep
        if tag == "big":
            return bytes(r[1])
        if tag == "image":
            return victim["image"]
        if tag == "bytearray":
            return bytearray(b"abc")
        if tag == "memoryview":
            return memoryview(b"abcdef")[1:4]
        if tag == "npint":
            return np.int64(3)
        items = [build(x) for x in r[1]] if tag in ("list", "tuple", "llist") else None
        if tag == "list":
            return items
        if tag == "tuple":
            return tuple(items)
        if tag == "llist":
            return LyingList(items)
        pairs = []
        for k, v in r[1]:
            k = build(k)
            try:
                hash(k)
            except Exception:
                k = str(len(pairs))
            pairs.append((k, build(v)))
        return dict(pairs) if tag == "dict" else LyingDict(pairs)

    for name, args, kwargs in recipe_batch:
        args = [build(a) for a in args]
        kwargs = {(LyingName(k[1:]) if k.startswith("~") else k): build(v) for k, v in kwargs.items()}
        record.append(("pending", name))
        try:
            value = getattr(sys, name)(*args, **kwargs)
            outcome = "ok"
            if name in ("open", "subscribe", "bind") and type(value) is int:
                fds.append(value)
            if name == "ioctl" and type(value) is dict and type(value.get("handle")) is int:
                handles.append(value["handle"])
            scribble(value)  # what the kernel returned is the app's own: changing it changes nothing else
        except OSError as exc:
            code = exc.errno
            if type(code) is not int or code not in errno.errorcode:
                outcome = "BAD:no errno:" + repr(exc)[:200]
            elif code == errno.EIO and "internal error" in str(exc):
                outcome = "BAD:internal error:" + str(exc)[:200]
            else:
                outcome = errno.errorcode[code]
        except Exception as exc:
            outcome = "BAD:" + type(exc).__name__ + ":" + str(exc)[:200]
        record[-1] = (outcome, name)
        broken = invariants()
        if broken:
            record[-1] = ("BAD:after the call: " + broken, name)
'''

CHILD = "def main(sys, argv):\n    return 0\n"
VICTIM = '''
import hashlib


def main(sys, argv):
    bitstream = b"\\x5a" * 1000
    sys.ioctl(sys.open("/dev/fpga0"), "load", slot=0, bitstream=bitstream, manifest={
        "name": "victim", "kernel": "ndi", "size_bytes": 1000, "sha256": hashlib.sha256(bitstream).hexdigest()})
    fd = sys.open("/apps/victim/state.txt", "w")
    sys.write(fd, b"victim state")
    sys.close(fd)
    gpu = sys.open("/dev/gpu0")
    handle = sys.ioctl(gpu, "alloc", nbytes=4096)["handle"]
    feed = sys.subscribe("victim.*")
    port = sys.bind(4001)
    sys.publish("test.victim", {"handle": handle, "feed": feed, "port": port})
    sys.recv(feed)  # nobody may publish on victim.*: it waits here for good
'''


def start(signer):
    kernel = make_kernel(signer, config=KernelConfig(housekeeping_period_s=1e5, watchdog_period_s=1e5,
                                                     scrub_period_s=1e5,
                                                     exited_kept=1_000_000))  # every end checked
    kernel.clock.register()
    kernel.boot()
    kernel.fs.mkdir("/data/fuzz", "fuzz", parents=True)
    kernel.fs.mkdir("/data/victim", "victim", parents=True)
    kernel.fs.write_file("/data/victim/keep.txt", b"untouched", "victim", None)
    child = signer.image(code=CHILD, name="child")
    kernel.fs.write_file("/data/fuzz/child.img", child, "kernel", None)
    ready = kernel.bus.subscribe("test.victim", 10, lambda: None)
    victim_pid = kernel.spawn(signer.image(code=VICTIM, name="victim", priority="essential",
                                           capabilities={"devices": ["gpu0", "fpga0"], "subscribe": ["victim.*"],
                                                         "ports": [4001], "publish": ["test.victim"]}))
    kernel.clock.sleep(60.0)
    reply = kernel.bus.take(ready)["data"]
    kernel.bus.unsubscribe(ready)
    victim = {"pid": victim_pid, "handle": reply["handle"], "image": child}
    assert kernel.hardware.fpga.slots[0].name == "victim"
    image = signer.image(code=FUZZER, name="fuzz", watchdog={"restart": "never"},
                         capabilities={"devices": ["gpu0", "fpga0", "laser0", "imager0", "storage0"],
                                       "files": ["/data/fuzz"], "publish": ["fuzz.*"], "subscribe": ["fuzz.*", "hk.*"],
                                       "ports": [4000], "spawn": True, "isl_send": True, "submit": True},
                         limits={"storage_quota_bytes": 1 << 20, "memory_bytes": 1 << 20,
                                 "unsynced_bytes_per_file": 1 << 16, "log_events_per_s": 100.0})
    return kernel, image, victim, snapshot(kernel, victim_pid)


def snapshot(kernel, pid, contents=True):
    """What the fuzzer must never change: the victim's process, descriptors, subscription,
    port, device memory, FPGA slot and files (their index entries; with `contents`, their bytes)."""
    process = kernel.process(pid)
    subscription = next(h.subscription for h in process.fds.values() if hasattr(h, "subscription"))
    return {"alive": process.alive, "state": process.state, "fds": dict(process.fds),
            "gpu": dict(process.gpu_allocations),
            "device_memory": {h: kernel.hardware.gpu._allocations.get(h) for h in process.gpu_allocations},
            "subscribed": subscription in kernel.bus._subscriptions and not subscription.closed,
            "queued": len(subscription.queue), "port": kernel.ports[4001].pid,
            "fpga_slot_0": kernel.hardware.fpga.slots[0],
            "files": {p: kernel.fs.read_file(p) if contents else kernel.fs.stat(p)
                      for p in ("/apps/victim/state.txt", "/data/victim/keep.txt")}}


def assert_no_zombies(kernel, checked, pids=None):
    """No process (of `pids`, or all) is a zombie: a process whose thread is gone has ended
    completely (exit recorded, descriptors closed, device memory freed, its code unloaded); a
    live one has its thread. A process whose thread still runs is not judged yet: it may be
    ending right now (its thread and the caller's run together). `checked`: pids already found
    fully ended (an ended process stays so), skipped."""
    names = {t.name for t in threading.enumerate()}
    if pids is None:
        pids = list(kernel.processes)
    for pid in pids:
        process = kernel.processes.get(pid)
        if pid in checked or process is None:
            continue
        if f"{kernel.satellite_id}:{process.name}:{process.pid}" in names:
            continue
        assert not process.alive, process.info()  # alive without its thread
        assert process.exited.is_set() and process.exit_code is not None, process.info()
        assert not process.fds and not process.gpu_allocations, process.info()
        assert process.package not in python_sys.modules, process.info()
        checked.add(pid)


def settle(kernel, victim_pid, timeout_s=5.0):
    """Wait (real time) until every ended process's thread is gone."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        names = {t.name for t in threading.enumerate()}
        if not any(f"{kernel.satellite_id}:{p.name}:{p.pid}" in names
                   for p in kernel.processes.values() if p.pid != victim_pid and p.exited.is_set()):
            return
        time.sleep(0.01)


def run_fuzz(signer, batches, report=None, seed_value=0):
    """Run `batches` batches of CALLS_PER_BATCH calls on a new kernel, hypothesis seeded with
    `seed_value` (the same calls every run); returns the outcome counts."""
    kernel, image, victim, before = start(signer)
    before_call = snapshot(kernel, victim["pid"], contents=False)
    counts = collections.Counter()
    faults, checked, first_failure, batch_start = [], set(), [], [0]
    kernel.events.listen(lambda event: faults.append(event) if event.event_id == "KERNEL_FAULT" else None)

    def invariants():
        """Checked after every call, from the fuzzing app's thread: what is broken, or ''."""
        if kernel.state != "running":
            return f"kernel {kernel.state}"
        if faults:
            return f"KERNEL_FAULT {faults[0].message}"
        if snapshot(kernel, victim["pid"], contents=False) != before_call:
            return "the victim's state changed"
        pids = itertools.takewhile(kernel.processes.__contains__, itertools.count(batch_start[0]))
        try:
            assert_no_zombies(kernel, checked, list(pids))  # the processes of this batch
        except AssertionError as exc:
            return f"zombie {exc}"
        return ""

    try:
        @seed(seed_value)
        @settings(max_examples=batches, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(BATCH)
        def run(drawn):
            batch = [expand(*decode(call)) for call in drawn]
            record = []
            batch_start[0] = max(kernel.processes) + 1
            while len(record) < len(batch):  # a call that ends the process: the rest in a new one
                pid = kernel.spawn(image, [SimpleNamespace(batch=batch[len(record):], record=record,
                                                           victim=victim, invariants=invariants)])
                try:
                    kernel.wait(pid, 3600.0)
                except TimeoutError:  # it sleeps or waits as long as it asked: end it
                    kernel.kill(pid)
                    kernel.wait(pid, 3600.0)
                for child in [p for p in kernel.processes if p > pid]:  # children it spawned
                    if kernel.process(child).alive:
                        kernel.kill(child)
                        kernel.wait(child, 3600.0)
                if record and record[-1][0] == "pending":
                    record[-1] = ("ended the process", record[-1][1])
            bad = [i for i, (outcome, _) in enumerate(record) if outcome.startswith("BAD:")]
            if bad and not first_failure:  # the kernel lives on between examples: keep the first culprit
                first_failure.append((record[bad[0]][0], batch[bad[0]]))
            assert not bad, first_failure[0]
            counts.update(outcome for outcome, _ in record)
            counts.update(f"calls:{name}" for _, name in record)
            counts["calls"] += len(record)
            counts["hostile"] += sum(1 for _, args, kwargs in batch if any(map(hostile, args + list(kwargs.values())))
                                     or any(key.startswith("~") for key in kwargs))
            assert kernel.state == "running"
            assert not faults, faults
            assert snapshot(kernel, victim["pid"]) == before
            assert_no_zombies(kernel, checked)

        run()
        settle(kernel, victim["pid"])
        assert_no_zombies(kernel, checked)
        assert len(checked) == len(kernel.processes) - 1  # every process but the victim ended completely
    finally:
        kernel.shutdown()
        kernel.clock.unregister()
    if report is not None:
        report(counts)
    return counts


def _print(counts):
    """Print the figures, and leave only the outcome counts in `counts`."""
    calls, hostile_calls = counts.pop("calls"), counts.pop("hostile")
    per_call = {k[len("calls:"):]: counts.pop(k) for k in [k for k in counts if k.startswith("calls:")]}
    print(f"\nsyscall fuzz: {calls} calls ({hostile_calls} with a lying or foreign object); outcomes: "
          + ", ".join(f"{k} {v}" for k, v in counts.most_common()))
    print("calls per syscall: " + ", ".join(f"{k} {v}" for k, v in sorted(per_call.items())))
    assert set(per_call) == set(SYSCALLS)  # every syscall was called


def test_syscall_fuzz_quick(signer):
    started = time.monotonic()
    counts = run_fuzz(signer, 100, _print)
    assert sum(counts.values()) == 5_000  # every call of every batch ran
    assert counts["EINVAL"] > 1_000 and counts["ok"] > 1_000  # hostile calls, and calls deep into the kernel
    print(f"quick fuzz: {time.monotonic() - started:.1f} s")


@pytest.mark.slow
def test_syscall_fuzz_100k(signer):
    # Eight kernels of 12,500 calls each: an ended process stays in the kernel's table (for
    # wait), so ps() grows with every process the fuzz starts; tables of ~300 keep it linear.
    started = time.monotonic()
    counts = collections.Counter()
    for seed_value in range(1, 9):
        counts.update(run_fuzz(signer, 250, seed_value=seed_value))
    calls = counts["calls"]
    _print(counts)
    assert calls == 100_000 and sum(counts.values()) == 100_000
    print(f"slow fuzz: {time.monotonic() - started:.1f} s")


def test_every_syscall_is_fuzzed():
    assert set(SYSCALLS) == {"getpid", "spawn", "exit", "wait", "kill", "ps", "time", "monotonic", "sleep",
                             "heartbeat", "open", "close", "read", "write", "fsync", "ioctl", "stat",
                             "listdir", "mkdir", "unlink", "rename", "publish", "subscribe", "recv",
                             "power_status", "log", "bind", "send", "submit"}
