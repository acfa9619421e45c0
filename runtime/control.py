"""One control path: the table of control operations on a satellite, and their authentication.

Every control operation (status, ps, logs, housekeeping, read, listdir, write, deploy, run,
kill) is one row of `OPS`: its name, its argument schema (`Arg`s), the operator capability it
needs, and its handler. The same table serves the Ray calls (`SatelliteHostActor.control`,
behind `ConstellationRun.status`, `ps`, `logs`, `deploy`, `control`) and port 0 of the ISL
network (`SatelliteHost.request` / `_answer`, behind `Client`).

Authentication, in the spirit of CCSDS SDLS: a request is signed by an operator key (Ed25519)

    {"v": 1, "satellite": "TB09", "op": "read", "args": {"path": "/data/x"}, "seq": 17..., "key": KEY_ID,
     "sig": 64 bytes, "via": "TB01" or None}

over the canonical bytes `sim_hw.wire.encode` gives of {format, satellite, op, args (keys
sorted), seq, key, via}: changing the target, the operation, any argument or the sequence number
breaks the signature; so does changing `via`, the gateway satellite a request carried over
the ISL network was signed to come from (its reply goes there). The satellite
(`ControlTable.execute`) refuses, in this order and with a counted reason: a request that is not a well-formed signed request ("malformed", "unsigned"),
one for another satellite ("wrong_satellite"), one whose key is no operator key of its keyring
("unknown_key"; keyring grants with `operate = [...]`, `kernel.image.Grants`), one whose
signature does not verify ("bad_signature"), one that came over the ISL network from another
gateway than it was signed for ("wrong_route"), one whose sequence number it has seen
("replayed") or that is more than 64 behind the highest it has seen ("too_old": an anti-replay
window per operator key and satellite, `runtime.replay_window`), one numbered more than a day
ahead of the satellite's Unix clock ("too_new": accepted, it would lock its key out for good), one whose window cannot be
written to the satellite's file system ("window_not_kept", e.g. ENOSPC: fail closed), an unknown operation
("unknown_op"), and an operation whose capability the key was not granted ("not_permitted").
An authentic, fresh request consumes its sequence number whatever its fate after that.

Across a reboot: the window of each operator key is written to the satellite's file system
(`/etc/control/<key id>.window`) before the operation runs (a request whose window cannot be
written is refused), and read back the first time the key is seen after a boot, so a request
recorded before the reboot stays refused after it. A key with no window on the file system
starts at the table's `fresh_floor` (the host's start, on Ray): storage that did not survive a
restart (in memory) reopens no number signed before it.
Sequence numbers are derived from time (`OperatorSigner`: microseconds of the Unix clock, and
always above the signer's last one), so a signer started again (another CLI command) continues
above the numbers its predecessors used without keeping any state.

Errors: every refusal and failure is a result {ok: False, errno, error[, refused]}, never an
exception: EACCES for what authentication refuses, EINVAL for malformed requests, unknown
operations and bad arguments (the message names the field), and the handler's own errors
(ENOENT, EACCES for a refused image, ...).
"""
from __future__ import annotations

import errno
import json
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from orbitos.kernel.events import SEVERITIES
from orbitos.kernel.fs import normalize
from orbitos.kernel.image import MAX_IMAGE_BYTES, OPERATE_CAPABILITIES, Keyring, key_id
from orbitos.runtime.replay_window import ReplayWindow
from orbitos.sim_hw.wire import encode

CONTROL_FORMAT = "orbitos-control/1"
REQUEST_FIELDS = ("v", "satellite", "op", "args", "seq", "key", "sig", "via")
WRITABLE_ROOTS = ("/data",)  # the `write` op writes here and nowhere else (never /etc, /images)
WINDOW_DIR = "/etc/control"
MAX_SEQUENCE = (1 << 63) - 1
MAX_LOG_EVENTS = 10_000
REFUSALS = ("malformed", "unsigned", "wrong_satellite", "unknown_key", "bad_signature", "wrong_route",
            "replayed", "too_old", "too_new", "window_not_kept", "unknown_op", "not_permitted")
MAX_AHEAD_S = 86_400.0  # a sequence number more than this ahead of the satellite's Unix clock is refused


class ControlTarget(Protocol):
    """What a handler works on: one satellite's kernel, and its status row."""

    kernel: Any

    def status_row(self) -> dict[str, Any]: ...

    def run_once(self, image: bytes, argv: tuple[str, ...]) -> int:
        """Start an image once (not installed); its end is reported to the scheduler."""


@dataclass(frozen=True)
class Arg:
    """One argument of an operation: its name, its type(s), whether it must be given, and for a
    list the type of its items."""

    name: str
    kind: type | tuple[type, ...]
    required: bool = True
    items: type | None = None
    doc: str = ""


@dataclass(frozen=True)
class ControlOp:
    name: str
    capability: str
    args: tuple[Arg, ...]
    handler: Callable[[ControlTarget, dict[str, Any]], Any]
    summary: str

    def check(self, args: Any) -> dict[str, Any]:
        """The arguments, checked against the schema. Raises OSError(EINVAL) naming the field
        (unknown, missing, or of the wrong type)."""
        if not isinstance(args, dict):
            raise OSError(errno.EINVAL, f"{self.name}: args must be a map, got {type(args).__name__}")
        known = {a.name for a in self.args}
        for name in args:
            if name not in known:
                raise OSError(errno.EINVAL, f"{self.name}: unknown argument {name!r}; it takes "
                                            f"{', '.join(sorted(known)) or 'none'}")
        for arg in self.args:
            if arg.name not in args:
                if arg.required:
                    raise OSError(errno.EINVAL, f"{self.name}: argument {arg.name!r} is required")
                continue
            value = args[arg.name]
            kinds = arg.kind if isinstance(arg.kind, tuple) else (arg.kind,)
            if type(value) not in kinds:  # exact types: no bool for int, no str subclasses
                raise OSError(errno.EINVAL, f"{self.name}: argument {arg.name!r} must be "
                                            f"{' or '.join(k.__name__ for k in kinds)}, got {type(value).__name__}")
            if arg.items is not None and not all(type(item) is arg.items for item in value):
                raise OSError(errno.EINVAL, f"{self.name}: argument {arg.name!r} must hold only "
                                            f"{arg.items.__name__} items")
        return args


# -- handlers ------------------------------------------------------------------------------------
def _logs(target: ControlTarget, args: dict[str, Any]) -> list[dict[str, Any]]:
    last = args.get("last", 50)
    if not 1 <= last <= MAX_LOG_EVENTS:
        raise OSError(errno.EINVAL, f"logs: argument 'last' must be in 1..{MAX_LOG_EVENTS}, got {last}")
    severity = args.get("severity")
    if severity is not None and severity not in SEVERITIES:
        raise OSError(errno.EINVAL, f"logs: argument 'severity' must be one of {', '.join(SEVERITIES)}, "
                                    f"got {severity!r}")
    events = target.kernel.events.events()
    if severity is not None:
        floor = SEVERITIES.index(severity)
        events = [e for e in events if SEVERITIES.index(e.severity) >= floor]
    return [e.to_dict() for e in events[-last:]]


def _fs(target: ControlTarget) -> Any:
    if target.kernel.fs is None:
        raise OSError(errno.ENODEV, f"{target.kernel.satellite_id} has no file system")
    return target.kernel.fs


def _write(target: ControlTarget, args: dict[str, Any]) -> int:
    path = normalize(args["path"])
    if not any(path.startswith(root + "/") for root in WRITABLE_ROOTS):
        raise OSError(errno.EACCES, f"write: path {path!r} is not under {', '.join(WRITABLE_ROOTS)} "
                                    "(the only places control requests may write)")
    fs = _fs(target)
    fs.mkdir(path.rsplit("/", 1)[0], "runtime", parents=True)
    fs.write_file(path, args["data"], "runtime", None)
    return len(args["data"])


def _deploy(target: ControlTarget, args: dict[str, Any]) -> int:
    kernel = target.kernel
    argv = tuple(args.get("argv", ()))
    if kernel.fs is None:  # a satellite kept in memory only: started now, gone at its next boot
        return kernel.spawn(args["image"], argv)
    return kernel.install(args["image"], argv)


def _kill(target: ControlTarget, args: dict[str, Any]) -> dict[str, Any]:
    target.kernel.kill(args["pid"], reason="killed by an operator")
    return {"pid": args["pid"], "killed": True}


_PATH = Arg("path", str, doc="an absolute path")
_IMAGE = Arg("image", bytes, doc="a signed app image")
_ARGV = Arg("argv", (list, tuple), required=False, items=str, doc="the app's arguments")

OPS: dict[str, ControlOp] = {op.name: op for op in (
    ControlOp("status", "observe", (), lambda t, a: t.status_row(), "the satellite's status row"),
    ControlOp("ps", "observe", (), lambda t, a: t.kernel.ps(), "its processes"),
    ControlOp("logs", "observe", (Arg("last", int, required=False, doc="at most this many, 1..10000; 50"),
                                  Arg("severity", str, required=False, doc="this severity and above")),
              _logs, "its latest events"),
    ControlOp("housekeeping", "observe", (), lambda t, a: t.kernel.housekeeping(),
              "a housekeeping record (with the control counters)"),
    ControlOp("read", "read", (_PATH,), lambda t, a: _fs(t).read_file(a["path"]), "a file's bytes"),
    ControlOp("listdir", "read", (_PATH,), lambda t, a: _fs(t).listdir(a["path"]), "a directory's names"),
    ControlOp("write", "write", (_PATH, Arg("data", bytes, doc="the file's new contents")), _write,
              "write a file under /data; its length"),
    ControlOp("deploy", "deploy", (_IMAGE, _ARGV), _deploy,
              "install an image (kept, started at every boot) and start it; its pid"),
    ControlOp("run", "run", (_IMAGE, _ARGV), lambda t, a: t.run_once(a["image"], tuple(a.get("argv", ()))),
              "start an image once (not installed); its pid"),
    ControlOp("kill", "kill", (Arg("pid", int, doc="a live process"),), _kill, "end a process"),
)}
assert all(op.capability in OPERATE_CAPABILITIES for op in OPS.values())


# -- signing -------------------------------------------------------------------------------------
def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _canonical(value[key]) for key in sorted(value, key=str)}
    if isinstance(value, (list, tuple)):
        return [_canonical(item) for item in value]
    return value


def signed_bytes(satellite: Any, op: Any, args: Any, seq: Any, key: Any, via: Any = None) -> bytes:
    """The bytes an operator signs: the wire encoding of the request's fields, args with sorted
    keys. Raises TypeError, ValueError (and the wire's FrameError) for what cannot be encoded."""
    return encode({"f": CONTROL_FORMAT, "satellite": satellite, "op": op, "args": _canonical(args),
                   "seq": seq, "key": key, "via": via}, MAX_IMAGE_BYTES + (1 << 20))


class OperatorSigner:
    """An operator's Ed25519 key, signing control requests with sequence numbers derived from
    time: microseconds of the Unix clock, always above this signer's last number."""

    def __init__(self, private_key: Ed25519PrivateKey, now_s: Callable[[], float] = time.time) -> None:
        self.private_key = private_key
        self.key_id = key_id(private_key.public_key())
        self._now_s = now_s
        self._last = 0
        self._lock = threading.Lock()

    def next_sequence(self) -> int:
        with self._lock:
            self._last = max(self._last + 1, int(self._now_s() * 1_000_000))
            return self._last

    def sign(self, satellite: str, op: str, args: dict[str, Any] | None = None,
             via: str | None = None) -> dict[str, Any]:
        """A signed request for `op` on `satellite`; `via`: the gateway satellite it is carried
        from over the ISL network (its reply goes there and nowhere else), None for a Ray call.
        Raises TypeError or ValueError for args that cannot be encoded."""
        args = dict(args or {})
        seq = self.next_sequence()
        signature = self.private_key.sign(signed_bytes(satellite, op, args, seq, self.key_id, via))
        return {"v": 1, "satellite": satellite, "op": op, "args": args, "seq": seq, "key": self.key_id,
                "sig": signature, "via": via}


# -- the satellite's side ------------------------------------------------------------------------
class Refused(OSError):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(code, message)
        self.reason = reason


class ControlCounters:
    """Per satellite: accepted requests (in all and by op), refused ones by reason, errors by op."""

    def __init__(self) -> None:
        self.accepted = 0
        self.accepted_by_op: dict[str, int] = {}
        self.refused: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self._lock = threading.Lock()

    def count(self, field: str, key: str) -> None:
        with self._lock:
            table = getattr(self, field)
            table[key] = table.get(key, 0) + 1
            if field == "accepted_by_op":
                self.accepted += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"accepted": self.accepted, "accepted_by_op": dict(self.accepted_by_op),
                    "refused": dict(self.refused), "errors": dict(self.errors)}


class ControlTable:
    """The satellite side of the control path for the satellites of one host: authenticate,
    check, perform, count. `targets(satellite)` gives the `ControlTarget` of a hosted satellite
    (KeyError otherwise)."""

    def __init__(self, keyring: Keyring, targets: Callable[[str], ControlTarget],
                 fresh_floor: int | None = None, now_s: Callable[[], float] = time.time) -> None:
        """`fresh_floor`: a sequence number (microseconds of the Unix clock, as `OperatorSigner`
        numbers them) at or below which a key with no window on a satellite's file system is
        refused ("too_old"): the host's start, so that a host whose satellites' storage did not
        survive its restart (in memory, or a new block file) does not accept again what an
        earlier instance accepted. None: no floor (a window never written starts empty)."""
        self.keyring = keyring
        self.targets = targets
        self.fresh_floor = fresh_floor
        self._now_s = now_s  # the Unix clock a sequence number may not run ahead of by MAX_AHEAD_S
        self.counters: dict[str, ControlCounters] = {}
        self._windows: dict[tuple[str, str], ReplayWindow] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def counters_of(self, satellite: str) -> ControlCounters:
        with self._lock:
            return self.counters.setdefault(satellite, ControlCounters())

    def _satellite_lock(self, satellite: str) -> threading.Lock:
        with self._lock:
            return self._locks.setdefault(satellite, threading.Lock())

    def execute(self, satellite: str, request: Any, via: str | None = None) -> dict[str, Any]:
        """Authenticate and perform one request arriving for `satellite` (a satellite of this
        host); `via`: the gateway it came from over the ISL network (where its reply goes),
        which must be the one it was signed for. {ok: True, value} or {ok: False, errno, error
        [, refused: reason]}."""
        counters = self.counters_of(satellite)
        try:
            target = self.targets(satellite)
        except KeyError as exc:
            counters.count("refused", "wrong_satellite")
            return {"ok": False, "errno": errno.ENOENT, "error": str(exc.args[0]), "refused": "wrong_satellite"}
        try:
            op = self._authenticate(satellite, request, target, via)
        except Refused as exc:
            counters.count("refused", exc.reason)
            return {"ok": False, "errno": exc.errno, "error": exc.strerror, "refused": exc.reason}
        counters.count("accepted_by_op", op.name)
        try:
            return {"ok": True, "value": op.handler(target, op.check(request["args"]))}
        except OSError as exc:
            counters.count("errors", op.name)
            return {"ok": False, "errno": exc.errno or errno.EIO, "error": str(exc.strerror or exc)}
        except Exception as exc:  # noqa: BLE001 - a fault of a handler is an answer, not a lost request
            counters.count("errors", op.name)
            return {"ok": False, "errno": errno.EIO, "error": f"{type(exc).__name__}: {exc}"}

    def _authenticate(self, satellite: str, request: Any, target: ControlTarget, via: str | None) -> ControlOp:
        """The operation of an authentic, fresh, permitted request (its sequence number now
        used). Raises Refused with the reason."""
        if not isinstance(request, dict) or request.get("v") != 1:
            raise Refused(errno.EINVAL, "malformed", f"{satellite}: not a signed control request "
                                                     f"(a map with {', '.join(REQUEST_FIELDS)})")
        if not request.get("sig") or not request.get("key"):
            raise Refused(errno.EACCES, "unsigned", f"{satellite}: control request is unsigned")
        extra = set(request) - set(REQUEST_FIELDS)
        seq, op_name, key = request.get("seq"), request.get("op"), request.get("key")
        if extra or type(seq) is not int or not 0 < seq <= MAX_SEQUENCE or type(op_name) is not str \
                or type(key) is not str or type(request.get("sig")) is not bytes \
                or type(request.get("satellite")) is not str or type(request.get("args")) is not dict \
                or not isinstance(request.get("via"), str | None):
            raise Refused(errno.EINVAL, "malformed", f"{satellite}: malformed control request "
                                                     f"(fields {', '.join(REQUEST_FIELDS)}; seq 1..2^63-1)")
        if request["satellite"] != satellite:
            raise Refused(errno.EACCES, "wrong_satellite", f"{satellite}: control request is for "
                                                           f"{request['satellite'][:64]!r}, not for this satellite")
        operator = self.keyring.operator(key)
        if operator is None:
            raise Refused(errno.EACCES, "unknown_key", f"{satellite}: key {key[:32]!r} is no operator "
                                                       "key of this satellite's keyring")
        public_key, capabilities = operator
        try:
            public_key.verify(request["sig"], signed_bytes(satellite, op_name, request["args"], seq, key,
                                                           request.get("via")))
        except (InvalidSignature, TypeError, ValueError):
            raise Refused(errno.EACCES, "bad_signature", f"{satellite}: control request signature does "
                                                         f"not verify with key {key}") from None
        if via is not None and request.get("via") != via:
            raise Refused(errno.EACCES, "wrong_route", f"{satellite}: control request signed to come "
                                                       f"via {request.get('via')!r} came via {via!r}")
        ahead_s = seq / 1_000_000 - self._now_s()
        if ahead_s > MAX_AHEAD_S:  # accepted, it would lock the key out of this satellite for good
            raise Refused(errno.EACCES, "too_new", f"{satellite}: control request {seq} of key {key} is "
                          f"{ahead_s:.0f} s ahead of this satellite's clock (at most {MAX_AHEAD_S:.0f} s): "
                          "is the signer's clock wrong?")
        with self._satellite_lock(satellite):
            window = self._window(satellite, key, target)
            verdict = window.verdict(seq)
            if verdict is not None:
                raise Refused(errno.EACCES, verdict, f"{satellite}: control request {seq} of key {key} "
                              + ("was seen already (replayed)" if verdict == "replayed" else
                                 f"is older than the anti-replay window (highest {window.highest})"))
            window.accept(seq)
            self._keep(target, key, window)
        op = OPS.get(op_name)
        if op is None:
            raise Refused(errno.EINVAL, "unknown_op", f"unknown control operation {op_name[:64]!r}; "
                                                      f"known: {', '.join(OPS)}")
        if op.capability not in capabilities:
            raise Refused(errno.EACCES, "not_permitted", f"{satellite}: key {key} may not {op.capability} "
                          f"({op.name} needs '{op.capability}'; the key has {', '.join(capabilities)})")
        return op

    def _window(self, satellite: str, key: str, target: ControlTarget) -> ReplayWindow:
        window = self._windows.get((satellite, key))
        if window is None:
            window = ReplayWindow()
            fs = target.kernel.fs
            if fs is not None:
                try:
                    kept = json.loads(fs.read_file(f"{WINDOW_DIR}/{key}.window"))
                    window = ReplayWindow(int(kept["highest"]), int(kept["bits"]))
                except OSError:  # never written: this key was not seen on this file system
                    if self.fresh_floor is not None:
                        window = ReplayWindow(self.fresh_floor, (1 << window.size) - 1)
                except (ValueError, KeyError, TypeError):
                    # unreadable: refuse everything up to now rather than reopen old numbers
                    window = ReplayWindow(int(time.time() * 1_000_000), (1 << 64) - 1)
                    target.kernel.events.emit("CONTROL_WINDOW_LOST", "error", "runtime",
                                              f"anti-replay window of key {key} unreadable: numbers up "
                                              "to now refused")
            self._windows[(satellite, key)] = window
        return window

    def _keep(self, target: ControlTarget, key: str, window: ReplayWindow) -> None:
        """Write the window to the satellite's file system before the request runs. Raises
        Refused("window_not_kept") when it cannot be written: a request that ran without its
        number kept would be accepted again after a reboot (fail closed)."""
        fs = target.kernel.fs
        if fs is None:
            return  # a satellite in memory only forgets everything at its next boot anyway
        if target.kernel.state not in ("running", "fenced"):
            # halted for a reset (its storage closed), booting or stopping: this table's window,
            # which outlives the kernel, holds the number until the next request after the boot
            # writes it; a restart of the host meanwhile is covered by `fresh_floor`
            return
        try:
            fs.mkdir(WINDOW_DIR, "runtime", parents=True)
            fs.write_file(f"{WINDOW_DIR}/{key}.window",
                          json.dumps({"highest": window.highest, "bits": window.bits}).encode(), "runtime", None)
        except OSError as exc:
            target.kernel.events.emit("CONTROL_WINDOW_NOT_KEPT", "error", "runtime",
                                      f"anti-replay window of key {key} not written: {exc}")
            raise Refused(exc.errno or errno.EIO, "window_not_kept",
                          f"{target.kernel.satellite_id}: control request refused: its anti-replay "
                          f"window could not be kept ({exc.strerror or exc}), so it could be replayed "
                          "after a reboot") from None


def result_value(result: dict[str, Any], satellite: str) -> Any:
    """The value of a result, or OSError with its errno and message (naming the satellite)."""
    if result.get("ok"):
        return result.get("value")
    raise OSError(result.get("errno") or errno.EIO, f"{satellite}: {result.get('error')}")
