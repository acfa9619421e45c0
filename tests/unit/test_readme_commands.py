"""The `orbitos` commands in README.md and docs/deploy.md work as written: every one parses with
today's options, and those that run offline (app keygen/build/verify, world on the small
constellation) run for real, in the order written, in one scratch directory."""
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from orbitos.runtime.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", ROOT / "docs" / "deploy.md"]
RUN_OFFLINE = {"app"}  # plus `world` on three-body-12 (the others take minutes)


def documented_commands(path: Path) -> list[list[str]]:
    """The orbitos command lines inside ``` blocks of `path` (prompt, comments, redirections and
    line continuations handled); each as argv after `orbitos`."""
    commands, in_block, pending = [], False, ""
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            in_block, pending = not in_block, ""
            continue
        if not in_block:
            continue
        text = pending + line.strip()
        if text.endswith("\\"):
            pending = text[:-1] + " "
            continue
        pending = ""
        text = text.removeprefix("$ ")
        words = shlex.split(text, comments=True)
        for i, word in enumerate(words):
            if word.endswith("bin/orbitos") or word == "orbitos":
                argv = words[i + 1:]
                argv = argv[:argv.index(">")] if ">" in argv else argv
                argv = argv[:argv.index(";")] if ";" in argv else argv
                commands.append(argv)
                break
    return commands


ALL = [(path.name, argv) for path in DOCS for argv in documented_commands(path)]


def test_the_docs_show_the_commands_this_test_reads():
    names = {argv[0] for _, argv in ALL if argv}
    assert {"app", "world", "up", "status", "connect", "logs", "down", "hw"} <= names, names
    assert len(ALL) >= 15


@pytest.mark.parametrize("doc,argv", ALL, ids=[f"{d}:{' '.join(a)[:50]}" for d, a in ALL])
def test_every_documented_command_parses(doc, argv):
    build_parser().parse_args(argv)  # SystemExit(2) for an option or command that does not exist


def test_the_offline_commands_run_as_written(tmp_path):
    env = dict(os.environ, ORBITOS_HOME=str(tmp_path / "home"), PYTHONPATH=str(ROOT))
    ran = []
    for doc, argv in ALL:
        offline = argv[0] in RUN_OFFLINE or (argv[0] == "world" and "three-body-12" in argv[1])
        if not offline:
            continue
        argv = [str(ROOT / a) if a.startswith(("examples/",)) else a for a in argv]
        done = subprocess.run([sys.executable, "-m", "orbitos.runtime.cli", *argv], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)
        if argv[:2] == ["app", "keygen"] and ran.count("keygen") >= 1:
            assert done.returncode == 2 and "exists" in done.stderr  # the second doc's keygen: same key
        else:
            assert done.returncode == 0, (doc, argv, done.stderr)
        ran.append(argv[1] if argv[0] == "app" else argv[0])
    assert {"keygen", "build", "verify", "world"} <= set(ran), ran
    assert (tmp_path / "ops.key").exists() and (tmp_path / "ops.pub").exists()


def test_shell_completion_completes_commands_and_options():
    """argcomplete's protocol, as bash runs it: the line in COMP_LINE, completions on fd 8."""
    for line, expected in (("orbitos sta", "status"), ("orbitos logs TB01 --sev", "--severity"),
                           ("orbitos app k", "keygen")):
        env = dict(os.environ, PYTHONPATH=str(ROOT), _ARGCOMPLETE="1", _ARGCOMPLETE_IFS="\n",
                   COMP_LINE=line, COMP_POINT=str(len(line)))
        done = subprocess.run(["bash", "-c", f"{shlex.quote(sys.executable)} -m orbitos.runtime.cli 8>&1 9>/dev/null"],
                              env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert done.returncode == 0 and expected in done.stdout.split(), (line, done.stdout, done.stderr)
