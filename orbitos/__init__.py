"""orbitos: a distributed operating-system runtime for computing satellite constellations.

The distribution installs its four packages under this one namespace, so that installing
orbitos never shadows another distribution's top-level `kernel` or `runtime`:

    orbitos.sim_hw    the physical world and the simulated hardware
    orbitos.drivers   one interface per device class, several backends
    orbitos.kernel    one satellite's operating system
    orbitos.runtime   the constellation on Ray, and the `orbitos` command line

In the source tree the four folders stay at the top level (beside this one); setuptools maps
them into the namespace (`package_dir` in setup.cfg). Run from the tree without installing
(`PYTHONPATH=.`), this file points the namespace at the tree's folders.
"""
from pathlib import Path as _Path

_TREE = _Path(__file__).resolve().parent.parent
if (_TREE / "setup.cfg").is_file() and (_TREE / "kernel" / "__init__.py").is_file():
    __path__.append(str(_TREE))  # the source tree: orbitos.kernel is <tree>/kernel
PACKAGES = ("sim_hw", "drivers", "kernel", "runtime")
