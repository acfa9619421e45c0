"""Installing orbitos never shadows another distribution's top-level `kernel` or `runtime`: the
wheel holds one top-level package, `orbitos`, with the four packages inside it, and the
installed package imports and runs without the source tree."""
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_wheel_holds_one_namespace_and_runs_without_the_tree(tmp_path):
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path),
                            str(ROOT)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-2000:]
    wheel = next(tmp_path.glob("orbitos-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith((".dist-info", ".data"))}
    assert top == {"orbitos"}, top
    for package in ("sim_hw", "drivers", "kernel", "runtime", "runtime/scheduler", "sim_hw/devices"):
        assert f"orbitos/{package}/__init__.py" in names, package
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "orbitos = orbitos.runtime.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()

    # unpacked away from the tree, it imports as orbitos.* and its CLI runs
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    probe = ("import sys; sys.path.insert(0, sys.argv[1]); "
             "import orbitos, orbitos.kernel.kernel, orbitos.runtime.cli as cli; "
             "assert orbitos.__file__.startswith(sys.argv[1]), orbitos.__file__; "
             "assert not any(n.split('.')[0] in orbitos.PACKAGES for n in sys.modules), 'top-level leak'; "
             "sys.exit(cli.main(['version']))")
    ran = subprocess.run([sys.executable, "-I", "-c", probe, str(site)], capture_output=True, text=True,
                         env=env, cwd=tmp_path, timeout=120)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert ran.stdout.startswith("orbitos ")
