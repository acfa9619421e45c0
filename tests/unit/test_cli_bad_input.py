"""Every `orbitos` command with bad input, each in its own process as a user runs it: one line
`orbitos: error: ...` naming what is wrong, a non-zero exit, never a traceback, within seconds.

No constellation runs here (each test has its own empty ORBITOS_HOME): commands that need one
say so at once. The cases that need a running constellation are in
tests/integration/test_cli_constellation.py (one shared `up`)."""
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "examples" / "constellations" / "three-body-12.toml"
PROFILE = ROOT / "examples" / "profiles" / "three-body.toml"
HELLO = ROOT / "examples" / "apps" / "hello"
FAST_S = 20.0  # every refusal here comes well within this (most in under 2 s)


def orbitos(env, *args, timeout=FAST_S, cwd=ROOT):
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "orbitos.runtime.cli", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=timeout, cwd=cwd)
    done.elapsed_s = time.monotonic() - started
    return done


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Real inputs, good and bad: a key pair, a signed image, a read-only directory, ..."""
    tmp = tmp_path_factory.mktemp("cli-bad")
    env = dict(os.environ, ORBITOS_HOME=str(tmp / "home"), PYTHONPATH=str(ROOT))
    assert orbitos(env, "app", "keygen", tmp / "ops.key").returncode == 0
    assert orbitos(env, "app", "build", HELLO, "--key", tmp / "ops.key", "-o", tmp / "hello.img").returncode == 0
    (tmp / "junk.img").write_bytes(b"not an image")
    (tmp / "junk.key").write_text("not a key")
    (tmp / "not-toml.toml").write_text("[[tasks]\nname = ")
    (tmp / "binary.toml").write_bytes(b"\xff\xfe\x00garbage")
    (tmp / "no-tasks.toml").write_text('title = "nothing"\n')
    (tmp / "wrong-fields.toml").write_text('tasks = [1, 2]\n')
    (tmp / "no-name.toml").write_text('[[tasks]]\nops = { gpu = 1e9 }\n')
    (tmp / "image-missing.toml").write_text('[[tasks]]\nname = "t"\nops = { gpu = 1e9 }\nimage = "nope.img"\n')
    (tmp / "image-dir.toml").write_text('[[tasks]]\nname = "t"\nops = { gpu = 1e9 }\nimage = "."\n')
    (tmp / "argv-bad.toml").write_text('[[tasks]]\nname = "t"\nops = { gpu = 1e9 }\nargv = "x"\n')
    (tmp / "bad-config.toml").write_text('[constellation]\nname = 3\n')
    (tmp / "adir").mkdir()
    readonly = tmp / "readonly"
    readonly.mkdir()
    readonly.chmod(0o500)
    (tmp / "stale").mkdir()
    (tmp / "stale" / "session.json").write_text(json.dumps({"address": "127.0.0.1:9", "pid": 2 ** 22 + 7}))
    (tmp / "corrupt").mkdir()
    (tmp / "corrupt" / "session.json").write_text("{not json")
    (tmp / "sessiondir").mkdir()
    (tmp / "sessiondir" / "session.json").mkdir()
    yield tmp
    readonly.chmod(0o700)


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again: nothing listens there


# (name, argv with {t} for the files directory, what stderr must name). Every command appears.
CASES = [
    ("world-missing", ["world", "{t}/nope.toml"], "nope.toml"),
    ("world-dir", ["world", "{t}/adir"], "is a directory"),
    ("world-bad-config", ["world", "{t}/bad-config.toml"], "bad-config.toml"),
    ("world-not-toml", ["world", "{t}/not-toml.toml"], "not-toml.toml"),
    ("world-hours", ["world", CONFIG, "--hours", "-1"], "--hours"),
    ("world-hours-nan", ["world", CONFIG, "--hours", "nan"], "--hours"),
    ("world-step-word", ["world", CONFIG, "--step", "fast"], "--step"),
    ("world-limit", ["world", CONFIG, "--limit", "-2"], "--limit"),
    ("world-plan-missing-dir", ["world", CONFIG, "--hours", "0.1", "--contact-plan", "{t}/no/such/plan.json"],
     "no directory"),
    ("world-plan-readonly", ["world", CONFIG, "--hours", "0.1", "--contact-plan", "{t}/readonly/plan.json"],
     "permission denied"),
    ("world-plan-dir", ["world", CONFIG, "--hours", "0.1", "--contact-plan", "{t}/adir"], "is a directory"),
    ("hw-serve-missing", ["hw", "serve", "{t}/nope.toml", "--port", "0"], "nope.toml"),
    ("hw-serve-dir", ["hw", "serve", "{t}/adir", "--port", "0"], "is a directory"),
    ("hw-serve-port", ["hw", "serve", PROFILE, "--port", "70000"], "--port"),
    ("hw-serve-port-word", ["hw", "serve", PROFILE, "--port", "x"], "--port"),
    ("hw-serve-sat", ["hw", "serve", PROFILE, "--port", "0", "--config", CONFIG, "--satellite", "XX99"], "XX99"),
    ("hw-serve-start", ["hw", "serve", PROFILE, "--port", "0", "--start", "yesterday"], "yesterday"),
    ("hw-no-subcommand", ["hw"], "hw"),
    ("keygen-exists", ["app", "keygen", "{t}/ops.key"], "exists"),
    ("keygen-readonly", ["app", "keygen", "{t}/readonly/k.key"], "permission denied"),
    ("keygen-missing-dir", ["app", "keygen", "{t}/no/such/k.key"], "no directory"),
    ("keygen-pub", ["app", "keygen", "{t}/new.pub"], ".pub"),
    ("build-missing-dir", ["app", "build", "{t}/nope", "--key", "{t}/ops.key"], "nope"),
    ("build-file-as-dir", ["app", "build", "{t}/junk.img", "--key", "{t}/ops.key"], "not a directory"),
    ("build-bad-key", ["app", "build", HELLO, "--key", "{t}/junk.key", "-o", "{t}/x.img"], "junk.key"),
    ("build-key-dir", ["app", "build", HELLO, "--key", "{t}/adir", "-o", "{t}/x.img"], "is a directory"),
    ("build-readonly-out", ["app", "build", HELLO, "--key", "{t}/ops.key", "-o", "{t}/readonly/x.img"],
     "permission denied"),
    ("build-out-dir", ["app", "build", HELLO, "--key", "{t}/ops.key", "-o", "{t}/adir"], "is a directory"),
    ("build-not-app", ["app", "build", "{t}/adir", "--key", "{t}/ops.key", "-o", "{t}/x.img"], "manifest"),
    ("verify-junk", ["app", "verify", "{t}/junk.img", "--keyring", "{t}/ops.pub"], "junk.img"),
    ("verify-missing", ["app", "verify", "{t}/nope.img", "--keyring", "{t}/ops.pub"], "nope.img"),
    ("verify-dir", ["app", "verify", "{t}/adir", "--keyring", "{t}/ops.pub"], "is a directory"),
    ("verify-untrusted", ["app", "verify", "{t}/hello.img", "--keyring", "{t}/adir"], "no public keys"),
    ("verify-keyring-missing", ["app", "verify", "{t}/hello.img", "--keyring", "{t}/nope.pub"], "nope.pub"),
    ("verify-keyring-junk", ["app", "verify", "{t}/hello.img", "--keyring", "{t}/junk.key"], "junk.key"),
    ("demo-speed", ["demo", "--speed", "0"], "speed"),
    ("demo-orbits", ["demo", "--orbits", "-1"], "orbits"),
    ("demo-config-dir", ["demo", "--config", "{t}/adir"], "is a directory"),
    ("demo-hosts", ["demo", "--hosts", "0"], "--hosts"),
    ("up-missing", ["up", "{t}/nope.toml"], "nope.toml"),
    ("up-dir", ["up", "{t}/adir"], "is a directory"),
    ("up-speed", ["up", CONFIG, "--speed", "-3"], "--speed"),
    ("up-hosts", ["up", CONFIG, "--hosts", "0"], "--hosts"),
    ("up-keyring-missing", ["up", CONFIG, "--keyring", "{t}/nope.pub"], "nope.pub"),
    ("up-keyring-junk", ["up", CONFIG, "--keyring", "{t}/junk.key"], "junk.key"),
    ("up-state-dir-file", ["up", CONFIG, "--state-dir", "{t}/junk.img"], "not a directory"),
    ("up-dead-address", ["up", CONFIG, "--address", "127.0.0.1:{dead}"], "no Ray cluster answers"),
    ("up-bad-address", ["up", CONFIG, "--address", "nowhere"], "HOST:PORT"),
    ("status-none", ["status"], "no constellation is running"),
    ("status-dead-address", ["status", "--address", "127.0.0.1:{dead}"], "no Ray cluster answers"),
    ("status-json-none", ["status", "--json"], "no constellation is running"),
    ("deploy-missing", ["deploy", "{t}/nope.img", "--all"], "nope.img"),
    ("deploy-dir", ["deploy", "{t}/adir", "--to", "TB01"], "is a directory"),
    ("deploy-no-target", ["deploy", "{t}/hello.img"], "--to"),
    ("deploy-none", ["deploy", "{t}/hello.img", "--to", "TB01"], "no constellation is running"),
    ("ps-none", ["ps", "TB01"], "no constellation is running"),
    ("ps-no-sat", ["ps"], "satellite"),
    ("logs-none", ["logs", "TB01"], "no constellation is running"),
    ("logs-last", ["logs", "TB01", "--last", "-5"], "--last"),
    ("logs-severity", ["logs", "TB01", "--severity", "loud"], "--severity"),
    ("connect-none", ["connect", "TB01", "-c", "sats"], "no constellation is running"),
    ("down-none", ["down"], "no constellation is running"),
    ("submit-missing", ["submit", "{t}/nope.toml"], "nope.toml"),
    ("submit-dir", ["submit", "{t}/adir"], "is a directory"),
    ("submit-not-toml", ["submit", "{t}/not-toml.toml"], "not TOML"),
    ("submit-binary", ["submit", "{t}/binary.toml"], "not TOML"),
    ("submit-no-tasks", ["submit", "{t}/no-tasks.toml"], "no [[tasks]]"),
    ("submit-wrong-fields", ["submit", "{t}/wrong-fields.toml"], "tasks[0] is not a table"),
    ("submit-no-name", ["submit", "{t}/no-name.toml"], "no name"),
    ("submit-image-missing", ["submit", "{t}/image-missing.toml"], "nope.img"),
    ("submit-image-dir", ["submit", "{t}/image-dir.toml"], "is a directory"),
    ("submit-argv", ["submit", "{t}/argv-bad.toml"], "argv"),
    ("submit-none", ["submit", ROOT / "examples" / "tasks" / "nope.toml"], "nope.toml"),
    ("tasks-none", ["tasks"], "no constellation is running"),
    ("unknown-command", ["launch"], "launch"),
]


def _has_fault_command() -> bool:
    from orbitos.runtime.cli import build_parser

    return "fault" in build_parser().format_help()


FAULT_CASES = [
    ("fault-none", ["fault", "TB01", "node_reset", "--for", "60"], "no constellation is running"),
    ("fault-kind", ["fault", "TB01", "meteor", "--for", "60"], "meteor"),
    ("fault-duration", ["fault", "TB01", "node_reset", "--for", "-1"], ""),  # its wording is the faults helper's
    ("fault-duration-word", ["fault", "TB01", "node_reset", "--for", "soon"], "soon"),
    ("fault-no-for", ["fault", "TB01", "node_reset"], "--for"),
]


@pytest.mark.parametrize("name,argv,names", CASES + [
    pytest.param(*case, marks=pytest.mark.skipif(not _has_fault_command(), reason="no `orbitos fault` in this tree yet"))
    for case in FAULT_CASES], ids=lambda v: v if isinstance(v, str) and "/" not in v and " " not in v else None)
def test_bad_input_is_one_line_and_nonzero(files, name, argv, names):
    if "readonly" in " ".join(map(str, argv)) and os.geteuid() == 0:
        pytest.skip("root writes into a read-only directory")
    env = dict(os.environ, ORBITOS_HOME=str(files / "home"), PYTHONPATH=str(ROOT))
    env.pop("RAY_ADDRESS", None)
    dead = _dead_port()
    args = [str(a).replace("{t}", str(files)).replace("{dead}", str(dead)) for a in argv]
    done = orbitos(env, *args)
    assert done.returncode != 0, (name, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout, done.stderr
    assert "internal error" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("orbitos")]
    assert len(errors) == 1 and "error:" in errors[0], done.stderr
    assert names.lower() in errors[0].lower(), (names, done.stderr)
    assert done.elapsed_s < FAST_S


@pytest.mark.parametrize("home,names", [("stale", "no longer runs"), ("corrupt", "not an orbitos session"),
                                        ("sessiondir", "not an orbitos session")])
def test_a_stale_or_broken_session_is_an_error_in_seconds(files, home, names):
    env = dict(os.environ, ORBITOS_HOME=str(files / home), PYTHONPATH=str(ROOT))
    for command in (["status"], ["ps", "TB01"], ["logs", "TB01", "-f"], ["down"], ["tasks", "--json"]):
        done = orbitos(env, *command)
        assert done.returncode == 2 and names in done.stderr and "Traceback" not in done.stderr, done.stderr
        assert done.elapsed_s < 10.0


def test_a_session_whose_ray_is_gone_is_an_error_in_seconds(tmp_path):
    """`up` still runs (its pid is this test's) but nothing listens at the recorded address."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "session.json").write_text(json.dumps({"address": f"127.0.0.1:{_dead_port()}", "pid": os.getpid()}))
    env = dict(os.environ, ORBITOS_HOME=str(home), PYTHONPATH=str(ROOT))
    done = orbitos(env, "status")
    assert done.returncode == 2 and "no Ray cluster answers at 127.0.0.1:" in done.stderr, done.stderr
    assert done.elapsed_s < 10.0


def test_a_port_that_accepts_but_is_not_ray_is_bounded(tmp_path):
    """A listener that accepts and never speaks (a hung GCS): the command ends within its bound."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    try:
        env = dict(os.environ, ORBITOS_HOME=str(tmp_path), PYTHONPATH=str(ROOT))
        done = orbitos(env, "status", "--address", f"127.0.0.1:{server.getsockname()[1]}", timeout=40)
        assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
        assert "orbitos: error:" in done.stderr
        assert done.elapsed_s < 25.0, done.elapsed_s
    finally:
        server.close()


def test_up_claims_its_home_once_and_replaces_a_stale_session(tmp_path, monkeypatch):
    """In-process: the lock and the session checks `up` makes before it boots anything."""
    from orbitos.runtime import cli_constellation as cc

    monkeypatch.setenv("ORBITOS_HOME", str(tmp_path))
    (tmp_path / "session.json").write_text(json.dumps({"address": "127.0.0.1:9", "pid": 2 ** 22 + 7}))
    fd = cc._claim_home()  # a dead pid's session: ours to replace
    try:
        assert cc._read_session_quietly()["pid"] == 2 ** 22 + 7
        holder = subprocess.run([sys.executable, "-c", "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR); "
                                 "fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)", str(tmp_path / "up.lock")],
                                capture_output=True, text=True, timeout=30)
        assert holder.returncode != 0 and "BlockingIOError" in holder.stderr  # the lock is really held
    finally:
        os.close(fd)
    (tmp_path / "session.json").write_text(json.dumps({"address": "10.0.0.1:6379", "pid": os.getppid()}))
    with pytest.raises(cc.CliError, match=rf"already runs from .*pid {os.getppid()}, Ray at 10.0.0.1:6379"):
        cc._claim_home()  # a live pid's session (an `up` without the lock) is not taken over
    (tmp_path / "session.json").write_text("{broken")
    os.close(cc._claim_home())
    assert cc._read_session_quietly() is None and not (tmp_path / "session.json").exists()


def test_times_and_status_marks():
    import io

    from orbitos.runtime.cli_constellation import _status_table
    from orbitos.runtime.cli_output import iso_utc, mission_elapsed

    assert iso_utc(1_780_272_000.4) == "2026-06-01T00:00:00Z" and iso_utc(None) == "-"
    assert mission_elapsed(1_780_272_000 + 5025, 1_780_272_000) == "T+01:23:45"
    assert mission_elapsed(1_780_272_000 + 2 * 86_400 + 61, 1_780_272_000) == "T+2d00:01:01"
    assert mission_elapsed(1_780_271_990, 1_780_272_000) == "T-00:00:10"
    rows = [{"id": "TB01", "state": "running", "soc": 0.5, "in_eclipse": False, "links_up": 2, "apps": 1,
             "alerts": 0, "node": "a1b2c3d4e5f6a7b8", "host": "orbitos-host-0", "incarnation": 3},
            {"id": "TB02", "state": "lost", "soc": None, "in_eclipse": None, "links_up": 0, "apps": 0,
             "alerts": 0, "note": "node gone; reported lost"},
            {"id": "TB03", "state": "moving", "soc": None, "in_eclipse": None, "note": "rebooting on n2"}]
    out = io.StringIO()
    _status_table(rows, out)
    lines = out.getvalue().splitlines()
    assert lines[0].split() == ["satellite", "state", "SoC", "shadow", "links", "apps", "alerts", "node", "host",
                                "incarnation", "note"]
    assert lines[1].split()[:10] == ["TB01", "running", "50.0%", "no", "2", "1", "0", "a1b2c3d4e5f6",
                                     "orbitos-host-0", "3"]
    assert "LOST" in lines[2] and "node gone; reported lost" in lines[2]
    assert "MOVING" in lines[3] and "rebooting on n2" in lines[3]


def test_tables_never_cut_a_value_short_on_a_narrow_terminal(monkeypatch):
    import io

    from orbitos.runtime.cli_output import print_table

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setenv("COLUMNS", "40")
    out = Terminal()
    long_note = "rebooting on node " + "f" * 56
    print_table(["satellite", "state", "note"], [["TB01", "MOVING", long_note]], out)
    assert long_note in out.getvalue() and "…" not in out.getvalue()
    plain = io.StringIO()
    print_table(["satellite", "state", "note"], [["TB01", "MOVING", long_note]], plain)
    assert plain.getvalue().splitlines()[1].split() == ["TB01", "MOVING", "rebooting", "on", "node", "f" * 56]
    assert "\x1b[" not in plain.getvalue()  # no colour codes off a terminal
