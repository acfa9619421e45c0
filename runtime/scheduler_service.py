"""The scheduler as a service of the running constellation: tasks come in (`sys.submit` from an
app, `orbitos submit TASKFILE`, the Python client), are placed by the orbitos policy over the
constellation's state, and are dispatched for real when their start comes: each input file is
read from its holder by the chosen satellite over the ISL network and written there, then the
task's signed app image is installed and started on the chosen satellite's kernel with the
input paths as its arguments. Status, placement and the reasons for any refusal come back to
the submitter; `tasks()` lists them all.

Plain Python over two callables: `request(gateway, target, op, args)` (a control request over
the ISL network, `SatelliteHost.request`) and `now()` (the run's clock). The Ray layer wraps it in
a named actor.
"""
from __future__ import annotations

import threading
from typing import Any, Callable

from runtime.scheduler.engine import PlanBuilder
from runtime.scheduler.model import Task, TaskError, task_from_dict
from runtime.scheduler.policies import plan
from runtime.scheduler.state import ConstellationState

Request = Callable[[str, str, str, dict[str, Any]], dict[str, Any]]


class SchedulerService:
    def __init__(self, state: ConstellationState, request: Request, now: Callable[[], float],
                 speed: float, policy: str = "orbitos") -> None:
        self.state = state
        self.request = request
        self.now = now
        self.speed = speed
        self.policy = policy
        self.builder = PlanBuilder(state)
        self.records: dict[str, dict[str, Any]] = {}
        self._payloads: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._running = True
        self._thread = threading.Thread(target=self._dispatch_loop, name="scheduler-dispatch", daemon=True)
        self._thread.start()

    def submit(self, data: dict[str, Any], submitted_by: str | None = None) -> dict[str, Any]:
        """Place one task; its record: {task, status: placed | refused, satellite, device,
        start_utc_s, completion_utc_s, deadline_met | reason}. A malformed task is refused with
        the reason naming the field; a task name used before is refused."""
        now = self.now()
        image = data.get("image") if isinstance(data, dict) else None
        argv = data.get("argv", []) if isinstance(data, dict) else []
        paths = {}
        fields = {k: v for k, v in data.items() if k not in ("image", "argv")} if isinstance(data, dict) else data
        if isinstance(fields, dict):
            for item in fields.get("inputs", ()) or ():
                if isinstance(item, dict) and "path" in item:
                    paths[item.get("name")] = item["path"]
            fields = dict(fields, inputs=[{k: v for k, v in i.items() if k != "path"} if isinstance(i, dict) else i
                                          for i in fields.get("inputs", ()) or ()])
        try:
            task = task_from_dict(fields, now, submitted_by)
            if image is not None and not isinstance(image, bytes):
                raise TaskError(f"task {task.name!r}: field 'image' must be a signed app image (bytes)")
            if not isinstance(argv, list | tuple) or not all(isinstance(a, str) for a in argv):
                raise TaskError(f"task {task.name!r}: field 'argv' must be a list of strings")
        except TaskError as exc:
            name = fields.get("name") if isinstance(fields, dict) else None
            return {"task": name, "status": "refused", "reason": str(exc)}
        with self._lock:
            if task.name in self.records:
                return {"task": task.name, "status": "refused", "reason": f"a task named {task.name!r} "
                        "was submitted before"}
            result = plan(self.state, [task], self.policy, builder=self.builder)
            if task.name in result.unplaced:
                record = {"task": task.name, "status": "refused", "reason": result.unplaced[task.name].reason,
                          "submitted_by": submitted_by}
            else:
                a = result.assignments[task.name]
                record = {"task": task.name, "status": "placed", "satellite": a.satellite, "device": a.device,
                          "start_utc_s": a.start_utc_s, "end_utc_s": a.end_utc_s,
                          "completion_utc_s": a.completion_utc_s, "deadline_met": a.deadline_met,
                          "energy_wh": round(a.energy_wh, 3), "submitted_by": submitted_by,
                          "inputs_from": {t.object_name: list(t.nodes) for t in a.transfers_in}}
                self._payloads[task.name] = {"task": task, "image": image, "argv": list(argv), "paths": paths}
            self.records[task.name] = record
        self._wake.set()
        return dict(record)

    def tasks(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self.records.values()]

    def _dispatch_loop(self) -> None:
        while self._running:
            with self._lock:
                due = sorted((r["start_utc_s"], name) for name, r in self.records.items() if r["status"] == "placed")
            now = self.now()
            ready = [name for start, name in due if start <= now]
            for name in ready:
                self._dispatch(name)
            wait = (due[0][0] - now) / self.speed if due and not ready else 1.0
            self._wake.wait(max(0.01, min(wait, 1.0)))
            self._wake.clear()

    def _dispatch(self, name: str) -> None:
        with self._lock:
            record = self.records[name]
            record["status"] = "dispatching"
            payload = self._payloads[name]
        task: Task = payload["task"]
        satellite = record["satellite"]
        try:
            arguments = []
            for obj in task.inputs:
                path = payload["paths"].get(obj.name)
                if path is None or satellite in obj.holders:
                    if path is not None:
                        arguments.append(path)
                    continue
                read = self.request(satellite, obj.holders[0], "read", {"path": path})
                if not read.get("ok"):
                    raise OSError(read.get("errno") or 5, f"input {obj.name}: {read.get('error')}")
                wrote = self.request(satellite, satellite, "write", {"path": path, "data": read["value"]})
                if not wrote.get("ok"):
                    raise OSError(wrote.get("errno") or 5, f"input {obj.name} not written: {wrote.get('error')}")
                arguments.append(path)
            pid = None
            if payload["image"] is not None:
                started = self.request(satellite, satellite, "run",
                                       {"image": payload["image"], "argv": arguments + payload["argv"]})
                if not started.get("ok"):
                    raise OSError(started.get("errno") or 5, f"not started: {started.get('error')}")
                pid = started["value"]
            with self._lock:
                record.update(status="running" if pid is not None else "dispatched", pid=pid,
                              dispatched_utc_s=self.now(), inputs=arguments)
        except OSError as exc:
            with self._lock:
                record.update(status="failed", reason=str(exc.strerror or exc))

    def close(self) -> None:
        self._running = False
        self._wake.set()
        self._thread.join(timeout=5.0)
