"""One satellite's kernel: boot, processes, limits, system services. A plain object; no Ray.

    kernel = Kernel(profile, clock, keyring, satellite_id="TB01", track=track)
    with clock.participant():          # on a virtual clock, the caller takes part
        kernel.boot()                  # devices, file system, services, startup table
        pid = kernel.spawn(image_bytes, ["--verbose"])
        kernel.wait(pid)
        kernel.shutdown()

Boot builds the device tree from the hardware profile (a device that fails to probe is an event;
the rest come up), mounts the file system on storage0 (recovering after an unclean stop, or
formatting a blank device), starts the system services (housekeeping, safe mode, the watchdog,
the scrubber: each a supervised run loop of `kernel.services` that outlives its failures), then
the apps of the startup table and of the installed-apps table (bad entries are skipped). Every
step and every failure is an event.

Processes run in their own threads (participants of the clock, small stacks). Every blocking
syscall waits on the clock through `block()`, so a virtual clock sees when all are idle, and a
kill, a safe-mode resume or a bus delivery wakes the process through its wakeup event.
A process is ended (killed, over a limit, shut down) at its next syscall, at once if it waits in
one, and otherwise by raising ProcessExit into its thread at the next bytecode boundary
(kernel/app_threads.py); an app with `isolation = "process"` runs in its own OS process served
by its kernel thread (kernel/isolation.py) and is ended by SIGTERM, then SIGKILL after a grace.
CPU limits are enforced at each syscall and by a wall-clock sweep (`enforce_cpu_limits`).

Fencing: on a native block file, mounting takes the file's lease, and `incarnation` is its epoch.
When another incarnation takes the lease (the satellite was rebooted elsewhere while this one
still runs), the first refused write or the watchdog's lease check calls `fence`: an event
FENCED (critical), then the satellite halts (every app ended, services stopped, devices closed,
state "fenced") rather than run on beside its successor.

Errors of the public methods: ImageError (EACCES, EINVAL) for images; OSError ESRCH for an
unknown pid, ETIMEDOUT for a wait that times out, EAGAIN for a spawn over a process limit.
"""
from __future__ import annotations

import errno
import itertools
import json
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from orbitos.drivers.device_tree import DeviceTree
from orbitos.kernel import app_threads, isolation
from orbitos.kernel.bus import SoftwareBus
from orbitos.kernel.events import EventLog
from orbitos.kernel.fs import FileSystem, normalize
from orbitos.kernel.governor import PowerGovernor
from orbitos.kernel.image import ImageError, Keyring, VerifiedImage, parse_version, stored_version, verify_image
from orbitos.kernel.loader import load_entry, unload
from orbitos.kernel.process import Process, ProcessExit
from orbitos.kernel.services import SupervisedService, SupervisionPolicy, start_system_services
from orbitos.sim_hw.clock import ClockRLock, SimClock
from orbitos.sim_hw.hardware import SatelliteHardware
from orbitos.sim_hw.orbits import period_s
from orbitos.sim_hw.profile import HardwareProfile
from orbitos.sim_hw.track import SatelliteTrack
from orbitos.sim_hw.wire import decode_body, encode

EXIT_CRASH = 1
EXIT_KILLED = -9
INSTALLED_TABLE = "/etc/installed.json"
EXIT_LIMIT = 137
MAX_INSTALLED = 256  # entries of the installed-apps table started at boot
MAX_ARGV = 256
_STACK_LOCK = threading.Lock()
BROWNOUT_HELD = ("low", "normal")  # priority classes a brownout suspends (essential, high run on)


@dataclass(frozen=True)
class StartupEntry:
    """An app to start at boot: an image path in the satellite's file system, and its argv."""

    image: str
    argv: tuple[str, ...] = ()
    version: str | None = None  # the installed image's version, for anti-rollback


@dataclass(frozen=True)
class KernelConfig:
    housekeeping_period_s: float = 10.0
    watchdog_period_s: float = 5.0
    scrub_period_s: float = 60.0
    scrub_blocks: int = 256
    eps_refresh_s: float = 5.0
    safe_mode_period_s: float = 10.0
    supervision: SupervisionPolicy = SupervisionPolicy()
    thread_stack_bytes: int = 512 * 1024
    max_processes: int = 512  # processes alive at once on this kernel, all apps together
    exited_kept: int = 256  # records of ended processes kept for wait and ps
    startup: tuple[StartupEntry, ...] = ()


@dataclass
class PortBinding:
    port: int
    pid: int
    queue: Any = None
    notify: Callable[[], None] | None = None
    depth: int = 256
    overflows: int = 0
    max_bytes: int = 16 << 20  # encoded bytes queued at once (a flood of 1 MiB messages stops here)
    queued_bytes: int = 0

    def take(self) -> dict[str, Any]:
        """The oldest queued message (the caller checked that one is there)."""
        message = self.queue.popleft()
        self.queued_bytes -= message.pop("_bytes")
        return message


class Kernel:
    def __init__(self, profile: HardwareProfile, clock: SimClock, keyring: Keyring, *,
                 satellite_id: str = "SAT", backends: Any = "local",
                 hardware: SatelliteHardware | None = None, track: SatelliteTrack | None = None,
                 config: KernelConfig = KernelConfig(), network: Any = None,
                 scheduler: Any = None, events: EventLog | None = None) -> None:
        self.profile = profile
        self.clock = clock
        self.keyring = keyring
        self.satellite_id = satellite_id
        self.config = config
        self.network = network
        self.scheduler = scheduler
        self.track = track or (hardware.track if hardware is not None
                               else SatelliteTrack.reference(satellite_id, clock.now()))
        self.hardware = hardware
        self.backends = backends
        # A kernel booted after a reset continues its predecessor's log (`events`): the record of
        # what happened is the operator's, not the RAM's.
        self.events = events if events is not None else EventLog(clock.now)
        self.bus = SoftwareBus(clock.now)
        self.tree: DeviceTree | None = None
        self.fs: FileSystem | None = None
        self.eps = None
        self.governor = PowerGovernor(profile.eps.battery,
                                      self.track.generation_profile(profile.eps.solar_array),
                                      horizon_s=period_s(self.track.record))
        self.processes: dict[int, Process] = {}
        self.ports: dict[int, PortBinding] = {}
        self.counters = {"syscalls": 0, "denials": 0, "spawned": 0, "refused_images": 0,
                         "restarts": 0, "safe_mode_entries": 0, "isl_sent": 0, "restart_requests": 0,
                         "spawn_refusals": 0, "exit_requests": 0, "cpu_limit_kills": 0}
        self.boot_utc_s = clock.now()
        self.state = "new"
        self.incarnation: int | None = None  # the storage lease's epoch once mounted on a native file
        self._halted: threading.Thread | None = None
        self._pids = itertools.count(100)
        self._lock = threading.RLock()
        self._stop = clock.event()
        self.services: dict[str, SupervisedService] = {}
        self.stalled_services: set[str] = set()
        # Called with the reason when a service keeps failing (see `request_restart`); the
        # runtime that owns this kernel hooks it to rebuild the kernel.
        self.on_restart_request: Callable[[str], None] | None = None
        # Told of every process's end (`on_process_exit`); the runtime forwards the ends of the
        # processes it started for someone (the scheduler's tasks). The kernel imports nothing.
        self._exit_listeners: list[Callable[[dict[str, Any]], None]] = []
        self._service_threads: list[threading.Thread] = []
        # Sections the owner of the kernel adds to every housekeeping record (name -> a callable
        # returning a dict), so the runtime's counters travel with the kernel's own.
        self.housekeeping_sections: dict[str, Callable[[], dict[str, Any]]] = {}
        self._install_lock = ClockRLock(clock)  # install's read-modify-write of the table
        self._eps_cache: tuple[float, dict[str, Any]] | None = None
        self._suspended_by_safe_mode: set[int] = set()
        self.brownout: str | None = None  # the reason while the bus sheds load (`begin_brownout`)
        self._suspended_by_brownout: set[int] = set()
        self.events.listen(self._publish_event)

    # -- boot and shutdown ------------------------------------------------------------------------
    def boot(self) -> None:
        """Bring the satellite up. Never raises for a device or file-system failure: those are
        events, and the kernel runs with what came up."""
        self.state = "booting"
        self.boot_utc_s = self.clock.now()
        self.events.emit("BOOT_START", "info", "kernel", f"{self.satellite_id} booting",
                         profile=self.profile.name)
        if self.hardware is None and self.backends == "local":
            self.hardware = SatelliteHardware(self.profile, self.satellite_id, self.track,
                                              start_utc_s=self.clock.now())
        self.tree = DeviceTree.build(self.profile, self.clock, self.backends, hardware=self.hardware,
                                     satellite_id=self.satellite_id)
        for failure in self.tree.failures:
            self.events.emit("DEVICE_PROBE_FAILED", "error", failure.device,
                             f"{failure.device} on {failure.backend} did not come up: {failure.reason}")
        self.events.emit("DEVICES_UP", "info", "kernel", f"{len(self.tree.names())} devices up",
                         devices=self.tree.names())
        if "eps0" in self.tree:
            self.eps = self.tree["eps0"].open()
        if "storage0" in self.tree:
            self._mount()
        self.services = start_system_services(self, self._stop)
        self._service_threads = [s.thread for s in self.services.values() if s.thread is not None]
        self.state = "running"
        for entry in self.config.startup + tuple(self._installed_entries()):
            try:
                data = self.fs.read_file(entry.image) if self.fs else b""
                self.spawn(data, entry.argv)
            except Exception as exc:  # one bad entry never stops a boot
                self.events.emit("STARTUP_FAILED", "error", "kernel",
                                 f"startup app {entry.image} not started: {type(exc).__name__}: {exc}")
        self.events.emit("BOOT_COMPLETE", "info", "kernel", f"{self.satellite_id} up",
                         processes=len(self.live()))

    def _mount(self) -> None:
        storage = self.tree["storage0"].open()
        self.incarnation = storage.identity.get("epoch")
        storage.on_fenced = lambda error: self.fence(str(error.strerror or error))
        for note in storage.identity.get("notes") or ():  # a block-file header repaired at open
            self.events.emit("STORAGE_REPAIRED", "warning", "storage0", str(note)[:500])
        fs = FileSystem(storage, self.clock.now, ClockRLock(self.clock))
        try:
            report = fs.mount()
        except OSError as exc:
            self.events.emit("FS_MOUNT_FAILED", "critical", "fs", f"file system not mounted: {exc}")
            return
        self.fs = fs
        if report.formatted:
            self.events.emit("FS_FORMATTED", "warning", "fs", "blank storage formatted")
        elif report.recovered:
            self.events.emit("FS_RECOVERED", "warning", "fs", "recovered after an unclean stop: "
                             + "; ".join(report.notes), generation=report.generation)
        if report.damaged:
            self.events.emit("FS_REPAIRED", "warning", "fs", "damaged metadata copy not used: "
                             + "; ".join(report.damaged), generation=report.generation)
        self.events.emit("FS_MOUNTED", "info", "fs", f"{report.files} files, generation "
                         f"{report.generation}", files=report.files)
        for directory in ("/apps", "/images", "/data"):
            fs.mkdir(directory, "kernel", parents=True)

    def check_lease(self) -> None:
        """Fence this kernel if another incarnation took its storage's lease (the watchdog calls
        this every period). Raises OSError(EIO) when the lease cannot be read."""
        if self.tree is None or "storage0" not in self.tree or self.incarnation is None:
            return
        lease = self.tree["storage0"].lease()
        if lease is not None and lease["fenced"]:
            self.fence(f"incarnation {lease['current']} ({lease['holder'] or 'unknown holder'}) took the "
                       f"storage lease; this is incarnation {lease['epoch']}")

    def fence(self, reason: str) -> None:
        """Another incarnation owns this satellite now: an event FENCED (critical), then halt
        (apps ended without restart, services stopped, devices closed; state "fenced"), on a
        thread of its own since the caller may be an app or a service the halt ends. Once."""
        with self._lock:
            if self.state in ("fenced", "stopping", "stopped", "new"):
                return
            self.state = "fenced"
        self.events.emit("FENCED", "critical", "kernel", f"{self.satellite_id} fenced: {reason}; "
                         "halting (apps stopped, nothing more written)", reason=reason[:300])
        self._halted = self.clock.start_thread(self._halt, name=f"{self.satellite_id}:fenced")

    def _stop_everything(self, reason: str, timeout_s: float) -> None:
        """Kill every live process without restart, stop the services, wait for the ends."""
        for process in self.live():
            try:
                self.kill(process.pid, reason, restart=False)
            except OSError:
                pass  # it ended meanwhile
        self._stop.set()
        for process in list(self.processes.values()):
            if not process.exited.is_set():
                self.clock.wait(process.exited, timeout_s)
        app_threads.CpuSweeper.shared().forget(self)

    def _halt(self, timeout_s: float = 10.0) -> None:
        self._stop_everything("fenced: another incarnation owns this satellite", timeout_s)
        self.events.emit("HALTED", "critical", "kernel", f"{self.satellite_id} halted after losing "
                         "its storage lease")
        if self.tree is not None:
            self.tree.close()

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Stop every process and service, close the devices. Safe to call twice. A fenced
        kernel has halted already: it stays "fenced"."""
        if self.state == "fenced":
            if self._halted is not None and self._halted is not threading.current_thread():
                self._halted.join(timeout_s)
            return
        if self.state in ("stopped", "new"):
            self.state = "stopped"
            return
        self.state = "stopping"
        self._stop_everything("kernel shutdown", timeout_s)
        self.events.emit("SHUTDOWN", "info", "kernel", f"{self.satellite_id} stopped")
        self.state = "stopped"
        if self.tree is not None:
            self.tree.close()

    # -- processes --------------------------------------------------------------------------------
    def live(self) -> list[Process]:
        with self._lock:
            return [p for p in self.processes.values() if p.alive]

    def process(self, pid: Any) -> Process:
        """Raises OSError(ESRCH) for an unknown pid."""
        with self._lock:
            process = self.processes.get(pid) if isinstance(pid, int) else None
        if process is None:
            raise OSError(errno.ESRCH, f"no process {pid!r}")
        return process

    def spawn(self, image: bytes, argv: tuple[str, ...] | list[str] = (), parent: int | None = None,
              restarts: int = 0, verified: VerifiedImage | None = None) -> int:
        """Verify and start an image. Raises ImageError (EACCES unsigned/untrusted/tampered,
        EINVAL malformed) after recording an APP_REFUSED event, or OSError(ESHUTDOWN)."""
        if self.state not in ("running", "booting"):
            raise OSError(errno.ESHUTDOWN, f"kernel is {self.state}")
        if verified is None:
            verified = self._verify(image)
        if self.fs is not None:
            try:
                self.fs.mkdir(f"/apps/{verified.manifest.name}", verified.manifest.name, parents=True)
            except OSError as exc:
                self.events.emit("HOME_FAILED", "warning", verified.manifest.name,
                                 f"home directory not created: {exc}")
        now = self.clock.now()
        with self._lock:
            self._check_process_limits(verified)
            pid = next(self._pids)
            process = Process(pid, verified, tuple(argv), parent, self.clock.event(), self.clock.event(),
                              now, restarts=restarts, last_progress_utc_s=now)
            process.package = f"_orbitos_{self.satellite_id.replace('-', '_')}_pid{pid}"
            self.processes[pid] = process
            self.counters["spawned"] += 1
        self.events.emit("APP_START", "info", process.name, f"{process.name} {verified.manifest.version} "
                         f"started as pid {pid}", pid=pid, signer=verified.signer)  # before it runs
        if self.brownout is not None and verified.manifest.priority in BROWNOUT_HELD:
            process.suspended = True  # started during a brownout: held until it ends
            self._suspended_by_brownout.add(pid)
        app_threads.CpuSweeper.shared().watch(self)
        with _STACK_LOCK:
            previous = threading.stack_size(self.config.thread_stack_bytes)
            try:
                self.clock.start_thread(self._run, process, name=f"{self.satellite_id}:{process.name}:{pid}")
            finally:
                threading.stack_size(previous)
        return pid

    def _check_process_limits(self, verified: VerifiedImage) -> None:
        """Raises OSError(EAGAIN) naming the limit when one more process of this app would be
        over its manifest's limits.processes or the kernel's max_processes (an event too)."""
        name = verified.manifest.name
        live = [p for p in self.processes.values() if p.alive]
        same = sum(1 for p in live if p.name == name)
        if same >= verified.manifest.limits.processes:
            why = (f"{name} already runs {same} processes, its limit (limits.processes = "
                   f"{verified.manifest.limits.processes})")
        elif len(live) >= self.config.max_processes:
            why = f"{self.satellite_id} already runs {len(live)} processes, its limit (max_processes)"
        else:
            return
        self.counters["spawn_refusals"] += 1
        self.events.emit("SPAWN_REFUSED", "warning", name, f"{name} not started: {why}")
        raise OSError(errno.EAGAIN, f"{name} not started: {why}")

    def _verify(self, image: bytes) -> VerifiedImage:
        """Raises ImageError after recording an APP_REFUSED event."""
        try:
            return verify_image(image, self.keyring)
        except ImageError as exc:
            self.counters["refused_images"] += 1
            self.events.emit("APP_REFUSED", "error", "kernel", f"image refused: {exc.strerror}",
                             errno=exc.errno)
            raise

    def install(self, image: bytes, argv: tuple[str, ...] | list[str] = ()) -> int:
        """Keep an image in the file system, start it now and at every boot; returns the pid.

        The image and the table of installed apps (`/etc/installed.json`) are written durably
        before the app starts, so an install that returned survives a crash of the host.
        Installing an app of the same name again replaces it in the table. Raises ImageError as
        `spawn` does, OSError(ENODEV) when the satellite has no file system, ENOSPC or EIO when it
        cannot keep the image (nothing is started then), ESHUTDOWN. Anti-rollback: an image older
        than the installed version of the same app (versions compared as dotted integers) is
        refused with ImageError(EACCES) naming both versions; the same version may be reinstalled."""
        if self.state not in ("running", "booting"):
            raise OSError(errno.ESHUTDOWN, f"kernel is {self.state}")
        verified = self._verify(image)
        if self.fs is None:
            raise OSError(errno.ENODEV, f"{self.satellite_id} has no file system to install into")
        path = f"/images/{verified.manifest.name}.img"
        # Not the kernel's lock: file-system calls wait on the clock, and a plain lock held
        # across a clock wait stalls a virtual clock. The install lock is clock-aware.
        with self._install_lock:
            entries, _ = self._read_installed_table()
            self._refuse_rollback(verified, path, entries)
            table = [{"image": e.image, "argv": list(e.argv), **({"version": e.version} if e.version else {})}
                     for e in entries if e.image != path]
            table.append({"image": path, "argv": list(argv), "version": verified.manifest.version})
            self.fs.write_file(path, image, "kernel", None)
            self.fs.mkdir("/etc", "kernel", parents=True)
            self.fs.write_file(INSTALLED_TABLE, json.dumps(table).encode(), "kernel", None)
        self.events.emit("APP_INSTALLED", "info", "kernel", f"{verified.manifest.name} installed at "
                         f"{path}, starts at every boot", image=path)
        return self.spawn(b"", argv, verified=verified)

    def _refuse_rollback(self, verified: VerifiedImage, path: str, installed: list[StartupEntry]) -> None:
        """Raises ImageError(EACCES) (and records APP_REFUSED) when `verified` is older than the
        installed version at `path`: the table's version, or the stored image's for a table
        written before versions were recorded."""
        name, new = verified.manifest.name, verified.manifest.version
        entry = next((e for e in installed if e.image == path), None)
        if entry is None:
            return
        old = entry.version
        if old is None:
            try:
                old = stored_version(self.fs.read_file(path))
            except OSError:
                old = None
            if old is None:
                return  # nothing readable to compare with: the new image replaces it
        try:
            older = parse_version(new) < parse_version(old)
        except ValueError:
            return
        if older:
            self.counters["refused_images"] += 1
            message = (f"{name} {new} is older than the installed {name} {old}: not installed "
                       "(anti-rollback)")
            self.events.emit("APP_REFUSED", "error", "kernel", f"image refused: {message}",
                             errno=errno.EACCES)
            raise ImageError(errno.EACCES, message)

    def _installed_entries(self) -> list[StartupEntry]:
        """The valid entries of the installed-apps table; each one skipped is an event
        (INSTALLED_ENTRY_SKIPPED), an unreadable table too (INSTALLED_TABLE_UNREADABLE)."""
        entries, problems = self._read_installed_table()
        for event_id, message in problems:
            self.events.emit(event_id, "error", "kernel", message)
        return entries

    def _read_installed_table(self) -> tuple[list[StartupEntry], list[tuple[str, str]]]:
        """(valid entries, (event id, message) of each problem). Never raises: a table that is
        not JSON, not a list, or unreadable gives no entries; an entry that is not
        {"image": absolute path of an existing file, "argv": [str, ...]} (argv may be left out),
        or repeats an image, is left out; only the first MAX_INSTALLED entries are read."""
        if self.fs is None:
            return [], []
        try:
            raw = self.fs.read_file(INSTALLED_TABLE)
        except FileNotFoundError:
            return [], []
        except OSError as exc:
            return [], [("INSTALLED_TABLE_UNREADABLE", f"{INSTALLED_TABLE} not read: {exc}")]
        try:
            table = json.loads(raw)
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            return [], [("INSTALLED_TABLE_UNREADABLE", f"{INSTALLED_TABLE} is not JSON: "
                         f"{type(exc).__name__}: {str(exc)[:200]}")]
        if not isinstance(table, list):
            return [], [("INSTALLED_TABLE_UNREADABLE", f"{INSTALLED_TABLE} is not a list but "
                         f"{type(table).__name__}")]
        entries: list[StartupEntry] = []
        problems: list[tuple[str, str]] = []
        skip = "INSTALLED_ENTRY_SKIPPED"
        if len(table) > MAX_INSTALLED:
            problems.append((skip, f"{INSTALLED_TABLE} entries {MAX_INSTALLED} to {len(table) - 1} "
                                   f"skipped: at most {MAX_INSTALLED} are started"))
        seen: set[str] = set()
        for index, item in enumerate(table[:MAX_INSTALLED]):
            try:
                entry = self._installed_entry(item)
            except ValueError as exc:
                problems.append((skip, f"{INSTALLED_TABLE} entry {index} skipped: {exc}"))
                continue
            if entry.image in seen:
                problems.append((skip, f"{INSTALLED_TABLE} entry {index} skipped: {entry.image} is "
                                       "listed twice"))
                continue
            seen.add(entry.image)
            entries.append(entry)
        return entries, problems

    def _installed_entry(self, item: Any) -> StartupEntry:
        """One table entry, checked. Raises ValueError naming what is wrong."""
        if not isinstance(item, dict):
            raise ValueError(f"not a map but {type(item).__name__}")
        unknown = sorted(str(k)[:40] for k in item if k not in ("image", "argv", "version"))
        if unknown:
            raise ValueError(f"unknown field {unknown[0]!r}")
        image, argv = item.get("image"), item.get("argv", [])
        if not isinstance(image, str):
            raise ValueError(f"'image' must be a path string, got {type(image).__name__}")
        try:
            image = normalize(image)
            kind = self.fs.stat(image)["type"]
        except (OSError, ValueError) as exc:  # UnicodeError is a ValueError
            raise ValueError(f"image {image[:200]!r}: {getattr(exc, 'strerror', None) or exc}") from None
        if kind != "file":
            raise ValueError(f"image {image!r} is a {kind}, not a file")
        if not isinstance(argv, list) or len(argv) > MAX_ARGV or not all(isinstance(a, str) for a in argv):
            raise ValueError(f"'argv' must be a list of at most {MAX_ARGV} strings")
        version = item.get("version")
        if version is not None and (not isinstance(version, str) or len(version) > 64):
            raise ValueError("'version' must be a string of at most 64 characters")
        return StartupEntry(image, tuple(argv), version)

    def _run(self, process: Process) -> None:
        try:
            self._run_app(process)
        except app_threads.AsyncProcessExit:
            pass  # landed in an except clause of _run_app: its finally has ended the process

    def _run_app(self, process: Process) -> None:
        from orbitos.kernel.api import Sys  # the API sits on the kernel; imported here to keep it one-way

        app_threads.register_main(process)
        process.cpu_mark = time.thread_time()  # CPU accounting, not simulated time
        code, reason = 0, "exited"
        try:
            if process.manifest.isolation == "process":
                code, reason = isolation.serve(self, process, Sys(self, process))
            else:
                entry = load_entry(process.package, process.name, process.image.code,
                                   process.manifest.entry)
                result = entry(Sys(self, process), list(process.argv))
                code = result if isinstance(result, int) and not isinstance(result, bool) else 0
        except app_threads.AsyncProcessExit:
            code, reason = process.kill_code, process.kill_reason or "killed"
        except ProcessExit as exc:
            code, reason = exc.code, exc.reason
        except OSError as exc:
            code, reason = EXIT_CRASH, f"crashed: OSError: {exc}"
        except BaseException as exc:  # the app's bug ends the app, never the kernel
            code, reason = EXIT_CRASH, f"crashed: {type(exc).__name__}: {exc}"
        finally:
            while True:  # an exit raised into the thread may still land here: retry until shielded
                try:
                    with process.exit_lock:
                        process.in_syscall = True  # kernel code from here on: no exit raised into it
                    app_threads.cancel_exit(threading.get_ident())
                    break
                except app_threads.AsyncProcessExit:
                    code, reason = process.kill_code, process.kill_reason or "killed"
            self._finish(process, code, reason)

    def _finish(self, process: Process, code: int, reason: str) -> None:
        """Release what the process held, record its end, wake its waiters, restart it if its
        policy says so. Each release step is guarded: one that fails is an event
        (FINISH_STEP_FAILED) and the process still ends (never a zombie)."""
        for step in (self._free_device_memory, app_threads.unregister_main, self._close_all,
                     self._unbind_ports, lambda p: unload(p.package)):
            try:
                step(process)
            except Exception as exc:  # noqa: BLE001 - a failed release must not leave a zombie
                self.events.emit("FINISH_STEP_FAILED", "error", process.name, f"pid {process.pid}: "
                                 f"releasing failed: {type(exc).__name__}: {str(exc)[:200]}",
                                 pid=process.pid)
        process.exit_code, process.reason, process.state = code, reason, "exited"
        severity = "info" if code == 0 else "warning"
        self.events.emit("APP_EXIT", severity, process.name, f"pid {process.pid} ended: {reason} "
                         f"(code {code})", pid=process.pid, code=code, reason=reason)
        process.exited.set()
        for waiter in list(process.waiters):
            waiter.wakeup.set()
        self._tell_exit(process, code, reason)
        self._forget_old_exits()
        self._maybe_restart(process, code, reason)

    def on_process_exit(self, listener: Callable[[dict[str, Any]], None]) -> None:
        """Call `listener` with {satellite, pid, name, exit_code, reason, ended_utc_s} when any
        process ends (in the ending process's thread, after its end is recorded: keep it short,
        never block). A listener that raises is an event (EXIT_LISTENER_FAILED), never the end
        of the process's cleanup."""
        self._exit_listeners.append(listener)

    def _tell_exit(self, process: Process, code: int, reason: str) -> None:
        ended = {"satellite": self.satellite_id, "pid": process.pid, "name": process.name,
                 "exit_code": code, "reason": reason, "ended_utc_s": self.clock.now()}
        for listener in list(self._exit_listeners):
            try:
                listener(dict(ended))
            except Exception as exc:  # noqa: BLE001 - a listener's bug must not leave a zombie
                self.events.emit("EXIT_LISTENER_FAILED", "error", process.name, f"pid {process.pid}: "
                                 f"exit listener failed: {type(exc).__name__}: {str(exc)[:200]}",
                                 pid=process.pid)

    def _free_device_memory(self, process: Process) -> None:
        for handle, (driver, _) in list(process.gpu_allocations.items()):
            try:
                driver.open()  # the app may have closed its descriptor: the kernel frees for it
                try:
                    driver.ioctl("free", handle=handle)
                finally:
                    driver.close()
            except OSError as exc:
                self.events.emit("FREE_FAILED", "warning", process.name,
                                 f"device memory of pid {process.pid} not freed: {exc}")
        process.gpu_allocations.clear()

    def _close_all(self, process: Process) -> None:
        for fd in list(process.fds):
            self._close_handle(process, process.fds.pop(fd))

    def _unbind_ports(self, process: Process) -> None:
        with self._lock:
            for port in [p for p, b in self.ports.items() if b.pid == process.pid]:
                del self.ports[port]

    def _forget_old_exits(self) -> None:
        """Keep the records of the last `exited_kept` ended processes (for wait and ps); older
        ones are dropped, so the table does not grow with every process ever started."""
        with self._lock:
            ended = [pid for pid, p in self.processes.items() if p.exited.is_set()]
            for pid in ended[:max(0, len(ended) - self.config.exited_kept)]:
                del self.processes[pid]

    def _maybe_restart(self, process: Process, code: int, reason: str) -> None:
        policy = process.manifest.watchdog
        failed = code != 0 and not reason.startswith(("killed", "kernel shutdown", "limit"))
        wanted = policy.restart == "always" or (policy.restart == "on-failure" and failed)
        if not (wanted and process.restart_on_end and self.state == "running"):
            return
        if process.restarts >= policy.max_restarts:
            self.events.emit("RESTART_LIMIT", "error", process.name, f"{process.name} not restarted: "
                             f"{process.restarts} restarts already", pid=process.pid)
            return
        try:
            new_pid = self.spawn(b"", process.argv, process.parent, process.restarts + 1, process.image)
        except OSError as exc:  # a process limit reached meanwhile, or the kernel stopping
            self.events.emit("RESTART_FAILED", "error", process.name, f"{process.name} not restarted: "
                             f"{exc.strerror or exc}", pid=process.pid)
            return
        self.counters["restarts"] += 1
        self.events.emit("APP_RESTART", "warning", process.name, f"{process.name} restarted as pid "
                         f"{new_pid} after: {reason}", old_pid=process.pid, pid=new_pid)

    def kill(self, pid: int, reason: str = "killed", restart: bool = False,
             code: int = EXIT_KILLED) -> None:
        """End a process: at once if it waits in a syscall; an isolated app's OS process gets
        SIGTERM, then SIGKILL after a grace; a threaded app running its own code gets ProcessExit
        raised at its next bytecode boundary (a thread blocked in C code, such as time.sleep,
        ends when it returns to Python). Raises OSError(ESRCH) for an unknown or finished pid."""
        process = self.process(pid)
        if not process.alive:
            raise OSError(errno.ESRCH, f"process {pid} has already ended")
        self._end(process, reason, restart, code)

    def _end(self, process: Process, reason: str, restart: bool, code: int) -> None:
        if process.kill_reason is None:
            process.kill_reason = reason if reason.startswith(("killed", "kernel", "watchdog", "limit")) \
                else f"killed: {reason}"
            process.kill_code = code
            process.restart_on_end = restart
        process.suspended = False
        process.wakeup.set()
        self._interrupt(process)

    def _interrupt(self, process: Process) -> None:
        """Make a process that must end notice it without its help (see `kill`)."""
        if process.os_process is not None:
            process.os_process.terminate()
            return
        if process.manifest.isolation == "process":
            return  # its OS process is not started yet: the kernel thread checks before it starts
        with process.exit_lock:
            if process.alive and not process.in_syscall and process.thread_ident is not None:
                if app_threads.raise_exit(process.thread_ident):
                    process.exit_requests += 1
                    self.counters["exit_requests"] += 1

    def enforce_cpu_limits(self) -> None:
        """End every process over its CPU limit, measured from outside while it runs its own
        code: a threaded app's thread CPU clock, an isolated app's OS process (/proc). Also
        raises the exit again into processes that were told to end and still run (an app may
        catch BaseException). Called by the host's wall-clock CPU sweep; safe from any thread
        (it takes no lock that can wait on the clock)."""
        for process in [p for p in list(self.processes.values()) if p.alive]:  # no lock: never waits
            if process.kill_reason is not None:
                self._interrupt(process)
                continue
            limit = process.manifest.limits.cpu_seconds
            if process.os_process is not None:
                used = process.os_process.cpu_s()
            else:
                charged, mark = process.acct.cpu_s, process.cpu_mark
                now = app_threads.thread_cpu_s(process.cpu_clock_id)
                if process.in_syscall or now is None:
                    continue  # the kernel is working for it (charged at its next syscall); or
                    # it entered one while we read: enter() sets in_syscall before it charges
                used = charged + now - mark
            if used is None or used <= limit:
                continue
            reason = f"limit: CPU time {used:.2f} s over {limit:g} s"
            self.counters["cpu_limit_kills"] += 1
            self.events.emit("LIMIT_EXCEEDED", "warning", process.name,
                             f"pid {process.pid} stopped: {reason}", pid=process.pid)
            self._end(process, reason, restart=False, code=EXIT_LIMIT)

    def wait(self, pid: int, timeout_s: float | None = None) -> dict[str, Any]:
        """Block (on the clock) until pid ends; its exit code and reason.
        Raises ESRCH for an unknown pid, ETIMEDOUT when it is still running at the timeout."""
        process = self.process(pid)
        if not process.exited.is_set():
            self.clock.wait(process.exited, timeout_s)
        if not process.exited.is_set():
            raise OSError(errno.ETIMEDOUT, f"process {pid} still running after {timeout_s} s")
        return {"pid": pid, "name": process.name, "exit_code": process.exit_code, "reason": process.reason}

    def ps(self) -> list[dict[str, Any]]:
        with self._lock:
            return [p.info() for p in self.processes.values()]

    # -- blocking and the syscall boundary ---------------------------------------------------------
    def enter(self, process: Process) -> None:
        """Start of every syscall: end the process if it must end, hold it while suspended,
        account its CPU and enforce the CPU limit."""
        if threading.get_ident() != process.thread_ident:
            raise OSError(errno.EPERM, "syscalls must come from the process's own thread")
        with process.exit_lock:  # from here, no exit is raised into the thread (see kill)
            process.in_syscall = True
            if process.kill_reason is not None:
                app_threads.cancel_exit(process.thread_ident)  # ends below, at the boundary
        try:
            self._check_end(process)
            while process.suspended:
                process.state = "suspended"
                process.wakeup.clear()
                if process.suspended and process.kill_reason is None:
                    self.clock.wait(process.wakeup)
                self._check_end(process)
            process.state = "running"
            process.last_progress_utc_s = self.clock.now()
            cpu = time.thread_time()
            process.acct.cpu_s += cpu - process.cpu_mark
            process.cpu_mark = cpu
            process.acct.syscalls += 1
            self.counters["syscalls"] += 1
            limit = process.manifest.limits.cpu_seconds
            if process.acct.cpu_s > limit:
                self._limit(process, f"limit: CPU time {process.acct.cpu_s:.2f} s over {limit:g} s")
        except BaseException:
            process.in_syscall = False  # back in the app's code (which may catch it)
            raise

    def leave(self, process: Process) -> None:
        """End of every syscall. The syscall's own CPU is charged to the app at its next entry."""
        process.in_syscall = False
        process.last_progress_utc_s = self.clock.now()
        if process.state != "exited":
            process.state = "running"

    def _check_end(self, process: Process) -> None:
        if process.kill_reason is not None:
            raise ProcessExit(process.kill_code, process.kill_reason)
        if self.state == "stopping":
            raise ProcessExit(EXIT_KILLED, "kernel shutdown")

    def _limit(self, process: Process, reason: str) -> None:
        self.events.emit("LIMIT_EXCEEDED", "warning", process.name, f"pid {process.pid} stopped: {reason}",
                         pid=process.pid)
        process.restart_on_end = False
        raise ProcessExit(EXIT_LIMIT, reason)

    def block(self, process: Process, timeout_s: float | None, ready: Callable[[], bool]) -> bool:
        """Wait on the clock until ready() (True) or the timeout (False); ends the process if it is
        killed meanwhile."""
        deadline = None if timeout_s is None else self.clock.now() + timeout_s
        process.state = "blocked"
        try:
            while True:
                process.wakeup.clear()
                self._check_end(process)
                if ready():
                    return True
                if deadline is not None and self.clock.now() >= deadline:
                    return False
                remaining = None if deadline is None else deadline - self.clock.now()
                self.clock.wait(process.wakeup, remaining)
        finally:
            process.state = "running"

    def account_energy(self, process: Process, energy_j: float) -> None:
        """Add device energy to a process; stop it if its energy per orbit is over the limit."""
        if energy_j <= 0:
            return
        now = self.clock.now()
        process.acct.energy_j += energy_j
        window = process.energy_window
        window.append((now, energy_j))
        while window and window[0][0] < now - self.governor.horizon_s:
            window.popleft()
        used_wh = sum(e for _, e in window) / 3600.0
        limit = process.manifest.limits.energy_wh_per_orbit
        if used_wh > limit:
            self._limit(process, f"limit: device energy {used_wh:.3f} Wh in the last orbit over {limit:g} Wh")

    def deliver(self, port: int, message: Any, sender: str) -> None:
        """Put a message for `port` in its queue (from this satellite or the ISL network).
        Raises ECONNREFUSED when nothing is bound there, ENOBUFS when its queue is full (in
        messages or in bytes)."""
        with self._lock:
            binding = self.ports.get(port)
            if binding is None:
                raise OSError(errno.ECONNREFUSED, f"{self.satellite_id}: nothing is bound to port {port}")
            frame = encode({"m": message})
            if len(binding.queue) >= binding.depth or binding.queued_bytes + len(frame) > binding.max_bytes:
                binding.overflows += 1
                raise OSError(errno.ENOBUFS, f"{self.satellite_id}: port {port} queue is full "
                                             f"({len(binding.queue)} messages, {binding.queued_bytes} bytes)")
            copy = decode_body(frame[4:])["m"]  # the receiver gets its own copy
            binding.queue.append({"port": port, "data": copy, "time_utc_s": self.clock.now(),
                                  "sender": sender, "_bytes": len(frame)})
            binding.queued_bytes += len(frame)
        binding.notify()

    # -- power ----------------------------------------------------------------------------------
    def power_status(self, max_age_s: float | None = None) -> dict[str, Any]:
        """The EPS state (cached for eps_refresh_s of simulated time). Raises OSError(ENODEV)
        without an EPS."""
        if self.eps is None:
            raise OSError(errno.ENODEV, "no EPS on this satellite")
        max_age = self.config.eps_refresh_s if max_age_s is None else max_age_s
        now = self.clock.now()
        if self._eps_cache is None or now - self._eps_cache[0] > max_age:
            self._eps_cache = (now, self.eps.battery())
        status = dict(self._eps_cache[1])
        status["safe_mode"] = self.governor.safe_mode
        return status

    def apply_safe_mode(self, soc: float) -> None:
        """Enter or leave safe mode for this state of charge (with hysteresis), and while in it
        hold exactly the priority classes this state of charge calls for: apps of a class that
        became held are suspended, apps of a class no longer held are resumed (each change an
        event), apps started during safe mode included."""
        change = self.governor.safe_mode_change(soc)
        if change == "enter":
            self.counters["safe_mode_entries"] += 1
            held = self.governor.held_priorities(soc)
            suspended, _ = self._hold(held)
            self.events.emit("SAFE_MODE_ENTER", "critical", "governor", f"battery at {soc:.1%}: safe "
                             f"mode, {len(suspended)} apps suspended ({', '.join(held)})",
                             soc=soc, suspended=suspended, held=list(held))
        elif change == "leave":
            _, resumed = self._hold(())
            self.events.emit("SAFE_MODE_LEAVE", "warning", "governor", f"battery at {soc:.1%}: safe "
                             f"mode left, {len(resumed)} apps resumed", soc=soc, resumed=resumed)
        elif self.governor.safe_mode:
            held = self.governor.held_priorities(soc)
            suspended, resumed = self._hold(held)
            if suspended:
                self.events.emit("SAFE_MODE_SUSPEND", "warning", "governor", f"battery at {soc:.1%}: "
                                 f"{len(suspended)} more apps suspended ({', '.join(held)} held)",
                                 soc=soc, suspended=suspended, held=list(held))
            if resumed:
                self.events.emit("SAFE_MODE_RESUME", "warning", "governor", f"battery at {soc:.1%}: "
                                 f"{len(resumed)} apps resumed (only {', '.join(held)} held)",
                                 soc=soc, resumed=resumed, held=list(held))

    def enter_safe_mode(self, reason: str) -> None:
        """Enter safe mode without a battery reading (a system service keeps failing): hold the
        classes held at the critical level. Left, as always, once the battery reads the reserve."""
        if not self.governor.enter_safe_mode():
            return
        self.counters["safe_mode_entries"] += 1
        held = self.governor.held_priorities(None)
        suspended, _ = self._hold(held)
        self.events.emit("SAFE_MODE_ENTER", "critical", "governor", f"safe mode: {reason}; "
                         f"{len(suspended)} apps suspended ({', '.join(held)})",
                         suspended=suspended, held=list(held), reason=reason[:200])

    def _hold(self, held: tuple[str, ...]) -> tuple[list[int], list[int]]:
        """Suspend the live apps of the held classes, resume those safe mode held that are not;
        (suspended now, resumed now), pids in order."""
        suspended, resumed = [], []
        for process in sorted(self.live(), key=lambda p: p.pid):
            hold = process.manifest.priority in held
            if hold and process.pid not in self._suspended_by_safe_mode:
                process.suspended = True
                self._suspended_by_safe_mode.add(process.pid)
                suspended.append(process.pid)
            elif not hold and process.pid in self._suspended_by_safe_mode:
                self._suspended_by_safe_mode.discard(process.pid)
                if process.pid not in self._suspended_by_brownout:  # a brownout still holds it
                    process.suspended = False
                    process.wakeup.set()
                resumed.append(process.pid)
        self._suspended_by_safe_mode &= {p.pid for p in self.live()}  # forget the ended ones
        return suspended, resumed

    def begin_brownout(self, reason: str, until_utc_s: float | None = None) -> list[int]:
        """The bus sheds load (a brownout): the live apps of the classes in BROWNOUT_HELD are
        suspended, and apps of those classes started meanwhile are held too, until
        `end_brownout`. An event BROWNOUT (critical) says why; returns the pids suspended now."""
        self.brownout = reason[:200]
        suspended = []
        for process in sorted(self.live(), key=lambda p: p.pid):
            if process.manifest.priority in BROWNOUT_HELD and process.pid not in self._suspended_by_brownout:
                process.suspended = True
                self._suspended_by_brownout.add(process.pid)
                suspended.append(process.pid)
        self.events.emit("BROWNOUT", "critical", "eps", f"brownout: {self.brownout}; load shed, "
                         f"{len(suspended)} apps suspended ({', '.join(BROWNOUT_HELD)})",
                         reason=self.brownout, suspended=suspended, until_utc_s=until_utc_s)
        return suspended

    def end_brownout(self) -> list[int]:
        """The brownout is over: apps it suspended are resumed, unless safe mode holds them.
        An event BROWNOUT_END; returns the pids resumed (nothing when no brownout was on)."""
        if self.brownout is None:
            return []
        reason, self.brownout = self.brownout, None
        resumed = []
        live = {p.pid: p for p in self.live()}
        for pid in sorted(self._suspended_by_brownout):
            process = live.get(pid)
            if process is not None and pid not in self._suspended_by_safe_mode:
                process.suspended = False
                process.wakeup.set()
                resumed.append(pid)
        self._suspended_by_brownout.clear()
        self.events.emit("BROWNOUT_END", "warning", "eps", f"brownout over ({reason}): "
                         f"{len(resumed)} apps resumed", reason=reason, resumed=resumed)
        return resumed

    # -- services -------------------------------------------------------------------------------
    def escalate(self, level: str, service: str, reason: str) -> None:
        """A system service keeps failing (called by its supervisor): 'safe_mode' enters safe
        mode, 'restart' asks for a kernel restart."""
        if level == "safe_mode":
            self.enter_safe_mode(reason)
        elif level == "restart":
            self.request_restart(reason)
        else:
            raise ValueError(f"unknown escalation level {level!r}")

    def request_restart(self, reason: str) -> None:
        """Ask for a kernel restart: an event KERNEL_RESTART_REQUESTED, counted, then
        `on_restart_request(reason)` if the owner of the kernel hooked it (the runtime rebuilds
        the kernel from its hardware). The kernel does not restart itself: without a hook the
        event is all that happens, and the services keep retrying at their longest backoff."""
        self.counters["restart_requests"] += 1
        hooked = self.on_restart_request is not None
        self.events.emit("KERNEL_RESTART_REQUESTED", "critical", "kernel", f"kernel restart "
                         f"requested: {reason}" + ("" if hooked else " (no restart handler: "
                                                   "services keep retrying)"), reason=reason[:200])
        if hooked:
            self.on_restart_request(reason)

    def housekeeping(self) -> dict[str, Any]:
        """One housekeeping record: power, storage, processes, counters, services' liveness,
        drivers' errors, and each of `housekeeping_sections` (the runtime's "control" counters).
        Does not raise for a failing EPS or section: the record then has `power_error` (or
        `<name>_error`) instead."""
        states: dict[str, int] = {}
        for process in list(self.processes.values()):
            states[process.state] = states.get(process.state, 0) + 1
        record: dict[str, Any] = {"satellite": self.satellite_id, "time_utc_s": self.clock.now(),
                                  "uptime_s": self.clock.now() - self.boot_utc_s,
                                  "safe_mode": self.governor.safe_mode, "processes": states,
                                  "brownout": self.brownout,
                                  "counters": dict(self.counters),
                                  "bus": {"published": self.bus.published, "delivered": self.bus.delivered,
                                          "overflows": self.bus.overflows},
                                  "events": dict(self.events.counts),
                                  "deferrals": self.governor.deferrals,
                                  "services": {name: service.snapshot()
                                               for name, service in self.services.items()}}
        if self.tree is not None:
            record["drivers"] = {name: {k: driver.counters[k] for k in ("calls", "errors", "bad_replies")
                                        if k in driver.counters}
                                 for name, driver in self.tree.drivers.items()}
        if self.eps is not None:
            try:
                power = self.power_status(max_age_s=0.0)
            except OSError as exc:
                record["power_error"] = str(exc)[:500]
            else:
                record["power"] = {k: power[k] for k in ("soc", "energy_wh", "generation_w", "load_w",
                                                        "in_eclipse", "next_eclipse_utc_s")}
        if self.fs is not None:
            record["storage"] = {"files": len(self.fs.files()), "corrupt_found": self.fs.corrupt_found}
        for name, section in list(self.housekeeping_sections.items()):
            try:
                record[name] = section()
            except Exception as exc:  # noqa: BLE001 - a failing section never costs the record
                record[f"{name}_error"] = f"{type(exc).__name__}: {exc}"[:500]
        return record

    def _publish_event(self, event: Any) -> None:
        if event.severity in ("warning", "error", "critical"):
            try:
                self.bus.publish(f"events.{self.satellite_id}", event.to_dict(), "kernel")
            except OSError:
                pass  # an event too large for the bus stays in the log

    # -- descriptors ----------------------------------------------------------------------------
    def _close_handle(self, process: Process, handle: Any) -> None:
        try:
            handle.close(self, process)
        except OSError as exc:
            self.events.emit("CLOSE_FAILED", "warning", process.name, f"closing a descriptor: {exc}")
