"""The constellation CLI end to end, each command its own process as a user runs it: `orbitos
up` in the foreground on its own embedded Ray, then status, deploy, ps, logs, connect and down
from other processes, and bad input refused with a message naming it."""
import json
import re
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "examples" / "constellations" / "three-body-12.toml"


def orbitos(env, *args, timeout=60):
    return subprocess.run([sys.executable, "-m", "runtime.cli", *args], env=env, capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


@pytest.mark.slow
def test_up_status_deploy_ps_logs_connect_down(tmp_path):
    env = dict(os.environ, ORBITOS_HOME=str(tmp_path / "home"))
    assert orbitos(env, "app", "keygen", str(tmp_path / "key")).returncode == 0
    assert orbitos(env, "app", "build", str(ROOT / "examples" / "apps" / "hello"), "--key",
                   str(tmp_path / "key"), "-o", str(tmp_path / "hello.img")).returncode == 0
    bad = orbitos(env, "up", str(CONFIG), "--speed", "-3")
    assert bad.returncode == 2 and "--speed must be in (0, 10000]" in bad.stderr
    none = orbitos(env, "status")
    assert none.returncode == 2 and "orbitos: error:" in none.stderr

    state = tmp_path / "state"
    up = subprocess.Popen([sys.executable, "-m", "runtime.cli", "up", str(CONFIG), "--speed", "120",
                           "--hours", "1", "--num-cpus", "2", "--keyring", str(tmp_path / "key.pub"),
                           "--state-dir", str(state)], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True)
    try:
        first = up.stdout.readline()
        assert first.startswith("up: 12 satellites on 2 hosts (packed)"), first
        time.sleep(2.0)  # past the epoch and the links' acquisition
        status = orbitos(env, "status", "--json")
        assert status.returncode == 0, status.stderr
        rows = json.loads(status.stdout)
        assert [r["id"] for r in rows] == [f"TB{i:02d}" for i in range(1, 13)]
        assert all(r["state"] == "running" for r in rows)
        # control requests are signed with the operator key `up` wrote (owner-only) and recorded
        operator = tmp_path / "home" / "operator.key"
        assert operator.stat().st_mode & 0o777 == 0o600
        assert json.loads((tmp_path / "home" / "session.json").read_text())["operator_key"] == str(operator)
        table = orbitos(env, "status").stdout
        assert table.splitlines()[0].split() == ["satellite", "state", "SoC", "shadow", "links", "apps", "alerts"]

        deployed = orbitos(env, "deploy", str(tmp_path / "hello.img"), "--to", "TB05", "--arg", "cli")
        assert deployed.returncode == 0 and deployed.stdout.startswith("TB05: pid "), deployed.stderr
        unsigned = tmp_path / "junk.img"
        unsigned.write_bytes(b"not an image")
        refused = orbitos(env, "deploy", str(unsigned), "--all")
        assert refused.returncode == 2 and "refused" in refused.stderr
        assert "hello" in orbitos(env, "ps", "TB05").stdout
        assert "HELLO" in orbitos(env, "logs", "TB05").stdout
        unknown = orbitos(env, "ps", "XX99")
        assert unknown.returncode == 2 and "XX99" in unknown.stderr
        operator.rename(operator.with_suffix(".moved"))  # without the key, no control at all
        keyless = orbitos(env, "status")
        assert keyless.returncode == 2 and "no operator key" in keyless.stderr, keyless.stderr
        operator.with_suffix(".moved").rename(operator)

        shell = orbitos(env, "connect", "TB01", "-c", "status TB07", "-c", "cat TB05 /images/hello.img",
                        "-c", "cat TB05 /nope", "-c", "send TB03 5000 hi")
        assert shell.returncode == 0, shell.stderr
        assert re.search(r"via TB01( > TB\d\d){5} > TB07, [\d.]+ ms simulated", shell.stdout)  # 6 hops either way
        assert "error: TB05: /nope: no such file or directory" in shell.stdout
        assert "sent: arrives in" in shell.stdout and "via TB01 > TB02 > TB03" in shell.stdout
        assert (state / "TB05.img").exists()  # the satellites' storage is on disk

        taskfile = tmp_path / "tasks.toml"
        taskfile.write_text('[[tasks]]\nname = "hello-task"\nops = { gpu = 1e15 }\ndeadline_s = 3600\n'
                            'image = "hello.img"\nargv = ["scheduled"]\n\n'
                            '[[tasks]]\nname = "bad"\nops = { tpu = 1e9 }\n')
        submitted = orbitos(env, "submit", str(taskfile))
        assert submitted.returncode == 0, submitted.stderr
        assert re.search(r"hello-task: placed on TB\d\d gpu at", submitted.stdout)
        assert "bad: refused: task 'bad': field 'ops' names unknown device kind 'tpu'" in submitted.stdout
        listed = json.loads(orbitos(env, "tasks", "--json").stdout)
        assert {t["task"] for t in listed} == {"hello-task"}

        down = orbitos(env, "down")
        assert down.returncode == 0 and "down: 12 satellites stopped" in down.stdout
        assert up.wait(timeout=60) == 0
        assert "down: the constellation was stopped" in up.stdout.read()
        assert not (tmp_path / "home" / "session.json").exists()
    finally:
        if up.poll() is None:
            up.terminate()
            up.wait(timeout=60)
