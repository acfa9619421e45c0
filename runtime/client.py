"""One for all: a client attached to one satellite sees the whole constellation through it.

    client = Client(run, "TB03")          # run: a ConstellationRun (up, or attach to a cluster)
    client.satellites()                   # every satellite's state, each asked over the ISL network
    client.run("TB09", image, argv)       # install and start an app on another satellite
    client.read("TB09", "/data/out.bin")  # a file from another satellite
    client.send("TB09", 5000, {"hello": 1})
    client.submit({"name": "ndwi", "ops": {"gpu": 1e15}, "deadline_s": 600})  # to the scheduler

Every request is signed by the run's operator key (`runtime.control`: for the target, the
operation, its arguments, a fresh sequence number and the gateway), leaves from the gateway
satellite, crosses the ISL network hop by hop with the contact plan's latency to its target, is
performed there by the control table, and its reply comes back the same way
(`SatelliteHost.request`); a refused request raises OSError(EACCES) saying why. What is out of reach raises `OutOfReach`, which says when a request
sent now would arrive (`next_reachable_utc_s`, None when the plan holds no path at all); a
failure on the far side raises OSError with the far side's errno and message.
"""
from __future__ import annotations

import errno
from typing import Any

from orbitos.runtime.satellite_host import CLIENT_TTL_S


class OutOfReach(OSError):
    """The target cannot be reached from the gateway within the request's time to live."""

    def __init__(self, satellite: str, via: str, reason: str, next_reachable_utc_s: float | None) -> None:
        when = ("no path in the contact plan" if next_reachable_utc_s is None
                else f"a request sent now would arrive at {next_reachable_utc_s:.1f} (UTC POSIX s)")
        super().__init__(errno.EHOSTUNREACH, f"{satellite} is out of reach from {via}: {reason}; {when}")
        self.satellite = satellite
        self.next_reachable_utc_s = next_reachable_utc_s


class Client:
    def __init__(self, run: Any, gateway: str, ttl_s: float = CLIENT_TTL_S) -> None:
        """Raises KeyError naming an unknown gateway satellite, LookupError for a lost one."""
        run._actor(gateway)
        self.run = run
        self.gateway = gateway
        self.ttl_s = ttl_s
        self.last: dict[str, Any] = {}  # the last answer whole: route, latency, ...

    def _check(self, answer: dict[str, Any]) -> dict[str, Any]:
        self.last = answer
        if answer.get("ok"):
            return answer
        if answer.get("reachable") is False:
            raise OutOfReach(answer["satellite"], answer["via"], answer["error"], answer["next_reachable_utc_s"])
        raise OSError(answer.get("errno") or errno.EIO, f"{answer['satellite']}: {answer.get('error')}")

    def request(self, satellite: str, op: str, args: dict[str, Any] | None = None) -> Any:
        """Perform a control operation on `satellite` through the gateway; its value. Raises
        KeyError (unknown satellite), OutOfReach, OSError from the far side."""
        return self._check(self.run.request(self.gateway, [satellite], op, args, self.ttl_s)[0])["value"]

    def satellites(self) -> list[dict[str, Any]]:
        """Every satellite's status row as its own reply says, with `reachable`, `route` and
        `round_trip_s`; one out of reach has `next_reachable_utc_s` instead."""
        answers = self.run.request(self.gateway, list(self.run.satellites), "status", {}, self.ttl_s)
        rows = []
        for satellite, answer in zip(self.run.satellites, answers):
            if answer.get("ok"):
                rows.append(dict(answer["value"], reachable=True, route=answer["route"],
                                 round_trip_s=answer["round_trip_s"]))
            else:
                rows.append({"id": satellite, "reachable": False, "error": answer.get("error"),
                             "next_reachable_utc_s": answer.get("next_reachable_utc_s")})
        return rows

    def status(self, satellite: str) -> dict[str, Any]:
        return self.request(satellite, "status")

    def ps(self, satellite: str) -> list[dict[str, Any]]:
        return self.request(satellite, "ps")

    def logs(self, satellite: str, last: int = 50) -> list[dict[str, Any]]:
        return self.request(satellite, "logs", {"last": last})

    def run_app(self, satellite: str, image: bytes, argv: tuple[str, ...] = ()) -> int:
        """Install and start a signed image on `satellite`; its pid. Raises OSError(EACCES) for
        an image the satellite refuses."""
        return self.request(satellite, "deploy", {"image": image, "argv": list(argv)})

    def read(self, satellite: str, path: str) -> bytes:
        return self.request(satellite, "read", {"path": path})

    def listdir(self, satellite: str, path: str = "/") -> list[str]:
        return self.request(satellite, "listdir", {"path": path})

    def send(self, satellite: str, port: int, message: Any) -> dict[str, Any]:
        """A message to a port of `satellite`; the route and its latency. Raises OutOfReach."""
        return self._check(self.run.send_from(self.gateway, satellite, port, message, self.ttl_s))

    def submit(self, task: dict[str, Any]) -> dict[str, Any]:
        """Hand a task to the global scheduler as submitted from the gateway satellite; its
        record (placed, or refused with the reason). Raises LookupError without a scheduler."""
        return self.run.submit(task, self.gateway)

    def tasks(self) -> list[dict[str, Any]]:
        return self.run.tasks()
