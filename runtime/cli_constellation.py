"""The CLI's constellation commands: up, status, deploy, ps, logs, connect, down, submit, tasks.

`orbitos up CONFIG` boots the constellation and stays in the foreground (Ctrl-C, SIGTERM or
`orbitos down` from another shell stops it), watching for lost nodes and printing incidents.
It holds the lock `$ORBITOS_HOME/up.lock` (default `~/.orbitos`; a second `up` there is refused,
naming the first) and writes the session file `$ORBITOS_HOME/session.json` (address, pid, config,
epoch, ...). The other commands check that the recorded pid still runs and that the address
accepts a connection, then join that cluster (or the one `--address` names) within
ATTACH_TIMEOUT_S and find the constellation's hosts by name; no command waits on a dead cluster.

Exit status: 0 on success; 1 when the command ran but something it did failed (a refused task, a
failed `connect -c` command, a cluster that does not answer in time); 2 for bad input or when no
constellation runs. Each failure prints one line `orbitos: error: ...` on stderr.
"""
from __future__ import annotations

import argparse
import cmd
import fcntl
import json
import logging
import os
import shlex
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, TextIO

from orbitos.runtime.cli_output import (error_line, is_terminal, iso_utc, mission_elapsed, print_json,
                                print_table)
from orbitos.runtime.client import Client, OutOfReach

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
CONNECT_TIMEOUT_S = 3.0   # a TCP connection to the GCS port
ATTACH_TIMEOUT_S = 12.0   # joining Ray and finding the constellation's actors
CALL_TIMEOUT_S = 60.0     # one control command on a joined constellation
FOLLOW_POLL_S = 1.0       # `logs --follow` asks for new events this often (wall seconds)
SEVERITIES = ("debug", "info", "warning", "error", "critical")
CONSTELLATION_COMMANDS = ("up", "status", "deploy", "ps", "logs", "connect", "down", "submit", "tasks",
                          "fault")


class CliError(Exception):
    """Bad input for a constellation command; its message is what the user reads."""


class CommandFailed(Exception):
    """The command ran but what it did failed (exit status 1); the message is already printed."""


def orbitos_home() -> Path:
    return Path(os.environ.get("ORBITOS_HOME") or Path.home() / ".orbitos")


def session_path() -> Path:
    return orbitos_home() / "session.json"


def _read_session() -> dict[str, Any] | None:
    """The session file's record, None when there is none. Raises CliError for a file that is
    not a session (a directory, not JSON, keys missing)."""
    path = session_path()
    if not path.exists():
        return None
    try:
        session = json.loads(path.read_text())
        if not isinstance(session, dict) or not isinstance(session["address"], str):
            raise ValueError("no address")
        int(session["pid"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise CliError(f"{path} is not an orbitos session file ({detail}); remove it") from None
    return session


def pid_alive(pid: Any) -> bool:
    """Whether process `pid` runs (a zombie does not)."""
    import psutil

    try:
        return psutil.Process(int(pid)).status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, ValueError, TypeError, OverflowError):
        return False
    except psutil.AccessDenied:
        return True


def _host_port(address: str) -> tuple[str, int]:
    """HOST:PORT (a ray:// or other scheme prefix allowed). Raises CliError for anything else."""
    text = address.split("://", 1)[-1]
    host, _, port = text.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not host or not 0 < number < 65536:
        raise CliError(f"address {address!r} is not HOST:PORT")
    return host.strip("[]"), number


def check_reachable(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Raises CliError when nothing accepts a TCP connection at `address` within `timeout_s`."""
    host, port = _host_port(address)
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise CliError(f"no Ray cluster answers at {address} ({reason})") from None


def _address(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """The Ray address to join and the session record ({} without one): --address (or
    $RAY_ADDRESS), else the running session's. Checks in seconds that `up` still runs and that
    the address accepts a connection. Raises CliError naming what is wrong."""
    given = getattr(args, "address", None) or os.environ.get("RAY_ADDRESS")
    session: dict[str, Any] = {}
    if given:
        # Ray documents token authentication through RAY_AUTH_MODE=token and a token
        # (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token); since Ray 2.59 a local
        # cluster has it on, so a driver that joins by address must ask for it too.
        os.environ.setdefault("RAY_AUTH_MODE", "token")
        address = given
    else:
        found = _read_session()
        if found is None:
            raise CliError(f"no constellation is running (no session file {session_path()}); start one "
                           "with `orbitos up CONFIG`, or give --address")
        if not pid_alive(found["pid"]):
            raise CliError(f"stale session {session_path()}: `orbitos up` (pid {found['pid']}) no longer "
                           "runs; start it again with `orbitos up CONFIG` (it replaces the file)")
        session = found
        os.environ.setdefault("RAY_AUTH_MODE", session.get("ray_auth_mode", "token"))
        address = session["address"]
    check_reachable(address)
    return address, session


class Unresponsive(Exception):
    """A Ray call that did not return in its bound; the process must exit (Ray threads hang)."""


def bounded(call: Callable[[], Any], timeout_s: float, what: str) -> Any:
    """call() in a daemon thread, its result or its exception; Unresponsive past `timeout_s`."""
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = call()
        except BaseException as exc:  # handed to the caller as it is
            result["error"] = exc

    thread = threading.Thread(target=target, daemon=True, name=f"orbitos-{what}")
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise Unresponsive(f"{what} did not answer within {timeout_s:g} s")
    if "error" in result:
        raise result["error"]
    return result.get("value")


def operator_key_path() -> Path:
    """Where `up` keeps the operator key it generates (mode 0600) or reuses."""
    return session_path().parent / "operator.key"


def _operator_key(path: Path | None) -> Any:
    """The operator private key at `path` (the session's, else $ORBITOS_HOME/operator.key);
    None when there is none. Raises CliError for a file that is not an Ed25519 key."""
    from orbitos.kernel.image import ImageError, load_private_key

    if path is None:
        try:
            recorded = json.loads(session_path().read_text()).get("operator_key")
        except (OSError, ValueError, AttributeError):
            recorded = None
        path = Path(recorded) if isinstance(recorded, str) else operator_key_path()
        if not path.exists():
            return None
    try:
        return load_private_key(path)
    except ImageError as exc:
        raise CliError(f"operator key: {exc.strerror}") from None


def _attach(args: argparse.Namespace) -> Any:
    """The running constellation, joined within ATTACH_TIMEOUT_S. Raises CliError or
    Unresponsive naming what is wrong."""
    address, session = _address(args)  # first: it may set RAY_AUTH_MODE, which Ray reads on import
    from orbitos.runtime.constellation_run import ConstellationRun

    # Joining from a thread (to bound it) makes Ray warn that it set no SIGTERM handler: the
    # command's own main thread handles signals, so that warning says nothing to the user.
    logging.getLogger("ray._private.worker").addFilter(
        lambda record: "SIGTERM handler is not set" not in record.getMessage())

    operator_key = _operator_key(None)
    try:
        run = bounded(lambda: ConstellationRun.attach(address, operator_key=operator_key), ATTACH_TIMEOUT_S,
                      f"Ray at {address}")
    except Unresponsive as exc:
        raise Unresponsive(f"{exc} (a cluster with token authentication needs RAY_AUTH_MODE=token and "
                           "its token in RAY_AUTH_TOKEN or ~/.ray/auth_token)") from None
    except LookupError as exc:
        raise CliError(str(exc.args[0] if exc.args else exc)) from None
    except (ConnectionError, RuntimeError) as exc:
        raise CliError(f"cannot join the Ray cluster at {address}: {' '.join(str(exc).split())[:300]}") from None
    if operator_key is None:
        raise CliError(f"no operator key at {operator_key_path()}: control requests must be signed by "
                       "the key `orbitos up` wrote there (copy it from the machine that ran `up`)")
    run.session = session  # type: ignore[attr-defined]  # the epoch for mission elapsed time
    return run


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_parsers(commands: Any) -> None:
    def address(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--address", default=None,
                            help="Ray cluster address HOST:PORT (default: the running session's)")

    def as_json(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--json", action="store_true", help="print the result as JSON")

    up = commands.add_parser(
        "up", help="boot a constellation on Ray and keep it running",
        description="Boot every satellite of CONFIG as a kernel on Ray (an embedded local Ray, or "
                    "the cluster at --address) and stay in the foreground until Ctrl-C or "
                    "`orbitos down`. One `up` per ORBITOS_HOME: a second one is refused.")
    up.add_argument("config", type=Path, help="constellation config (TOML)")
    up.add_argument("--address", default=None, help="join this Ray cluster (default: start a local one)")
    up.add_argument("--speed", type=float, default=1.0, help="simulated seconds per second (default 1: "
                                                              "real time, for hardware in the loop)")
    up.add_argument("--hours", type=float, default=24.0, help="simulated horizon (default 24)")
    up.add_argument("--placement", choices=("packed", "node"), default="packed",
                    help="packed: several satellites per host actor; node: one per Ray node "
                         "labelled orbitos.sat=<id>")
    up.add_argument("--hosts", type=_positive_int, default=None, help="host actors when packed (default: CPUs)")
    up.add_argument("--satellites", nargs="+", default=None, help="boot only these satellites")
    up.add_argument("--keyring", type=Path, nargs="+", default=[],
                    help="public keys (.pub) or directories of them that app images must be signed by")
    up.add_argument("--state-dir", type=Path, default=None,
                    help="where satellites keep their storage (default: a temporary directory)")
    up.add_argument("--num-cpus", type=_positive_int, default=None, help="CPUs of the embedded Ray (default: all)")
    up.add_argument("--housekeeping", type=float, default=10.0, help="housekeeping period, simulated s")

    status = commands.add_parser("status", help="a table of the satellites: state, SoC, links, apps, "
                                                "where each runs; the simulated time")
    status.add_argument("--json", action="store_true",
                        help="print the rows as one JSON list (each with sim_now_utc, mission_elapsed)")
    address(status)
    deploy = commands.add_parser("deploy", help="install and start a signed app image")
    deploy.add_argument("image", type=Path)
    target = deploy.add_mutually_exclusive_group(required=True)
    target.add_argument("--to", metavar="SAT", help="one satellite")
    target.add_argument("--all", action="store_true", help="every satellite")
    deploy.add_argument("--arg", action="append", default=[], help="an argument for the app (repeatable)")
    as_json(deploy)
    address(deploy)
    ps = commands.add_parser("ps", help="processes of a satellite")
    ps.add_argument("satellite")
    as_json(ps)
    address(ps)
    logs = commands.add_parser("logs", help="the events of a satellite, with their times",
                               description="The last events of a satellite (time in ISO-8601 UTC and "
                                           "mission elapsed time), optionally filtered by severity; "
                                           "-f keeps printing new ones until Ctrl-C.")
    logs.add_argument("satellite")
    logs.add_argument("--last", type=_positive_int, default=30, help="how many (default 30)")
    logs.add_argument("--severity", choices=SEVERITIES, default="debug", type=str.lower,
                      help="only events at or above this level")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new events (Ctrl-C ends)")
    as_json(logs)
    address(logs)
    connect = commands.add_parser(
        "connect", help="a shell on one satellite that reaches all the others over the ISL network",
        description="Attach to one satellite and reach the whole constellation through it; every "
                    "request crosses the ISL network with its real latency. Commands: " +
                    ", ".join(sorted(n[3:] for n in dir(ConnectShell) if n.startswith("do_"))) +
                    ". With -c, the exit status is 1 if any command failed.")
    connect.add_argument("satellite")
    connect.add_argument("-c", "--command", action="append", default=[], dest="shell_commands",
                         help="run this shell command and exit (repeatable)")
    address(connect)
    down = commands.add_parser("down", help="stop the running constellation")
    as_json(down)
    address(down)
    submit = commands.add_parser(
        "submit", help="hand tasks to the global scheduler",
        description="Submit the tasks of a TOML task file ([[tasks]] with name, ops, deadline_s, "
                    "inputs, output_to, priority, depends_on, image (a signed app image, path "
                    "relative to the file), argv; docs/scheduler.md). Prints where each was placed "
                    "or why it was refused; the exit status is 1 if any was refused.")
    submit.add_argument("taskfile", type=Path)
    as_json(submit)
    address(submit)
    tasks = commands.add_parser("tasks", help="the scheduler's tasks: placement, status, reasons")
    as_json(tasks)
    address(tasks)
    add_fault_parser(commands, address)


def _trusted_keys(paths: list[Path]) -> tuple[bytes, ...]:
    from cryptography.hazmat.primitives import serialization

    from orbitos.kernel.image import ImageError, Keyring

    for path in paths:
        if not path.exists():
            raise CliError(f"--keyring {path}: no such file or directory")
    try:
        keyring = Keyring.from_files(paths)
    except ImageError as exc:
        raise CliError(str(exc.strerror or exc)) from None
    if not keyring.keys:
        raise CliError(f"--keyring {' '.join(map(str, paths))}: no public keys (.pub) found")
    return tuple(key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
                 for key in keyring.keys.values())


def readable_file(path: Path, what: str) -> Path:
    """`path` if it is a readable regular file; CliError naming it otherwise."""
    if path.is_dir():
        raise CliError(f"{what} {path}: is a directory, not a file")
    if not path.exists():
        raise CliError(f"{what} {path}: file not found")
    return path


def _claim_home() -> int:
    """Take `up`'s lock in ORBITOS_HOME (held until this process ends); the lock's fd. Refuses,
    naming the running session, when another `up` holds it or its recorded pid runs."""
    home = orbitos_home()
    try:
        home.mkdir(parents=True, exist_ok=True)
        fd = os.open(home / "up.lock", os.O_CREAT | os.O_RDWR, 0o600)
    except OSError as exc:
        raise CliError(f"ORBITOS_HOME {home}: {exc.strerror or exc}") from None
    try:
        session = _read_session()
    except CliError:
        session = None  # a corrupt file is replaced below, if the lock is ours
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        where = f"pid {session['pid']}, Ray at {session['address']}" if session else "starting"
        raise CliError(f"a constellation already runs from {home} ({where}); stop it with `orbitos down` "
                       "or use another ORBITOS_HOME") from None
    if session and pid_alive(session["pid"]) and int(session["pid"]) != os.getpid():
        os.close(fd)
        raise CliError(f"a constellation already runs from {home} (pid {session['pid']}, Ray at "
                       f"{session['address']}); stop it with `orbitos down` or use another ORBITOS_HOME")
    return fd


def _write_session(record: dict[str, Any]) -> None:
    path = session_path()
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(record))
    os.replace(partial, path)  # readers never see half a file


def cmd_up(args: argparse.Namespace, out: TextIO) -> int:
    from orbitos.runtime.constellation_run import ConstellationRun, PlacementError
    from orbitos.sim_hw.constellation import load_constellation
    from orbitos.sim_hw.spec_loading import ConfigError

    if not 0 < args.speed <= 10_000 or not 0 < args.hours <= 24 * 14:
        raise CliError(f"--speed must be in (0, 10000] and --hours in (0, 336]; got {args.speed}, {args.hours}")
    if not 0 < args.housekeeping <= 86_400:
        raise CliError(f"--housekeeping must be in (0, 86400] simulated seconds, got {args.housekeeping}")
    readable_file(args.config, "config")
    if args.state_dir is not None and args.state_dir.exists() and not args.state_dir.is_dir():
        raise CliError(f"--state-dir {args.state_dir}: not a directory")
    keys = _trusted_keys(args.keyring) if args.keyring else ()
    if args.address:
        check_reachable(args.address)
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    try:
        epoch_utc_s = load_constellation(args.config).epoch_utc_s
    except (ConfigError, ValueError) as exc:
        raise CliError(str(exc)) from None
    lock_fd = _claim_home()
    stale = _read_session_quietly()
    if stale:
        print(f"up: replacing the stale session of pid {stale.get('pid')} (it no longer runs)", file=out, flush=True)
    if args.state_dir is not None:
        try:
            args.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CliError(f"--state-dir {args.state_dir}: {exc.strerror or exc}") from None
    operator_path = operator_key_path()
    if not operator_path.exists():  # the operator key signs every control request (runtime.control)
        from orbitos.kernel.image import generate_key

        operator_path.parent.mkdir(parents=True, exist_ok=True)
        generate_key(operator_path)  # mode 0600, and its .pub beside it
    operator_key = _operator_key(operator_path)
    hosts = args.hosts or max(1, min(os.cpu_count() or 1, 8))
    try:
        run = ConstellationRun.up(args.config, hosts=hosts, speed=args.speed, hours=args.hours,
                                  trusted_keys_pem=keys, address=args.address, num_cpus=args.num_cpus,
                                  housekeeping_period_s=args.housekeeping, placement=args.placement,
                                  satellites=tuple(args.satellites) if args.satellites else None,
                                  state_dir=args.state_dir, scheduler=True, operator_key=operator_key)
    except (ConfigError, ValueError, PlacementError) as exc:
        raise CliError(str(exc)) from None
    except ConnectionError as exc:
        raise CliError(f"cannot join the Ray cluster at {args.address}: {' '.join(str(exc).split())[:300]}") from None
    import ray

    stop = {"now": False}

    def request_stop(signum: int, frame: Any) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, request_stop)
    address = ray.get_runtime_context().gcs_address
    session = session_path()
    _write_session({"address": address, "pid": os.getpid(), "config": str(args.config),
                    "satellites": len(run.satellites),
                    "ray_auth_mode": os.environ.get("RAY_AUTH_MODE", "token"),
                    "operator_key": str(operator_path), "epoch_utc_s": epoch_utc_s, "speed": args.speed,
                    "started_utc_s": time.time()})
    print(f"up: {len(run.satellites)} satellites on {len(run.actors)} hosts ({args.placement}) in "
          f"{run.boot_s:.1f} s at {args.speed:g}x; Ray at {address}; "
          f"state in {run.state_dir}", file=out, flush=True)
    if not keys:
        print("warning: no --keyring given: every app image will be refused", file=out, flush=True)
    try:
        while not stop["now"]:
            time.sleep(1.0)  # wall time: how often `up` looks at its cluster, not simulated time
            if not ray.util.list_named_actors(all_namespaces=True):
                print("down: the constellation was stopped", file=out, flush=True)
                break
            for incident in run.check():
                print(f"incident: {', '.join(incident['satellites'])}: node {incident['node_id'][:12]} "
                      f"lost; {incident['action']}", file=out, flush=True)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a user stops `up`: take the constellation down and exit 0
    finally:
        run.down()
        session.unlink(missing_ok=True)
        os.close(lock_fd)
    return 0


def _read_session_quietly() -> dict[str, Any] | None:
    try:
        return _read_session()
    except CliError:
        session_path().unlink(missing_ok=True)  # corrupt: ours to replace, we hold the lock
        return None


def _epoch(run: Any) -> float | None:
    """The constellation's epoch (for mission elapsed time): the session's, else the config's."""
    session = getattr(run, "session", None) or {}
    if session.get("epoch_utc_s") is not None:
        return float(session["epoch_utc_s"])
    try:
        from orbitos.sim_hw.constellation import load_constellation

        return load_constellation(run.config_path).epoch_utc_s
    except Exception:  # the config is on another machine, or gone: no mission time then
        return None


STATE_MARKS = {"lost": "LOST", "moving": "MOVING", "unavailable": "UNAVAILABLE"}


def _status_table(rows: list[dict[str, Any]], out: TextIO, title: str | None = None) -> None:
    placement = [key for key in ("node", "host", "incarnation") if any(key in row for row in rows)]
    columns = ["satellite", "state", "SoC", "shadow", "links", "apps", "alerts", *placement]
    notes = any(row.get("note") for row in rows)
    if notes:
        columns.append("note")
    table = []
    for row in rows:
        soc = None if row.get("soc") is None else f"{row['soc']:.1%}"
        shadow = None if row.get("in_eclipse") is None else ("yes" if row["in_eclipse"] else "no")
        state = row.get("state", "?") if row.get("reachable", True) else "out of reach"
        state = STATE_MARKS.get(state, state)
        cells = [row["id"], state, soc, shadow, row.get("links_up", 0), row.get("apps", 0), row.get("alerts", 0)]
        cells += [None if row.get(key) is None else str(row[key])[:12] if key == "node" else row[key]
                  for key in placement]  # a Ray node id is 56 hex digits: its first 12 name it
        if notes:
            cells.append(row.get("note") or "")
        table.append(cells)
    print_table(columns, table, out, title=title, right=("SoC", "links", "apps", "alerts", "incarnation"))


def _call(what: str, call: Callable[[], Any]) -> Any:
    """A control call bounded by CALL_TIMEOUT_S; unknown or lost satellites become CliError."""
    try:
        return bounded(call, CALL_TIMEOUT_S, what)
    except (KeyError, LookupError) as exc:
        raise CliError(str(exc.args[0] if exc.args else exc)) from None


def cmd_control(args: argparse.Namespace, out: TextIO) -> int:
    """status, deploy, ps, logs, submit, tasks and down on the running constellation."""
    image = taskfile = None
    if args.command == "deploy":  # read input before joining Ray: bad input fails in no time
        try:
            image = readable_file(args.image, "image").read_bytes()
        except OSError as exc:
            raise CliError(f"image {args.image}: {exc.strerror}") from None
    if args.command == "submit":
        taskfile = _read_taskfile(args.taskfile)
    run = _attach(args)
    if args.command == "status":
        return _print_status(run, args, out)
    if args.command == "deploy":
        return _deploy(run, args, image, out)
    if args.command == "ps":
        rows = _call("ps", lambda: run.ps(args.satellite))
        if args.json:
            print_json(rows, out)
        else:
            _print_ps(rows, out)
        return 0
    if args.command == "logs":
        return _logs(run, args, out)
    if args.command in ("submit", "tasks"):
        if args.command == "submit":
            records = [_call("submit", lambda t=task: run.submit(t)) for task in taskfile or []]
        else:
            records = _call("tasks", run.tasks)
        if args.json:
            print_json(records, out)
        else:
            _print_tasks(records, _epoch(run), out)
        refused = [r for r in records if r.get("status") == "refused"]
        if args.command == "submit" and refused:
            error_line(f"{len(refused)} of {len(records)} tasks refused: "
                       + "; ".join(f"{r['task']}: {r.get('reason', '')}" for r in refused))
            return EXIT_FAILED
        return 0
    if args.command == "down":
        count = len(run.satellites)
        bounded(run.down, CALL_TIMEOUT_S + 30.0, "down")
        if args.json:
            print_json({"stopped": count, "satellites": list(run.satellites)}, out)
        else:
            print(f"down: {count} satellites stopped", file=out)
        return 0
    raise CliError(f"unknown command {args.command!r}")


def _print_status(run: Any, args: argparse.Namespace, out: TextIO) -> int:
    rows = _call("status", run.status)
    try:
        now = _call("now", run.now)
    except Exception:  # no live host to ask: the table says why
        now = None
    epoch = _epoch(run)
    if args.json:  # the rows, each with the simulated time it was read at
        stamp = {"sim_now_utc": iso_utc(now) if now is not None else None, "sim_now_utc_s": now,
                 "mission_elapsed": mission_elapsed(now, epoch) if now is not None else None}
        print_json([dict(row, **stamp) for row in rows], out)
        return 0
    _status_table(rows, out, title=f"simulated time {iso_utc(now)} ({mission_elapsed(now, epoch)})")
    return 0


def _deploy(run: Any, args: argparse.Namespace, image: bytes | None, out: TextIO) -> int:
    from orbitos.kernel.image import ImageError

    try:
        pids = _call("deploy", lambda: run.deploy(image, to="all" if args.all else args.to, argv=tuple(args.arg)))
    except ImageError as exc:
        raise CliError(f"{args.image}: refused: {exc.strerror or exc}") from None
    except Exception as exc:  # a refusal raised inside the host actor arrives wrapped by Ray
        cause = getattr(exc, "cause", None)
        if isinstance(cause, ImageError):
            raise CliError(f"{args.image}: refused: {cause.strerror or cause}") from None
        if isinstance(cause, (KeyError, LookupError)):
            raise CliError(str(cause.args[0] if cause.args else cause)) from None
        raise
    if args.json:
        print_json(pids, out)
    else:
        for satellite, pid in pids.items():
            print(f"{satellite}: pid {pid}", file=out)
    return 0


def _severity_at_least(level: str) -> Callable[[dict[str, Any]], bool]:
    floor = SEVERITIES.index(level)
    return lambda event: (SEVERITIES.index(event["severity"]) if event.get("severity") in SEVERITIES
                          else len(SEVERITIES)) >= floor


def _logs(run: Any, args: argparse.Namespace, out: TextIO) -> int:
    keep = _severity_at_least(args.severity)
    epoch = _epoch(run)
    events = [e for e in _call("logs", lambda: run.logs(args.satellite, args.last)) if keep(e)]
    _emit_events(events, epoch, args.json, out, header=True)
    if not args.follow:
        return 0
    since = {args.satellite: max([e["seq"] for e in events], default=0)}
    if not events:  # the filter hid them all: start after the newest, whatever its severity
        newest = _call("logs", lambda: run.logs(args.satellite, 1))
        since[args.satellite] = max([e["seq"] for e in newest], default=0)
    try:
        while True:
            time.sleep(FOLLOW_POLL_S)  # wall time between polls, not simulated time
            fresh = _call("logs", lambda: run.events_since(dict(since))).get(args.satellite, [])
            for event in fresh:
                since[args.satellite] = max(since[args.satellite], event["seq"])
            _emit_events([e for e in fresh if keep(e)], epoch, args.json, out, header=False)
    except KeyboardInterrupt:
        return 0  # Ctrl-C is how a user stops following


def _emit_events(events: list[dict[str, Any]], epoch: float | None, as_json: bool, out: TextIO,
                 header: bool) -> None:
    if as_json:
        for event in events:  # one object a line, so -f output is a stream of JSON lines
            print_json(dict(event, time_utc=iso_utc(event.get("time_utc_s")),
                            mission_elapsed=mission_elapsed(event.get("time_utc_s"), epoch)), out)
        return
    for event in events:
        print(f"{iso_utc(event.get('time_utc_s'))} {mission_elapsed(event.get('time_utc_s'), epoch):>12} "
              f"{event['seq']:>5} {event['severity']:<8} {event['event_id']:<20} {event['message']}", file=out)
    out.flush()


def _print_ps(rows: list[dict[str, Any]], out: TextIO) -> None:
    print_table(["pid", "name", "state", "priority", "restarts"],
                [[r["pid"], r["name"], r["state"], r.get("priority", "-"), r.get("restarts", 0)] for r in rows],
                out, right=("pid", "restarts"))


def _print_tasks(records: list[dict[str, Any]], epoch: float | None, out: TextIO) -> None:
    for record in records:
        if record.get("status") == "refused" or "satellite" not in record:
            print(f"{record['task']}: {record['status']}: {record.get('reason', '')}", file=out)
        else:
            print(f"{record['task']}: {record['status']} on {record['satellite']} {record['device']} at "
                  f"{iso_utc(record['start_utc_s'])} ({mission_elapsed(record['start_utc_s'], epoch)}), done "
                  f"{iso_utc(record['completion_utc_s'])}{'' if record['deadline_met'] else ' (late)'}"
                  f"{': ' + record['reason'] if record.get('reason') else ''}", file=out)


def _read_taskfile(path: Path) -> list[dict[str, Any]]:
    """The tasks of a TOML task file, images read from disk. Raises CliError naming the problem."""
    import tomllib

    readable_file(path, "task file")
    try:
        document = tomllib.loads(path.read_text())
    except OSError as exc:
        raise CliError(f"task file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise CliError(f"task file {path}: not TOML (not UTF-8 text)") from None
    except tomllib.TOMLDecodeError as exc:
        raise CliError(f"task file {path}: not TOML: {exc}") from None
    tasks = document.get("tasks")
    if not isinstance(tasks, list) or not tasks:
        raise CliError(f"task file {path}: no [[tasks]] tables")
    for i, task in enumerate(tasks):
        if not isinstance(task, dict):
            raise CliError(f"task file {path}: tasks[{i}] is not a table")
        if not isinstance(task.get("name"), str) or not task["name"]:
            raise CliError(f"task file {path}: tasks[{i}] has no name (a string)")
        if "image" in task:
            if not isinstance(task["image"], str):
                raise CliError(f"task file {path}: tasks[{i}].image must be a path (a string)")
            image = path.parent / task["image"]
            try:
                task["image"] = readable_file(image, f"task file {path}: tasks[{i}].image").read_bytes()
            except OSError as exc:
                raise CliError(f"task file {path}: tasks[{i}].image {image}: {exc.strerror}") from None
        if "argv" in task and (not isinstance(task["argv"], list)
                               or not all(isinstance(a, str) for a in task["argv"])):
            raise CliError(f"task file {path}: tasks[{i}].argv must be a list of strings")
    return tasks


def _print_rows(kind: str, rows: list[dict[str, Any]], out: TextIO) -> None:
    if kind == "ps":
        _print_ps(rows, out)
    else:
        _emit_events(rows, None, False, out, header=False)


class ConnectShell(cmd.Cmd):
    """The `orbitos connect` shell: each command is a request from the gateway satellite."""

    def __init__(self, client: Client, out: TextIO) -> None:
        super().__init__(stdout=out)
        self.client = client
        self.out = out
        self.failures = 0  # commands that failed: `connect -c` exits 1 if any did
        self.prompt = f"{client.gateway}> "
        self.intro = (f"connected to {client.gateway}; every request crosses the ISL network. "
                      "Type help or ? to list commands.")

    def _say(self, text: str) -> None:
        print(text, file=self.out)

    def _route(self) -> None:
        last = self.client.last
        if last.get("route") and len(last["route"]) > 1:
            trip = last.get("round_trip_s", last.get("latency_s", 0.0))
            self._say(f"  via {' > '.join(last['route'])}, {trip * 1e3:.1f} ms simulated")

    def onecmd(self, line: str) -> bool:
        try:
            return super().onecmd(line)
        except OutOfReach as exc:
            self.failures += 1
            self._say(f"out of reach: {exc.strerror}")
        except (OSError, KeyError, LookupError, ValueError) as exc:
            self.failures += 1
            self._say(f"error: {exc.strerror if isinstance(exc, OSError) and exc.strerror else exc}")
        return False

    def default(self, line: str) -> None:
        self.failures += 1
        self._say(f"error: unknown command {line.split()[0]!r} (type help)")

    def _args(self, line: str, count: int, usage: str) -> list[str]:
        parts = shlex.split(line)
        if len(parts) < count:
            raise ValueError(f"usage: {usage}")
        return parts

    def do_sats(self, line: str) -> None:
        """sats: every satellite's state, each asked over the ISL network"""
        rows = self.client.satellites()
        _status_table(rows, self.out)
        for row in rows:
            if not row["reachable"]:
                when = row.get("next_reachable_utc_s")
                self._say(f"  {row['id']}: out of reach ({row['error']})" +
                          ("" if when is None else f"; reachable at {when:.0f}"))

    def do_status(self, line: str) -> None:
        """status SAT: one satellite's state"""
        _status_table([self.client.status(self._args(line, 1, "status SAT")[0])], self.out)
        self._route()

    def do_ps(self, line: str) -> None:
        """ps SAT: processes of a satellite"""
        _print_rows("ps", self.client.ps(self._args(line, 1, "ps SAT")[0]), self.out)
        self._route()

    def do_logs(self, line: str) -> None:
        """logs SAT [N]: the last N events of a satellite"""
        parts = self._args(line, 1, "logs SAT [N]")
        _print_rows("logs", self.client.logs(parts[0], int(parts[1]) if len(parts) > 1 else 20), self.out)
        self._route()

    def do_run(self, line: str) -> None:
        """run SAT IMAGE [ARG...]: install and start a signed image on a satellite"""
        parts = self._args(line, 2, "run SAT IMAGE [ARG...]")
        pid = self.client.run_app(parts[0], Path(parts[1]).read_bytes(), tuple(parts[2:]))
        self._say(f"{parts[0]}: pid {pid}")
        self._route()

    def do_cat(self, line: str) -> None:
        """cat SAT PATH: a file of a satellite"""
        parts = self._args(line, 2, "cat SAT PATH")
        data = self.client.read(parts[0], parts[1])
        self._say(data.decode(errors="replace"))
        self._route()

    def do_ls(self, line: str) -> None:
        """ls SAT [PATH]: a directory of a satellite"""
        parts = self._args(line, 1, "ls SAT [PATH]")
        self._say("  ".join(self.client.listdir(parts[0], parts[1] if len(parts) > 1 else "/")))
        self._route()

    def do_send(self, line: str) -> None:
        """send SAT PORT TEXT: a message to a port of a satellite"""
        parts = self._args(line, 3, "send SAT PORT TEXT")
        sent = self.client.send(parts[0], int(parts[1]), " ".join(parts[2:]))
        self._say(f"sent: arrives in {sent['latency_s'] * 1e3:.1f} ms simulated via {' > '.join(sent['route'])}")

    def do_quit(self, line: str) -> bool:
        """quit: leave the shell"""
        return True

    do_EOF = do_quit

    def emptyline(self) -> bool:
        return False


def cmd_connect(args: argparse.Namespace, out: TextIO) -> int:
    run = _attach(args)
    try:
        client = Client(run, args.satellite)
    except (KeyError, LookupError) as exc:
        raise CliError(str(exc.args[0] if exc.args else exc)) from None
    shell = ConnectShell(client, out)
    if args.shell_commands:
        for line in args.shell_commands:
            print(f"{shell.prompt}{line}", file=out)
            bounded(lambda: shell.onecmd(line), CALL_TIMEOUT_S, f"connect -c {line!r}")
        if shell.failures:
            error_line(f"{shell.failures} of {len(args.shell_commands)} commands failed")
            return EXIT_FAILED
        return 0
    try:
        shell.cmdloop()
    except KeyboardInterrupt:
        print(file=out)
    return 0


def run_command(args: argparse.Namespace, out: TextIO) -> int:
    """Dispatch a constellation command: bad input is one line and exit status 2; a cluster that
    does not answer in time is one line and exit status 1 (the process ends at once: a Ray call
    that hangs cannot be cancelled)."""
    try:
        if args.command == "up":
            return cmd_up(args, out)
        if args.command == "connect":
            return cmd_connect(args, out)
        if args.command == "fault":
            return cmd_fault(args, out)
        return cmd_control(args, out)
    except CliError as exc:
        error_line(str(exc))
        return EXIT_BAD_INPUT
    except Unresponsive as exc:
        error_line(str(exc))
        out.flush()
        os._exit(EXIT_FAILED)
    except Exception as exc:
        if not type(exc).__module__.startswith("ray."):
            raise  # not Ray's: cli.main reports it as an internal error
        # a host that died or a constellation going down while the command ran
        error_line(f"the constellation did not answer: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}")
        return EXIT_FAILED


# -- orbitos fault: runtime fault injection (StarryNet's set_damage / set_recovery) ------------------
_DURATION_UNITS_S = {"": 1.0, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def _fault_duration_s(text: str) -> float:
    """Seconds of "90", "90s", "5m", "1.5h". Raises CliError naming the text otherwise."""
    stripped = text.strip().lower()
    number = stripped.rstrip("minhs")
    unit = stripped[len(number):]
    try:
        value = float(number) * _DURATION_UNITS_S[unit]
    except (ValueError, KeyError):
        raise CliError(f"--for {text!r}: not a duration (seconds, or a number with s, m or h: 90, "
                       "90s, 5m, 1.5h)") from None
    return value


def add_fault_parser(commands: Any, address: Any) -> None:
    fault = commands.add_parser(
        "fault", help="inject a fault now: reset a satellite, cut a laser link, brown one out",
        description="Apply a fault on the running constellation from now for DURATION simulated "
                    "time, then clear it (as StarryNet's set_damage and set_recovery). TARGET is a "
                    "satellite (SAT) or a laser link (SAT-SAT); KIND is node_reset (the satellite "
                    "reboots after DURATION, files and installed apps kept; 0 reboots at once), "
                    "link_outage (the link carries nothing: routes go around or wait) or brownout "
                    "(no solar power, low and normal apps suspended). Prints the fault's times.")
    fault.add_argument("target", metavar="TARGET", help="SAT or SAT-SAT")
    fault.add_argument("kind", metavar="KIND", help="node_reset | link_outage | brownout")
    fault.add_argument("--for", dest="duration", metavar="DURATION", required=True,
                       help="how long, simulated: 90, 90s, 5m, 1.5h")
    fault.add_argument("--json", action="store_true", help="print the fault as one JSON object")
    address(fault)


def cmd_fault(args: argparse.Namespace, out: TextIO) -> int:
    """orbitos fault TARGET KIND --for DURATION: bad kind or duration is refused before any
    cluster is reached; a bad target once the constellation is found (CliError each)."""
    from orbitos.runtime.fault_injection import FAULT_KINDS, check_duration

    if args.kind not in FAULT_KINDS:
        raise CliError(f"unknown fault kind {args.kind!r}; known: {', '.join(FAULT_KINDS)}")
    try:
        duration_s = check_duration(_fault_duration_s(args.duration), args.kind)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    run = _attach(args)
    try:
        record = run.inject_fault(args.target, args.kind, duration_s)
    except (ValueError, LookupError) as exc:
        raise CliError(str(exc)) from None
    if args.json:
        json.dump(record, out)
        out.write("\n")
        return 0
    from orbitos.sim_hw.clock import utc_datetime

    def iso(t: float) -> str:
        return utc_datetime(t).isoformat(timespec="seconds").replace("+00:00", "Z")

    print(f"{record['kind']} on {record['target']}: from {iso(record['start_utc_s'])} to "
          f"{iso(record['end_utc_s'])} ({record['end_utc_s'] - record['start_utc_s']:g} s simulated)",
          file=out)
    return 0
