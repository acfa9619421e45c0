# PYTHON_ARGCOMPLETE_OK  (argcomplete: this console script completes its arguments)
"""The `orbitos` command line.

    orbitos world CONFIG [--hours H] [--step S] [--json] [--contact-plan FILE] [--limit N]
    orbitos hw serve PROFILE [--host H] [--port N] [--config CONFIG --satellite ID] [--start UTC]
    orbitos app keygen KEY | build DIR --key KEY [-o IMAGE] | verify IMAGE --keyring PUB...
    orbitos demo [--speed X] [--orbits N] [--hosts N] [--json]
    orbitos up CONFIG [--address A] [--speed X] [--placement packed|node] [--keyring PUB...]
    orbitos status | deploy IMAGE --to SAT|--all | ps SAT | logs SAT [-f] [--severity L] | down
    orbitos connect SAT [-c CMD]... | submit TASKFILE | tasks      (each with --json where it prints data)
    orbitos version

Exit status: 0 on success, 1 when something the command did failed, 2 for bad input (a
malformed config, a bad option, a missing file), each with one line `orbitos: error: ...` on
stderr naming what is wrong; never a traceback (ORBITOS_DEBUG=1 shows one for an internal error).

Shell completion (argcomplete): `eval "$(register-python-argcomplete orbitos)"` in bash or zsh.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence, TextIO

from orbitos.runtime.cli_constellation import (CONSTELLATION_COMMANDS, CliError, readable_file,
                                       add_parsers as add_constellation_parsers)
from orbitos.runtime.cli_constellation import run_command as run_constellation_command
from orbitos.runtime.cli_output import error_line, print_json

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but its usage error is the one line every orbitos error is."""

    def error(self, message: str) -> None:  # type: ignore[override]
        error_line(f"{self.prog}: {message} (see {self.prog} --help)")
        raise SystemExit(EXIT_BAD_INPUT)


def _version() -> str:
    try:
        return metadata.version("orbitos")
    except metadata.PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="orbitos", description="A distributed operating-system runtime for computing "
                                    "satellite constellations.")
    parser.add_argument("--version", action="version", version=f"orbitos {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    world = commands.add_parser(
        "world", help="report a constellation's physical world: orbits, shadow, links, energy",
        description="Propagate a constellation over a horizon and report, per satellite and in "
                    "total: orbital period, eclipse fraction, ISL windows and mean latency, ground "
                    "contacts, and the energy balance.")
    world.add_argument("config", type=Path, help="constellation config (TOML)")
    world.add_argument("--hours", type=float, default=3.0, help="horizon in hours (default 3)")
    world.add_argument("--step", type=float, default=60.0, dest="step_s",
                       help="time step in seconds (default 60)")
    world.add_argument("--json", action="store_true", help="print one JSON object")
    world.add_argument("--contact-plan", type=Path, metavar="FILE",
                       help="also write the contact plan as JSON to FILE")
    world.add_argument("--limit", type=int, default=40,
                       help="satellite rows in the table (default 40; 0 for all)")
    hw = commands.add_parser("hw", help="hardware: serve a satellite's simulated devices")
    hw_commands = hw.add_subparsers(dest="hw_command", required=True, metavar="HW_COMMAND", parser_class=_Parser)
    serve = hw_commands.add_parser(
        "serve", help="serve one satellite's simulated devices over TCP (the device server)",
        description="Host the devices of a hardware profile in this process and serve them in the "
                    "orbitos wire protocol (docs/hil-protocol.md). Prints 'listening on HOST:PORT' "
                    "once ready. Without --config the satellite flies the reference orbit.")
    serve.add_argument("profile", type=Path, help="hardware profile (TOML)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=7100, help="port (default 7100; 0 picks a free one)")
    serve.add_argument("--config", type=Path, help="constellation config that places the satellite")
    serve.add_argument("--satellite", default=None, help="satellite id in --config (default: the first)")
    serve.add_argument("--start", default=None,
                       help="simulation start, ISO 8601 UTC (default: the config's epoch, or now)")
    serve.add_argument("--max-frame-mib", type=float, default=64.0, help="largest frame accepted")
    serve.add_argument("--idle-timeout", type=float, default=600.0,
                       help="seconds a silent client is kept (default 600)")
    app = commands.add_parser("app", help="signed app images: keys, build, verify")
    app_commands = app.add_subparsers(dest="app_command", required=True, metavar="APP_COMMAND", parser_class=_Parser)
    keygen = app_commands.add_parser(
        "keygen", help="make an Ed25519 signing key: KEY and its public key (KEY's suffix replaced by .pub)",
        description="Write a new Ed25519 private key to KEY (PEM, mode 600) and its public key beside "
                    "it with the suffix replaced by .pub: `keygen ops.key` writes ops.key and ops.pub "
                    "(grants for it go to ops.grants.toml).")
    keygen.add_argument("key", type=Path, help="private key file to write (PEM)")
    keygen.add_argument("--json", action="store_true", help="print the key id and files as JSON")
    build = app_commands.add_parser("build", help="sign an app directory into an image")
    build.add_argument("directory", type=Path, help="app directory with manifest.toml and its .py files")
    build.add_argument("--key", type=Path, required=True, help="Ed25519 private key (PEM)")
    build.add_argument("-o", "--output", type=Path, help="image file (default: NAME-VERSION.img)")
    build.add_argument("--json", action="store_true", help="print what was built as JSON")
    verify = app_commands.add_parser("verify", help="check an image's signature against trusted keys")
    verify.add_argument("image", type=Path)
    verify.add_argument("--json", action="store_true", help="print the verified manifest as JSON")
    verify.add_argument("--keyring", type=Path, nargs="+", required=True,
                        help="public keys (.pub) or directories of them")
    demo = commands.add_parser(
        "demo", help="the Three-Body-12 constellation on an embedded Ray, flood watchers on all",
        description="Boot the Three-Body-12 constellation on an embedded local Ray, deploy the flood "
                    "watcher on every satellite with alerts relayed over the ISL network, run the "
                    "given number of orbits at the given speed with a live progress line, and print "
                    "a summary.")
    demo.add_argument("--speed", type=float, default=60.0, help="simulated seconds per second (default 60)")
    demo.add_argument("--orbits", type=float, default=2.0, help="orbits to run (default 2)")
    demo.add_argument("--hosts", type=int, default=2, help="Ray host actors (default 2)")
    demo.add_argument("--config", type=Path, default=None, help="constellation config (default three-body-12)")
    demo.add_argument("--json", action="store_true", help="print only the summary, as one JSON object")
    add_constellation_parsers(commands)
    commands.add_parser("version", help="print the version")
    return parser


def _fail(message: str) -> int:
    error_line(message)
    return EXIT_BAD_INPUT


def _format_table(report: dict[str, Any], limit: int, out: TextIO) -> None:
    from orbitos.runtime.cli_output import print_table

    total = report["total"]
    print(f"{report['config']}: {total['satellites']} satellites, {report['hours']:g} h from "
          f"{report['start_utc']} at {report['step_s']:g} s steps", file=out)

    def cells(name: str, row: dict[str, Any]) -> list[Any]:
        latency = "-" if row["isl_mean_latency_s"] is None else f"{row['isl_mean_latency_s'] * 1e3:.2f}ms"
        return [name, f"{row['period_s'] / 60:.2f}m", f"{row['eclipse_fraction']:.3f}", row["isl_windows"],
                latency, row["ground_contacts"], f"{row['ground_minutes']:.1f}m",
                f"{row['energy_generated_wh']:.1f}", f"{row['energy_consumed_wh']:.1f}", f"{row['min_soc']:.3f}"]

    rows = report["satellites"] if limit == 0 else report["satellites"][:limit]
    table = [cells(sat["id"], sat) for sat in rows]
    table.append(cells("total", total))
    columns = ["satellite", "period", "eclipse", "ISL", "ISL lat", "passes", "ground", "gen Wh", "used Wh", "min SoC"]
    print_table(columns, table, out, right=columns[1:])
    if len(rows) < len(report["satellites"]):
        print(f"... {len(report['satellites']) - len(rows)} more satellites (use --limit 0 or --json)", file=out)
    print(f"contact plan: {total['contact_plan_windows']} directed windows; unserved load "
          f"{total['energy_unserved_wh']:.1f} Wh; computed in "
          f"{sum(report['timings_s'].values()):.2f} s", file=out)


def cmd_world(args: argparse.Namespace, out: TextIO) -> int:
    from orbitos.sim_hw.constellation import load_constellation
    from orbitos.sim_hw.orbits import OrbitError
    from orbitos.sim_hw.spec_loading import ConfigError
    from orbitos.sim_hw.world import World, WorldError

    if args.limit < 0:
        return _fail(f"--limit must be >= 0, got {args.limit}")
    if not 0 < args.hours <= 24 * 366 or not 0 < args.step_s <= 86_400:
        return _fail(f"--hours must be in (0, 8784] and --step in (0, 86400] s; got {args.hours:g}, {args.step_s:g}")
    readable_file(args.config, "config")
    if args.contact_plan is not None:
        _check_writable(args.contact_plan, "--contact-plan")
    try:
        world = World(load_constellation(args.config), args.hours, args.step_s)
    except (ConfigError, WorldError, OrbitError) as exc:
        return _fail(str(exc))
    report = world.report()
    if args.contact_plan is not None:
        try:
            args.contact_plan.write_text(world.contact_plan.to_json())
        except OSError as exc:
            return _fail(f"cannot write contact plan to {args.contact_plan}: {exc.strerror}")
    if args.json:
        print_json(report, out)
    else:
        _format_table(report, args.limit, out)
    return 0


def _check_writable(path: Path, what: str) -> None:
    """Raises CliError when `path` cannot be written: a directory, a missing or read-only parent."""
    if path.is_dir():
        raise CliError(f"{what} {path}: is a directory, not a file")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise CliError(f"{what} {path}: no directory {parent}")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise CliError(f"{what} {path}: permission denied")


def cmd_hw_serve(args: argparse.Namespace, out: TextIO) -> int:
    import time

    from orbitos.sim_hw.constellation import load_constellation, parse_epoch
    from orbitos.sim_hw.device_server import DeviceServer
    from orbitos.sim_hw.hardware import SatelliteHardware
    from orbitos.sim_hw.orbits import OrbitError
    from orbitos.sim_hw.profile import load_profile
    from orbitos.sim_hw.spec_loading import ConfigError
    from orbitos.sim_hw.track import SatelliteTrack

    if not 0 <= args.port <= 65535:
        return _fail(f"--port must be in 0..65535, got {args.port}")
    if not 0 < args.max_frame_mib <= 4096 or not 0 < args.idle_timeout:
        return _fail(f"--max-frame-mib must be in (0, 4096] and --idle-timeout > 0; got "
                     f"{args.max_frame_mib:g}, {args.idle_timeout:g}")
    readable_file(args.profile, "profile")
    if args.config is not None:
        readable_file(args.config, "config")
    try:
        profile = load_profile(args.profile)
        start = parse_epoch(args.start, "--start") if args.start else None
        faults = None
        if args.config is not None:
            constellation = load_constellation(args.config)
            satellite = args.satellite or constellation.satellite_ids[0]
            track = SatelliteTrack.of(constellation, satellite, start)
            faults = constellation.fault_schedule(track.times_utc_s[0], track.times_utc_s[-1])
        else:
            satellite = args.satellite or profile.name
            track = SatelliteTrack.reference(satellite, start if start is not None else time.time())
        hardware = SatelliteHardware(profile, satellite, track, faults)
        server = DeviceServer(hardware, args.host, args.port,
                              max_frame_bytes=int(args.max_frame_mib * 1024 * 1024),
                              idle_timeout_s=args.idle_timeout)
    except KeyError as exc:
        return _fail(str(exc.args[0]))
    except (ConfigError, OrbitError, ValueError) as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(f"cannot listen on {args.host}:{args.port}: {exc.strerror}")
    host, port = server.address
    print(f"listening on {host}:{port} ({satellite}, profile {profile.name}, "
          f"{len(hardware.device_names)} devices)", file=out, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a user stops the server: close it and exit 0
    finally:
        server.close()
    return 0


def cmd_app(args: argparse.Namespace, out: TextIO) -> int:
    from orbitos.kernel.image import (ImageError, Keyring, build_image, generate_key, load_private_key,
                              verify_image)

    try:
        if args.app_command == "keygen":
            public = args.key.with_suffix(".pub")
            if public == args.key:
                return _fail(f"{args.key}: a private key must not end in .pub (its public key goes there)")
            for path in (args.key, public):
                if path.exists():
                    return _fail(f"{path} exists; not overwriting a key")
            _check_writable(args.key, "key")
            key_id = generate_key(args.key)
            if args.json:
                print_json({"key_id": key_id, "private": str(args.key), "public": str(public)}, out)
            else:
                print(f"key {key_id}: private {args.key}, public {public}", file=out)
            return 0
        if args.app_command == "build":
            if not args.directory.is_dir():
                return _fail(f"app directory {args.directory}: "
                             f"{'not a directory' if args.directory.exists() else 'no such directory'}")
            readable_file(args.key, "--key")
            image = build_image(args.directory, load_private_key(args.key))
            verified = verify_image(image, Keyring([load_private_key(args.key).public_key()]))
            manifest = verified.manifest
            output = args.output or Path(f"{manifest.name}-{manifest.version}.img")
            _check_writable(output, "-o")
            try:
                output.write_bytes(image)
            except OSError as exc:
                return _fail(f"-o {output}: {exc.strerror or exc}")
            if args.json:
                print_json({"image": str(output), "name": manifest.name, "version": manifest.version,
                            "bytes": len(image), "signer": verified.signer, "sha256": verified.digest}, out)
            else:
                print(f"{output}: {manifest.name} {manifest.version}, {len(image)} bytes, signed by "
                      f"{verified.signer}, sha256 {verified.digest[:16]}", file=out)
            return 0
        for path in args.keyring:
            if not path.exists():
                return _fail(f"--keyring {path}: no such file or directory")
        keyring = Keyring.from_files(args.keyring)
        if not keyring.keys:
            return _fail(f"--keyring {' '.join(map(str, args.keyring))}: no public keys (.pub) found")
        try:
            data = readable_file(args.image, "image").read_bytes()
        except OSError as exc:
            return _fail(f"image {args.image}: {exc.strerror}")
        try:
            verified = verify_image(data, keyring)
        except ImageError as exc:
            return _fail(f"image {args.image}: refused: {exc.strerror or exc}")
        manifest = verified.manifest
        if args.json:
            print_json({"image": str(args.image), "ok": True, "signer": verified.signer,
                        "sha256": verified.digest, "manifest": manifest.to_dict()}, out)
        else:
            print(f"{args.image}: OK: {manifest.name} {manifest.version}, signed by {verified.signer}, "
                  f"priority {manifest.priority}", file=out)
        return 0
    except ImageError as exc:
        return _fail(str(exc.strerror or exc))
    except OSError as exc:
        return _fail(f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": "))


def cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    from orbitos.runtime.demo import DEFAULT_CONFIG, print_summary, run_demo
    from orbitos.sim_hw.spec_loading import ConfigError

    if args.config is not None:
        readable_file(args.config, "config")
    if not 1 <= args.hosts <= 64:
        return _fail(f"--hosts must be in 1..64, got {args.hosts}")
    try:
        summary = run_demo(args.config or DEFAULT_CONFIG, args.speed, args.orbits, args.hosts, out,
                           live=not args.json)
    except (ConfigError, ValueError) as exc:
        return _fail(str(exc))
    if args.json:
        print_json(summary, out)
    else:
        print_summary(summary, out)
    return 0


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run one orbitos command; its exit status. Bad input is one line on stderr, never a
    traceback; an unexpected exception is one line too (its traceback with ORBITOS_DEBUG=1)."""
    out = out or sys.stdout
    parser = build_parser()
    try:
        import argcomplete

        argcomplete.autocomplete(parser)  # returns at once unless the shell asks for completions
    except ImportError:
        pass  # completion is a convenience; the command works without it
    args = parser.parse_args(argv)
    try:
        return _dispatch(args, out)
    except CliError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        error_line("interrupted")
        return 130
    except BrokenPipeError:
        return 0  # `orbitos ... | head`: the reader had enough
    except Exception as exc:
        if os.environ.get("ORBITOS_DEBUG"):
            traceback.print_exc()
        error_line(f"internal error: {type(exc).__name__}: {exc} (ORBITOS_DEBUG=1 shows the traceback)")
        return EXIT_FAILED


def _dispatch(args: argparse.Namespace, out: TextIO) -> int:
    if args.command == "world":
        return cmd_world(args, out)
    if args.command == "hw" and args.hw_command == "serve":
        return cmd_hw_serve(args, out)
    if args.command == "demo":
        return cmd_demo(args, out)
    if args.command == "app":
        return cmd_app(args, out)
    if args.command in CONSTELLATION_COMMANDS:
        return run_constellation_command(args, out)
    if args.command == "version":
        print(f"orbitos {_version()}", file=out)
        return 0
    return _fail(f"unknown command {args.command!r}")


if __name__ == "__main__":
    sys.exit(main())
