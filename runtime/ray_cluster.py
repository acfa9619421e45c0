"""Starting or joining Ray, and the names a constellation's actors have on it.

`start_ray` starts an embedded local Ray (CPUs and object store set explicitly, no dashboard,
quiet driver logs) or joins the cluster at `address`, shipping the project's four packages to
every node as `runtime_env` py_modules. `labelled_nodes` lists the alive nodes that carry a
satellite label, for placement "node".
"""
from __future__ import annotations

import atexit
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import ray

import orbitos

HOST_PREFIX = "orbitos-host-"
HOST_NAME = HOST_PREFIX + "{}"
SCHEDULER_NAME = "orbitos-scheduler"
NAMESPACE = "orbitos"
SATELLITE_LABEL = "orbitos.sat"
_STAGED: str | None = None


def start_ray(address: str | None = None, num_cpus: int | None = None,
              object_store_bytes: int = 256 * 1024 * 1024, dashboard: bool = False,
              ship_code: bool = True) -> bool:
    """Join `address`, or start an embedded local Ray if none is running. Returns True when this
    call started Ray (and so should shut it down). Joining a cluster ships the project's four
    packages to it as `runtime_env` py_modules (`ship_code`), so no node needs it installed."""
    if ray.is_initialized():
        return False
    if address is None:
        ray.init(num_cpus=num_cpus, include_dashboard=dashboard, log_to_driver=False,
                 object_store_memory=object_store_bytes, namespace=NAMESPACE)
    elif ship_code:
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=False,
                 runtime_env={"py_modules": [shippable_package()]})
    else:  # a control command on a running constellation: nothing to ship, nothing to say
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=False,
                 logging_level=logging.WARNING)
    return True


def shippable_package() -> str:
    """A directory named `orbitos` holding the whole package, for Ray's py_modules. Installed,
    that is the package itself; in the source tree (the four folders beside `orbitos/`), a
    staged copy in a temporary directory, made once per process and removed at its exit."""
    package = Path(orbitos.__file__).resolve().parent
    if all((package / name / "__init__.py").is_file() for name in orbitos.PACKAGES):
        return str(package)
    global _STAGED
    if _STAGED is None:
        staged = Path(tempfile.mkdtemp(prefix="orbitos-ship-")) / "orbitos"
        staged.mkdir()
        shutil.copy2(package / "__init__.py", staged / "__init__.py")
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        for name in orbitos.PACKAGES:
            shutil.copytree(package.parent / name, staged / name, ignore=ignore)
        atexit.register(shutil.rmtree, staged.parent, True)
        _STAGED = str(staged)
    return _STAGED


def why_unanswered(exc: BaseException, timeout_s: float, actor: str = "host actor") -> str:
    """What a failed bounded Ray call says about its actor: no answer in time, or dead or
    unavailable as Ray reports it, or the error raised inside it."""
    from ray.exceptions import ActorDiedError, GetTimeoutError, RayActorError

    if isinstance(exc, GetTimeoutError):
        return f"no answer within {timeout_s:g} s (stopped or stuck)"
    if isinstance(exc, RayActorError):
        return f"{type(exc).__name__}: Ray reports the {actor} " + \
            ("dead" if isinstance(exc, ActorDiedError) else "unavailable")
    return f"{type(exc).__name__}: {str(exc).strip()[:200]}"


def wait_all(refs: dict[Any, Any], timeout_s: float) -> tuple[dict[Any, Any], dict[Any, str]]:
    """The results of Ray calls made at once, waited for together at most `timeout_s` (wall
    time): (answers by key, what went wrong by key: no answer in time, the actor dead or
    unavailable, an error inside it). Never raises for a call that fails."""
    from ray.exceptions import GetTimeoutError

    ready = set(ray.wait(list(refs.values()), num_returns=len(refs), timeout=timeout_s)[0]) if refs else set()
    answers: dict[Any, Any] = {}
    failed: dict[Any, str] = {}
    for key, ref in refs.items():
        if ref not in ready:
            failed[key] = why_unanswered(GetTimeoutError(), timeout_s)
            continue
        try:
            answers[key] = ray.get(ref, timeout=0)
        except Exception as exc:  # noqa: BLE001 - an error inside the actor: reported, not raised
            failed[key] = why_unanswered(exc, timeout_s)
    return answers, failed


STOPPING_KEY = "stopping"


def mark_stopping(stopping: bool = True) -> None:
    """Tell every process of the cluster that the constellation is being taken down on purpose
    (`down`, from any process), so that the supervisor of the run that started it does not take
    the hosts it sees die for faults. Kept in the GCS key-value store (Ray's internal KV: the
    one place this module touches that API)."""
    from ray.experimental import internal_kv

    if stopping:
        internal_kv._internal_kv_put(STOPPING_KEY, b"1", namespace=NAMESPACE)
    else:
        internal_kv._internal_kv_del(STOPPING_KEY, namespace=NAMESPACE)


def is_stopping() -> bool:
    """True once some process called `mark_stopping` for this cluster's constellation."""
    from ray.experimental import internal_kv

    return internal_kv._internal_kv_get(STOPPING_KEY, namespace=NAMESPACE) is not None


def labelled_nodes(label: str = SATELLITE_LABEL) -> dict[str, str]:
    """Alive Ray nodes carrying `label`: {label value: node id}."""
    return {n["Labels"][label]: n["NodeID"] for n in ray.nodes()
            if n.get("Alive") and label in (n.get("Labels") or {})}
