"""The constellation CLI end to end, each command its own process as a user runs it: ONE
`orbitos up` in the foreground on its own embedded Ray (module-scoped), then status, deploy, ps,
logs (times, severity, follow), connect, submit, tasks and down from other processes, bad input
refused with one line naming it, and a second `up` refused while the first runs."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "examples" / "constellations" / "three-body-12.toml"
ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"

pytestmark = pytest.mark.slow


def orbitos(env, *args, timeout=90):
    return subprocess.run([sys.executable, "-m", "orbitos.runtime.cli", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    """One running `orbitos up` for the whole module: (env, tmp, up process, its first line).
    At 120x, 8 simulated hours last 4 wall minutes: past them the contact plan has no links."""
    tmp = tmp_path_factory.mktemp("cli-up")
    env = dict(os.environ, ORBITOS_HOME=str(tmp / "home"), PYTHONPATH=str(ROOT))
    env.pop("RAY_ADDRESS", None)
    env.pop("RAY_AUTH_MODE", None)  # what a user has: Ray's default (token auth for a local cluster)
    assert orbitos(env, "app", "keygen", tmp / "key").returncode == 0
    assert orbitos(env, "app", "build", ROOT / "examples" / "apps" / "hello", "--key", tmp / "key",
                   "-o", tmp / "hello.img").returncode == 0
    up = subprocess.Popen([sys.executable, "-m", "orbitos.runtime.cli", "up", str(CONFIG), "--speed", "120",
                           "--hours", "8", "--num-cpus", "2", "--hosts", "2", "--keyring", str(tmp / "key.pub"),
                           "--state-dir", str(tmp / "state")], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
    first = up.stdout.readline()
    if not first.startswith("up:"):
        up.kill()
        pytest.fail(f"up did not start: {first!r} {up.stderr.read()[-2000:]}")
    time.sleep(2.0)  # past the epoch and the links' acquisition
    yield env, tmp, up, first
    if up.poll() is None:
        up.send_signal(signal.SIGINT)
        try:
            up.wait(timeout=60)
        except subprocess.TimeoutExpired:
            up.kill()


def test_status_table_and_json_with_simulated_time(cli):
    env, tmp, up, first = cli
    assert first.startswith("up: 12 satellites on 2 hosts (packed)"), first
    status = orbitos(env, "status", "--json")
    assert status.returncode == 0, status.stderr
    rows = json.loads(status.stdout)
    assert [r["id"] for r in rows] == [f"TB{i:02d}" for i in range(1, 13)]
    assert all(r["state"] == "running" for r in rows)
    assert re.fullmatch(ISO, rows[0]["sim_now_utc"]) and rows[0]["mission_elapsed"].startswith("T+")
    table = orbitos(env, "status").stdout.splitlines()
    assert re.fullmatch(rf"simulated time {ISO} \(T\+\d\d:\d\d:\d\d\)", table[0]), table[0]
    assert table[1].split()[:7] == ["satellite", "state", "SoC", "shadow", "links", "apps", "alerts"]
    assert sum(1 for line in table if re.match(r"\s*TB\d\d\s+running", line)) == 12


def test_status_with_the_address_of_a_running_up(cli, tmp_path):
    """--address as Ray documents it, from a home without a session: Ray's token auth just works."""
    env, tmp, up, first = cli
    address = re.search(r"Ray at (\S+);", first).group(1)
    other = dict(env, ORBITOS_HOME=str(tmp_path / "elsewhere"))
    (tmp_path / "elsewhere").mkdir()  # another machine: it needs the operator key, nothing else
    shutil.copy2(tmp / "home" / "operator.key", tmp_path / "elsewhere" / "operator.key")
    started = time.monotonic()
    status = orbitos(other, "status", "--json", "--address", address)
    assert status.returncode == 0, status.stderr
    assert len(json.loads(status.stdout)) == 12
    assert time.monotonic() - started < 30


def test_control_is_signed_with_the_operator_key_up_wrote(cli, tmp_path):
    """`up` writes the operator key owner-only and records it; without it no command controls."""
    env, tmp, up, first = cli
    operator = tmp / "home" / "operator.key"
    assert operator.stat().st_mode & 0o777 == 0o600
    assert json.loads((tmp / "home" / "session.json").read_text())["operator_key"] == str(operator)
    address = re.search(r"Ray at (\S+);", first).group(1)
    keyless = orbitos(dict(env, ORBITOS_HOME=str(tmp_path / "keyless")), "status", "--address", address)
    assert keyless.returncode == 2 and "no operator key" in keyless.stderr, keyless.stderr
    assert "Traceback" not in keyless.stderr


def test_a_second_up_is_refused_naming_the_first(cli):
    env, tmp, up, first = cli
    second = orbitos(env, "up", CONFIG, "--speed", "120", "--num-cpus", "1", timeout=30)
    assert second.returncode == 2, second.stderr
    assert f"pid {up.pid}" in second.stderr and "already runs" in second.stderr, second.stderr
    assert json.loads((tmp / "home" / "session.json").read_text())["pid"] == up.pid  # untouched


def test_deploy_ps_logs_with_times_severity_and_json(cli):
    env, tmp, up, first = cli
    deployed = orbitos(env, "deploy", tmp / "hello.img", "--to", "TB05", "--arg", "cli")
    assert deployed.returncode == 0 and deployed.stdout.startswith("TB05: pid "), deployed.stderr
    assert "hello" in orbitos(env, "ps", "TB05").stdout
    assert any(p["name"] == "hello" for p in json.loads(orbitos(env, "ps", "TB05", "--json").stdout))
    logs = orbitos(env, "logs", "TB05").stdout
    assert re.search(rf"^{ISO}\s+T\+\d\d:\d\d:\d\d\s+\d+ info\s+HELLO", logs, re.M), logs
    events = [json.loads(line) for line in orbitos(env, "logs", "TB05", "--json", "--last", "100").stdout.splitlines()]
    assert events and all(re.fullmatch(ISO, e["time_utc"]) for e in events)
    warnings = [json.loads(line) for line in
                orbitos(env, "logs", "TB05", "--json", "--last", "100", "--severity", "warning").stdout.splitlines()]
    assert all(e["severity"] in ("warning", "error", "critical") for e in warnings)
    assert len(warnings) < len(events)


def test_logs_follow_prints_new_events_and_ctrl_c_ends_it(cli):
    env, tmp, up, first = cli
    follow = subprocess.Popen([sys.executable, "-m", "orbitos.runtime.cli", "logs", "TB06", "-f", "--last", "1"],
                              env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(6.0)  # attached and printing the last event
        assert orbitos(env, "deploy", tmp / "hello.img", "--to", "TB06").returncode == 0
        time.sleep(4.0)  # a few polls
    finally:
        follow.send_signal(signal.SIGINT)
        out, err = follow.communicate(timeout=30)
    assert follow.returncode == 0, err
    assert "Traceback" not in err
    assert "HELLO" in out or "APP_START" in out, out


def test_bad_input_on_a_running_constellation(cli):
    env, tmp, up, first = cli
    unsigned = tmp / "junk.img"
    unsigned.write_bytes(b"not an image")
    cases = [
        (["deploy", unsigned, "--all"], 2, "refused"),
        (["deploy", tmp / "hello.img", "--to", "XX99"], 2, "XX99"),
        (["ps", "XX99"], 2, "XX99"),
        (["logs", "XX99"], 2, "XX99"),
        (["logs", "XX99", "-f"], 2, "XX99"),
        (["connect", "XX99", "-c", "sats"], 2, "XX99"),
        (["connect", "TB01", "-c", "cat TB05 /nope"], 1, "1 of 1 commands failed"),
        (["connect", "TB01", "-c", "frobnicate"], 1, "1 of 1 commands failed"),
        (["connect", "TB01", "-c", "run TB02 /nonexistent.img"], 1, "failed"),
    ]
    for argv, code, names in cases:
        done = orbitos(env, *argv)
        assert done.returncode == code and names in done.stderr, (argv, done.returncode, done.stderr)
        assert "Traceback" not in done.stderr + done.stdout, done.stderr


def test_connect_submit_tasks(cli):
    env, tmp, up, first = cli
    shell = orbitos(env, "connect", "TB01", "-c", "status TB07", "-c", "send TB03 5000 hi")
    assert shell.returncode == 0, shell.stderr
    assert re.search(r"via TB01( > TB\d\d){5} > TB07, [\d.]+ ms simulated", shell.stdout)  # 6 hops either way
    assert "sent: arrives in" in shell.stdout and "via TB01 > TB02 > TB03" in shell.stdout
    assert (tmp / "state" / "TB05.img").exists() or (tmp / "state" / "TB01.img").exists()

    taskfile = tmp / "tasks.toml"
    taskfile.write_text('[[tasks]]\nname = "hello-task"\nops = { gpu = 1e15 }\ndeadline_s = 3600\n'
                        'image = "hello.img"\nargv = ["scheduled"]\n\n'
                        '[[tasks]]\nname = "bad"\nops = { tpu = 1e9 }\n')
    submitted = orbitos(env, "submit", taskfile)
    assert submitted.returncode == 1, submitted.stderr  # one task refused
    assert re.search(rf"hello-task: placed on TB\d\d gpu at {ISO}", submitted.stdout), submitted.stdout
    assert "bad: refused: task 'bad': field 'ops' names unknown device kind 'tpu'" in submitted.stdout
    assert "1 of 2 tasks refused" in submitted.stderr and "Traceback" not in submitted.stderr
    listed = json.loads(orbitos(env, "tasks", "--json").stdout)
    assert {t["task"] for t in listed} == {"hello-task"}


def test_zz_down_stops_up_and_removes_the_session(cli):
    env, tmp, up, first = cli
    down = orbitos(env, "down", "--json")
    assert down.returncode == 0 and json.loads(down.stdout)["stopped"] == 12, down.stderr
    assert up.wait(timeout=60) == 0
    assert "down: the constellation was stopped" in up.stdout.read()
    assert not (tmp / "home" / "session.json").exists()
    after = orbitos(env, "status", timeout=30)
    assert after.returncode == 2 and "no constellation is running" in after.stderr
