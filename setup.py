"""Metadata is in setup.cfg. This file only maps the tree into one namespace: the four packages
keep their folders at the top level (sim_hw/, drivers/, kernel/, runtime/) and are installed as
orbitos.sim_hw, orbitos.drivers, orbitos.kernel and orbitos.runtime, so installing orbitos never
shadows another distribution's top-level `kernel` or `runtime`."""
from setuptools import find_packages, setup

TOP_LEVEL = ("sim_hw", "drivers", "kernel", "runtime")

setup(
    package_dir={"orbitos": "orbitos", **{f"orbitos.{top}": top for top in TOP_LEVEL}},
    packages=["orbitos"] + [f"orbitos.{top}{'.' + sub if sub else ''}"
                            for top in TOP_LEVEL for sub in ["", *find_packages(top)]],
)
