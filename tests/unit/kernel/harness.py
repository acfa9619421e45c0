"""Helpers for kernel tests: signed test apps, kernels on a virtual clock, a scripted app.

The scripted app runs Python statements given in its argv with `sys` (the syscall handle) in
scope and `out(value)` to report; `check(fn, *args)` runs one call and reports "ok" or the errno
name it failed with, or "BAD:<type>" for anything that is not an OSError (which must never happen).
"""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from orbitos.kernel.image import Keyring, build_image, generate_key, load_private_key
from orbitos.kernel.kernel import Kernel, KernelConfig
from orbitos.sim_hw.clock import VirtualClock
from orbitos.sim_hw.hardware import SatelliteHardware
from orbitos.sim_hw.profile import load_profile
from orbitos.sim_hw.track import SatelliteTrack

ROOT = Path(__file__).resolve().parents[3]
PROFILE = load_profile(ROOT / "examples" / "profiles" / "three-body.toml")
T0 = 1_780_272_000.0

SCRIPT_APP = '''
import errno


def main(sys, argv):
    results = []

    def out(value):
        results.append(value)

    def check(fn, *args, **kwargs):
        try:
            value = fn(*args, **kwargs)
            out("ok")
            return value
        except OSError as exc:
            out(errno.errorcode.get(exc.errno, str(exc.errno)))
        except Exception as exc:
            out("BAD:" + type(exc).__name__ + ":" + str(exc))

    scope = {"sys": sys, "out": out, "check": check, "errno": errno}
    try:
        exec(argv[0], scope)
    finally:
        if "test.out" in argv[1:]:
            try:
                sys.publish("test.out", results)
            except OSError:
                pass
    return 0
'''


def manifest_toml(name: str, priority: str = "normal", capabilities: dict[str, Any] | None = None,
                  limits: dict[str, Any] | None = None, watchdog: dict[str, Any] | None = None) -> str:
    def table(title: str, values: dict[str, Any] | None) -> str:
        if not values:
            return ""
        lines = [f"[{title}]"]
        for key, value in values.items():
            if isinstance(value, bool):
                lines.append(f"{key} = {'true' if value else 'false'}")
            elif isinstance(value, str):
                lines.append(f'{key} = "{value}"')
            elif isinstance(value, (list, tuple)):
                items = ", ".join(f'"{v}"' if isinstance(v, str) else str(v) for v in value)
                lines.append(f"{key} = [{items}]")
            else:
                lines.append(f"{key} = {value}")
        return "\n".join(lines) + "\n"

    capabilities = dict(capabilities or {})
    capabilities.setdefault("publish", ["test.out"])
    if "test.out" not in capabilities["publish"]:
        capabilities["publish"] = list(capabilities["publish"]) + ["test.out"]
    return (f'name = "{name}"\nversion = "1.0.0"\nentry = "app:main"\npriority = "{priority}"\n'
            + table("capabilities", capabilities) + table("limits", limits) + table("watchdog", watchdog))


class Signer:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        generate_key(directory / "test.key")
        self.key = load_private_key(directory / "test.key")
        self.keyring = Keyring([self.key.public_key()])
        self._count = 0

    def image(self, code: str = SCRIPT_APP, name: str = "script", **manifest: Any) -> bytes:
        self._count += 1
        app = self.directory / f"app{self._count}"
        app.mkdir()
        (app / "manifest.toml").write_text(manifest_toml(name, **manifest))
        (app / "app.py").write_text(textwrap.dedent(code))
        return build_image(app, self.key)

    def example(self, name: str) -> bytes:
        return build_image(ROOT / "examples" / "apps" / name, self.key)


def make_kernel(signer: Signer, hardware: SatelliteHardware | None = None, satellite_id: str = "TB01",
                config: KernelConfig = KernelConfig(), clock: VirtualClock | None = None) -> Kernel:
    clock = clock or VirtualClock(T0)
    if hardware is None:
        hardware = SatelliteHardware(PROFILE, satellite_id, SatelliteTrack.reference(satellite_id, T0))
    return Kernel(PROFILE, clock, signer.keyring, satellite_id=satellite_id, hardware=hardware,
                  config=config)


def run_script(kernel: Kernel, signer: Signer, statements: str, timeout_s: float = 3600.0,
               **manifest: Any) -> tuple[dict[str, Any], list[Any]]:
    """Spawn the scripted app with these statements; (wait result, reported values).
    The caller must be a participant of the kernel's clock."""
    outputs = kernel.bus.subscribe("test.out", 1000, lambda: None)
    try:
        pid = kernel.spawn(signer.image(**manifest), [textwrap.dedent(statements), "test.out"])
        result = kernel.wait(pid, timeout_s)
        messages = [kernel.bus.take(outputs) for _ in range(len(outputs.queue))]
    finally:
        kernel.bus.unsubscribe(outputs)
    values = messages[-1]["data"] if messages else []
    return result, values
