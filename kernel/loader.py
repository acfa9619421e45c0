"""Loading a verified image's code as a private package, one per process.

Each process gets a fresh package `_orbitos_pid<N>` holding the image's modules, so two
processes of the same app share no module state, and everything is dropped when the process
ends. One import hook serves every package (a dict lookup, whatever the number of processes).
An app's modules import each other relatively (`from . import util`).

Errors: OSError(ENOEXEC) when the entry module or function is missing or the code does not
compile or import (the message names the app and the Python error).
"""
from __future__ import annotations

import errno
import importlib
import importlib.abc
import importlib.util
import sys
import threading
from types import ModuleType
from typing import Any, Callable


class _ImageImporter(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self) -> None:
        self.packages: dict[str, tuple[str, dict[str, bytes]]] = {}
        self.lock = threading.Lock()

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        package = fullname.split(".", 1)[0]
        entry = self.packages.get(package)
        if entry is None:
            return None
        if fullname == package:
            return importlib.util.spec_from_loader(fullname, self, is_package=True)
        relative = fullname[len(package) + 1:].replace(".", "/")
        code = entry[1]
        if relative + ".py" in code:
            return importlib.util.spec_from_loader(fullname, self, is_package=False)
        if relative + "/__init__.py" in code:
            return importlib.util.spec_from_loader(fullname, self, is_package=True)
        return None

    def create_module(self, spec: Any) -> None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        package = module.__name__.split(".", 1)[0]
        app, code = self.packages[package]
        if module.__name__ == package:
            module.__path__ = []
            return
        relative = module.__name__[len(package) + 1:].replace(".", "/")
        filename = relative + ".py" if relative + ".py" in code else relative + "/__init__.py"
        if filename.endswith("__init__.py"):
            module.__path__ = []
        exec(compile(code[filename], f"<{app}>/{filename}", "exec"), module.__dict__)


_IMPORTER = _ImageImporter()
sys.meta_path.append(_IMPORTER)


def load_entry(package: str, app: str, code: dict[str, bytes], entry: str) -> Callable[..., Any]:
    """Import the image's entry 'module:function' inside a new package. Raises OSError(ENOEXEC)."""
    module_name, _, function = entry.partition(":")
    with _IMPORTER.lock:
        _IMPORTER.packages[package] = (app, code)
    try:
        module = importlib.import_module(f"{package}.{module_name}")
    except Exception as exc:  # the app's code is at fault, whatever it raised
        unload(package)
        raise OSError(errno.ENOEXEC, f"{app}: cannot load {module_name}: {type(exc).__name__}: {exc}") from None
    target = getattr(module, function, None)
    if not callable(target):
        unload(package)
        raise OSError(errno.ENOEXEC, f"{app}: entry {entry!r} is not a function of the image")
    return target


def unload(package: str) -> None:
    with _IMPORTER.lock:
        _IMPORTER.packages.pop(package, None)
    names = list(sys.modules)  # a copy first: other processes' threads import meanwhile
    for name in [n for n in names if n == package or n.startswith(package + ".")]:
        sys.modules.pop(name, None)
