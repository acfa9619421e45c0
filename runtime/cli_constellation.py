"""The CLI's constellation commands: up, status, deploy, ps, logs, connect, down.

`orbitos up CONFIG` boots the constellation and stays in the foreground (Ctrl-C, SIGTERM or
`orbitos down` from another shell stops it), watching for lost nodes and printing incidents.
It writes the session file `$ORBITOS_HOME/session.json` (default `~/.orbitos`) with the Ray
address; the other commands join that cluster (or the one `--address` names) and find the
constellation's hosts by name. Exit status 0 on success, 2 for bad input or when no
constellation runs, with a message on stderr naming what is wrong.
"""
from __future__ import annotations

import argparse
import cmd
import json
import os
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from runtime.client import Client, OutOfReach

EXIT_BAD_INPUT = 2
CONSTELLATION_COMMANDS = ("up", "status", "deploy", "ps", "logs", "connect", "down", "submit", "tasks",
                          "fault")


class CliError(Exception):
    """Bad input for a constellation command; its message is what the user reads."""


def session_path() -> Path:
    return Path(os.environ.get("ORBITOS_HOME", Path.home() / ".orbitos")) / "session.json"


def _address(args: argparse.Namespace) -> str:
    """--address, else the running session's, else Ray's "auto"."""
    if getattr(args, "address", None):
        return args.address
    try:
        session = json.loads(session_path().read_text())
        # a local Ray started by `up` takes Ray's token (~/.ray/auth_token) from its drivers
        os.environ.setdefault("RAY_AUTH_MODE", session.get("ray_auth_mode", "token"))
        return session["address"]
    except (OSError, ValueError, KeyError):
        return "auto"


def operator_key_path() -> Path:
    """Where `up` keeps the operator key it generates (mode 0600), unless given --operator-key."""
    return session_path().parent / "operator.key"


def _operator_key(path: Path | None) -> Any:
    """The operator private key at `path` (the session's, else $ORBITOS_HOME/operator.key);
    None when there is none. Raises CliError for a file that is not an Ed25519 key."""
    from kernel.image import ImageError, load_private_key

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
    address = _address(args)  # first: it may set RAY_AUTH_MODE, which Ray reads on import
    from runtime.constellation_run import ConstellationRun

    operator_key = _operator_key(None)
    try:
        run = ConstellationRun.attach(address, operator_key=operator_key)
    except LookupError as exc:
        raise CliError(str(exc)) from None
    except ConnectionError as exc:
        raise CliError(f"no Ray cluster at {address}: {exc}") from None
    if operator_key is None:
        raise CliError(f"no operator key at {operator_key_path()}: control requests must be signed by "
                       "the key `orbitos up` wrote there (copy it from the machine that ran `up`)")
    return run


def add_parsers(commands: Any) -> None:
    def address(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--address", default=None,
                            help="Ray cluster address (default: the running session's)")

    up = commands.add_parser(
        "up", help="boot a constellation on Ray and keep it running",
        description="Boot every satellite of CONFIG as a kernel on Ray (an embedded local Ray, or "
                    "the cluster at --address) and stay in the foreground until Ctrl-C or "
                    "`orbitos down`.")
    up.add_argument("config", type=Path, help="constellation config (TOML)")
    up.add_argument("--address", default=None, help="join this Ray cluster (default: start a local one)")
    up.add_argument("--speed", type=float, default=1.0, help="simulated seconds per second (default 1: "
                                                              "real time, for hardware in the loop)")
    up.add_argument("--hours", type=float, default=24.0, help="simulated horizon (default 24)")
    up.add_argument("--placement", choices=("packed", "node"), default="packed",
                    help="packed: several satellites per host actor; node: one per Ray node "
                         "labelled orbitos.sat=<id>")
    up.add_argument("--hosts", type=int, default=None, help="host actors when packed (default: CPUs)")
    up.add_argument("--satellites", nargs="+", default=None, help="boot only these satellites")
    up.add_argument("--keyring", type=Path, nargs="+", default=[],
                    help="public keys (.pub) or directories of them that app images must be signed by")
    up.add_argument("--state-dir", type=Path, default=None,
                    help="where satellites keep their storage (default: a temporary directory)")
    up.add_argument("--num-cpus", type=int, default=None, help="CPUs of the embedded Ray (default: all)")
    up.add_argument("--dashboard", action="store_true", help="start Ray's dashboard (needs ray[default])")
    up.add_argument("--housekeeping", type=float, default=10.0, help="housekeeping period, simulated s")

    status = commands.add_parser("status", help="a table of the satellites: state, SoC, links, apps, alerts")
    status.add_argument("--json", action="store_true", help="print the rows as one JSON list")
    address(status)
    deploy = commands.add_parser("deploy", help="install and start a signed app image")
    deploy.add_argument("image", type=Path)
    target = deploy.add_mutually_exclusive_group(required=True)
    target.add_argument("--to", metavar="SAT", help="one satellite")
    target.add_argument("--all", action="store_true", help="every satellite")
    deploy.add_argument("--arg", action="append", default=[], help="an argument for the app (repeatable)")
    address(deploy)
    ps = commands.add_parser("ps", help="processes of a satellite")
    ps.add_argument("satellite")
    address(ps)
    logs = commands.add_parser("logs", help="the last events of a satellite")
    logs.add_argument("satellite")
    logs.add_argument("--last", type=int, default=30)
    address(logs)
    connect = commands.add_parser(
        "connect", help="a shell on one satellite that reaches all the others over the ISL network",
        description="Attach to one satellite and reach the whole constellation through it; every "
                    "request crosses the ISL network with its real latency. Commands: " +
                    ", ".join(sorted(n[3:] for n in dir(ConnectShell) if n.startswith("do_"))))
    connect.add_argument("satellite")
    connect.add_argument("-c", "--command", action="append", default=[], dest="shell_commands",
                         help="run this shell command and exit (repeatable)")
    address(connect)
    down = commands.add_parser("down", help="stop the running constellation")
    address(down)
    submit = commands.add_parser(
        "submit", help="hand tasks to the global scheduler",
        description="Submit the tasks of a TOML task file ([[tasks]] with name, ops, deadline_s, "
                    "inputs, output_to, priority, depends_on, image (a signed app image, path "
                    "relative to the file), argv; docs/scheduler.md). Prints where each was placed "
                    "or why it was refused.")
    submit.add_argument("taskfile", type=Path)
    submit.add_argument("--json", action="store_true")
    address(submit)
    tasks = commands.add_parser("tasks", help="the scheduler's tasks: placement, status, reasons")
    tasks.add_argument("--json", action="store_true")
    address(tasks)
    add_fault_parser(commands, address)


def _trusted_keys(paths: list[Path]) -> tuple[bytes, ...]:
    from cryptography.hazmat.primitives import serialization

    from kernel.image import ImageError, Keyring

    try:
        keyring = Keyring.from_files(paths)
    except ImageError as exc:
        raise CliError(str(exc.strerror or exc)) from None
    return tuple(key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
                 for key in keyring.keys.values())


def cmd_up(args: argparse.Namespace, out: TextIO) -> int:
    from runtime.constellation_run import ConstellationRun, PlacementError
    from sim_hw.spec_loading import ConfigError

    if not 0 < args.speed <= 10_000 or not 0 < args.hours <= 24 * 14:
        raise CliError(f"--speed must be in (0, 10000] and --hours in (0, 336]; got {args.speed}, {args.hours}")
    keys = _trusted_keys(args.keyring) if args.keyring else ()
    operator_path = operator_key_path()
    if not operator_path.exists():  # the operator key signs every control request (runtime.control)
        from kernel.image import generate_key

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
    import ray

    stop = {"now": False}

    def request_stop(signum: int, frame: Any) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, request_stop)
    session = session_path()
    session.parent.mkdir(parents=True, exist_ok=True)
    session.write_text(json.dumps({"address": ray.get_runtime_context().gcs_address, "pid": os.getpid(),
                                   "config": str(args.config), "satellites": len(run.satellites),
                                   "operator_key": str(operator_path),
                                   "ray_auth_mode": os.environ.get("RAY_AUTH_MODE", "token")}))
    print(f"up: {len(run.satellites)} satellites on {len(run.actors)} hosts ({args.placement}) in "
          f"{run.boot_s:.1f} s at {args.speed:g}x; Ray at {ray.get_runtime_context().gcs_address}; "
          f"state in {run.state_dir}", file=out, flush=True)
    if not keys:
        print("warning: no --keyring given: every app image will be refused", file=out, flush=True)
    try:
        while not stop["now"]:
            time.sleep(1.0)
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
    return 0


def _status_table(rows: list[dict[str, Any]], out: TextIO) -> None:
    header = f"{'satellite':<10} {'state':<11} {'SoC':>6} {'shadow':>6} {'links':>5} {'apps':>4} {'alerts':>6}"
    print(header, file=out)
    print("-" * len(header), file=out)
    for row in rows:
        soc = "-" if row.get("soc") is None else f"{row['soc']:.1%}"
        shadow = "-" if row.get("in_eclipse") is None else ("yes" if row["in_eclipse"] else "no")
        state = row.get("state", "?") if row.get("reachable", True) else "out of reach"
        print(f"{row['id']:<10} {state:<11} {soc:>6} {shadow:>6} {row.get('links_up', 0):>5} "
              f"{row.get('apps', 0):>4} {row.get('alerts', 0):>6}", file=out)


def cmd_control(args: argparse.Namespace, out: TextIO) -> int:
    """status, deploy, ps, logs and down on the running constellation."""
    run = _attach(args)
    if args.command == "status":
        rows = run.status()
        if args.json:
            json.dump(rows, out)
            out.write("\n")
        else:
            _status_table(rows, out)
    elif args.command == "deploy":
        from kernel.image import ImageError

        try:
            image = args.image.read_bytes()
        except OSError as exc:
            raise CliError(f"{args.image}: {exc.strerror}") from None
        try:
            pids = run.deploy(image, to="all" if args.all else args.to, argv=tuple(args.arg))
        except (KeyError, LookupError) as exc:
            raise CliError(str(exc.args[0])) from None
        except ImageError as exc:
            raise CliError(f"{args.image}: refused: {exc.strerror or exc}") from None
        for satellite, pid in pids.items():
            print(f"{satellite}: pid {pid}", file=out)
    elif args.command in ("ps", "logs"):
        try:
            rows = run.ps(args.satellite) if args.command == "ps" else run.logs(args.satellite, args.last)
        except (KeyError, LookupError) as exc:
            raise CliError(str(exc.args[0])) from None
        _print_rows(args.command, rows, out)
    elif args.command in ("submit", "tasks"):
        records = [run.submit(task) for task in _read_taskfile(args.taskfile)] if args.command == "submit" \
            else run.tasks()
        if args.json:
            json.dump(records, out)
            out.write("\n")
        for record in [] if args.json else records:
            if record["status"] == "refused" or "satellite" not in record:
                print(f"{record['task']}: {record['status']}: {record.get('reason', '')}", file=out)
            else:
                print(f"{record['task']}: {record['status']} on {record['satellite']} {record['device']} at "
                      f"{record['start_utc_s']:.0f}, done {record['completion_utc_s']:.0f}"
                      f"{'' if record['deadline_met'] else ' (late)'}"
                      f"{': ' + record['reason'] if record.get('reason') else ''}", file=out)
    elif args.command == "down":
        count = len(run.satellites)
        run.down()
        print(f"down: {count} satellites stopped", file=out)
    return 0


def _read_taskfile(path: Path) -> list[dict[str, Any]]:
    """The tasks of a TOML task file, images read from disk. Raises CliError naming the problem."""
    import tomllib

    try:
        document = tomllib.loads(path.read_text())
    except OSError as exc:
        raise CliError(f"{path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise CliError(f"{path}: not TOML: {exc}") from None
    tasks = document.get("tasks")
    if not isinstance(tasks, list) or not tasks:
        raise CliError(f"{path}: no [[tasks]]")
    for i, task in enumerate(tasks):
        if "image" in task:
            image = (path.parent / str(task["image"]))
            try:
                task["image"] = image.read_bytes()
            except OSError as exc:
                raise CliError(f"{path}: tasks[{i}].image {image}: {exc.strerror}") from None
    return tasks


def _print_rows(kind: str, rows: list[dict[str, Any]], out: TextIO) -> None:
    if kind == "ps":
        print(f"{'pid':>5} {'name':<18} {'state':<9} {'priority':<9} {'restarts':>8}", file=out)
        for row in rows:
            print(f"{row['pid']:>5} {row['name']:<18} {row['state']:<9} {row.get('priority', '-'):<9} "
                  f"{row.get('restarts', 0):>8}", file=out)
    else:
        for row in rows:
            print(f"{row['seq']:>5} {row['severity']:<8} {row['event_id']:<20} {row['message']}", file=out)


class ConnectShell(cmd.Cmd):
    """The `orbitos connect` shell: each command is a request from the gateway satellite."""

    def __init__(self, client: Client, out: TextIO) -> None:
        super().__init__(stdout=out)
        self.client = client
        self.out = out
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
            self._say(f"out of reach: {exc.strerror}")
        except (OSError, KeyError, LookupError, ValueError) as exc:
            self._say(f"error: {exc.strerror if isinstance(exc, OSError) and exc.strerror else exc}")
        return False

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
        raise CliError(str(exc.args[0])) from None
    shell = ConnectShell(client, out)
    if args.shell_commands:
        for line in args.shell_commands:
            print(f"{shell.prompt}{line}", file=out)
            shell.onecmd(line)
        return 0
    shell.cmdloop()
    return 0


def run_command(args: argparse.Namespace, out: TextIO) -> int:
    """Dispatch a constellation command; bad input is a message and exit status 2."""
    try:
        if args.command == "up":
            return cmd_up(args, out)
        if args.command == "connect":
            return cmd_connect(args, out)
        if args.command == "fault":
            return cmd_fault(args, out)
        return cmd_control(args, out)
    except CliError as exc:
        print(f"orbitos: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


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
    from runtime.fault_injection import FAULT_KINDS, check_duration

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
    from sim_hw.clock import utc_datetime

    def iso(t: float) -> str:
        return utc_datetime(t).isoformat(timespec="seconds").replace("+00:00", "Z")

    print(f"{record['kind']} on {record['target']}: from {iso(record['start_utc_s'])} to "
          f"{iso(record['end_utc_s'])} ({record['end_utc_s'] - record['start_utc_s']:g} s simulated)",
          file=out)
    return 0
