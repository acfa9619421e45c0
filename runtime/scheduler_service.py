"""The scheduler as a service of the running constellation: tasks come in (`sys.submit` from an
app, `orbitos submit TASKFILE`, the Python client), are placed by the orbitos policy over the
constellation's state, and are dispatched for real when their start comes: each input file is
read from its holder by the chosen satellite over the ISL network and written there, then the
task's signed app image is run once (control op "run": spawned, not installed, so it does not
start again at the next boot) on the chosen satellite's kernel with the input paths as its
arguments. The kernel reports the process's end (`task_ended`), so a task goes
placed -> dispatching -> running -> done | failed (with its exit code). Status, placement and
the reasons for any refusal come back to the submitter; `tasks()` lists them all.

What it checks at submit (a refusal names the field): the task's fields (`task_from_dict`), its
image (signed by a key of the run's keyring: `kernel.image.verify_image`), the satellites its
inputs and output name. Before each decision it reads the live batteries (`read_soc`); when
that fails the record says so and the forecast is used.

The dispatch loop is a `kernel.services.SupervisedService`: one task whose dispatch fails is
marked failed with the reason (a transient OSError is retried, at most `MAX_ATTEMPTS` times) and
the loop goes on; a pass that fails is an event, counted, and retried after a backoff, with
escalation (a "restart" rebuilds the planning bookings from the records). `health()` is its
liveness. Lost satellites (`satellites_lost`) are marked in the state and the work placed or
running there is planned again (`policies.replan`); what cannot be placed again is refused with
the reason.

Plain Python over a few callables: `request(gateway, target, op, args)` (a control request over
the ISL network, `SatelliteHost.request`), `read_soc(satellites)` (their states of charge now)
and the run's clock. The Ray layer wraps it in a named actor (`runtime.host_actors`).
"""
from __future__ import annotations

import errno
import math
import threading
from collections import OrderedDict
from dataclasses import replace
from typing import Any, Callable

from cryptography.hazmat.primitives import serialization

from orbitos.kernel.events import EventLog
from orbitos.kernel.image import ImageError, Keyring, verify_image
from orbitos.kernel.services import SupervisedService, SupervisionPolicy
from orbitos.runtime.scheduler.engine import PlanBuilder
from orbitos.runtime.scheduler.model import Assignment, Plan, Task, TaskError, task_from_dict
from orbitos.runtime.scheduler.policies import plan, replan
from orbitos.runtime.scheduler.state import ConstellationState
from orbitos.sim_hw.clock import SimClock

Request = Callable[[str, str, str, dict[str, Any]], dict[str, Any]]
ReadSoc = Callable[[list[str]], dict[str, float]]

ACTIVE = ("placed", "dispatching", "running")
MAX_ATTEMPTS = 3  # dispatch tries of one task when it fails with a transient error
RETRY_S = 30.0  # simulated seconds before the first retry, doubled at each
TRANSIENT_ERRNOS = frozenset({errno.EAGAIN, errno.EBUSY, errno.ETIMEDOUT, errno.EHOSTUNREACH,
                              errno.ECONNREFUSED, errno.ECONNRESET, errno.EIO})
PERIOD_S = 60.0  # the longest the dispatch loop sleeps with nothing due (simulated seconds)
EARLY_ENDS_KEPT = 256
OVERDUE_CHECK_S = 600.0  # a task running past its planned end is looked for on its satellite this often


class SchedulerService:
    def __init__(self, state: ConstellationState, request: Request, clock: SimClock,
                 trusted_keys_pem: tuple[bytes, ...] = (), policy: str = "orbitos",
                 read_soc: ReadSoc | None = None,
                 supervision: SupervisionPolicy = SupervisionPolicy(backoff_initial_s=5.0),
                 period_s: float = PERIOD_S) -> None:
        """Raises ValueError for a trusted key that is not a PEM public key."""
        self.state = state
        self.request = request
        self.clock = clock
        self.policy = policy
        self.read_soc = read_soc
        self.keyring = Keyring([serialization.load_pem_public_key(pem) for pem in trusted_keys_pem])
        self.builder = PlanBuilder(state)
        self.records: dict[str, dict[str, Any]] = {}
        self._payloads: dict[str, dict[str, Any]] = {}
        self._early_ends: OrderedDict[tuple[str, int], dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()  # never held across a request, a battery read or a clock wait
        self.events = EventLog(clock.now)
        self.counters = {"submitted": 0, "placed": 0, "refused": 0, "dispatched": 0, "dispatch_failures": 0,
                         "retries": 0, "done": 0, "failed": 0, "replanned": 0, "battery_reads_failed": 0,
                         "ends_unmatched": 0}
        self._stop = clock.event()
        self._wake = clock.event()
        # The loop waits on the clock it is given (`clock.wait` inside SupervisedService): on
        # today's WallClock that is wall time = simulated time / speed. Issue 12 hands the
        # service the run's virtual clock instead; nothing here sleeps on wall time by itself.
        self.service = SupervisedService("scheduler-dispatch", period_s, self._pass, clock=clock,
                                         stop=self._stop, events=self.events, escalate=self._escalate,
                                         policy=supervision, wake=self._wake)
        self._wake.set()  # a first pass at once
        self.service.thread = clock.start_thread(self.service.run, name="scheduler-dispatch")

    # -- submit ---------------------------------------------------------------------------------
    def submit(self, data: dict[str, Any], submitted_by: str | None = None) -> dict[str, Any]:
        """Place one task; its record: {task, status: placed | refused, satellite, device,
        start_utc_s, completion_utc_s, deadline_met, battery | reason}. A malformed task, an
        image not signed by a trusted key, or a satellite the task names that does not exist is
        refused with the reason naming the field (and not kept: the name may be used again);
        a task name used before is refused; a task that cannot be placed is refused with the
        planner's reason (and kept in `tasks()`)."""
        now = self.clock.now()
        with self._lock:
            self.counters["submitted"] += 1
        try:
            task, image, argv, paths, app = self._checked(data, now, submitted_by)
        except TaskError as exc:
            name = data.get("name") if isinstance(data, dict) else None
            with self._lock:
                self.counters["refused"] += 1
            return {"task": name if isinstance(name, str) else None, "status": "refused", "reason": str(exc)}
        battery = self._observe_batteries(now)
        with self._lock:
            if task.name in self.records:
                self.counters["refused"] += 1
                return {"task": task.name, "status": "refused", "reason": f"a task named {task.name!r} "
                        "was submitted before"}
            result = plan(self.state, [task], self.policy, builder=self.builder)
            if task.name in result.unplaced:
                record = {"task": task.name, "status": "refused", "reason": result.unplaced[task.name].reason,
                          "submitted_by": submitted_by, "battery": battery}
                self.counters["refused"] += 1
            else:
                record = {"task": task.name, "status": "placed", "submitted_by": submitted_by, "app": app,
                          "battery": battery, "attempts": 0, "generation": 0}
                record.update(self._placement(result.assignments[task.name]))
                self._payloads[task.name] = {"task": task, "image": image, "argv": list(argv), "paths": paths,
                                             "assignment": result.assignments[task.name], "not_before": 0.0}
                self.counters["placed"] += 1
            self.records[task.name] = record
        self._wake.set()
        return self._public(record)

    def _checked(self, data: Any, now: float, submitted_by: str | None
                 ) -> tuple[Task, bytes | None, list[str], dict[str, str], str | None]:
        """The task, its image, argv, input paths and app name. Raises TaskError naming the field."""
        if not isinstance(data, dict):
            raise TaskError(f"a task must be a map, got {type(data).__name__}")
        image, argv = data.get("image"), data.get("argv", [])
        fields = {k: v for k, v in data.items() if k not in ("image", "argv")}
        paths: dict[str, str] = {}
        inputs = fields.get("inputs", ()) or ()
        if isinstance(inputs, list | tuple):
            for item in inputs:
                if isinstance(item, dict) and "path" in item:
                    paths[item.get("name")] = item["path"]
            fields["inputs"] = [{k: v for k, v in i.items() if k != "path"} if isinstance(i, dict) else i
                                for i in inputs]
        task = task_from_dict(fields, now, submitted_by)
        if not isinstance(argv, list | tuple) or not all(isinstance(a, str) for a in argv):
            raise TaskError(f"task {task.name!r}: field 'argv' must be a list of strings")
        app = None
        if image is not None:
            if not isinstance(image, bytes):
                raise TaskError(f"task {task.name!r}: field 'image' must be a signed app image (bytes)")
            try:
                app = verify_image(image, self.keyring).manifest.name
            except ImageError as exc:
                raise TaskError(f"task {task.name!r}: field 'image' refused: {exc.strerror or exc}") from None
        stations = {g.name for g in self.state.world.constellation.spec.ground_stations}
        if task.output_to is not None and task.output_to != "ground" and task.output_to not in self.state.row \
                and task.output_to not in stations:
            raise TaskError(f"task {task.name!r}: field 'output_to' names no satellite or ground station: "
                            f"{task.output_to!r}")
        for i, obj in enumerate(task.inputs):
            unknown = [h for h in obj.holders if h not in self.state.row]
            if unknown:
                raise TaskError(f"task {task.name!r}: field 'inputs[{i}].holders' names no satellite: {unknown[0]!r}")
        return task, image, list(argv), paths, app

    def _observe_batteries(self, now: float) -> dict[str, Any]:
        """Read the live states of charge of the satellites a task may go to (all not lost) into
        the state. What was read, or why the forecast is used."""
        if self.read_soc is None:
            return {"source": "forecast", "note": "no live battery reader"}
        with self._lock:
            candidates = [s for s in self.state.ids if s not in self.state.lost]
        try:
            soc = self.read_soc(candidates)
            known = {s: v for s, v in soc.items() if s in candidates and v is not None}
            with self._lock:
                updated = self.state.observe_soc(known, now)
                self.builder.refresh([self.state.row[s] for s in updated])
        except Exception as exc:  # noqa: BLE001 - a battery read is best effort: say so, plan on the forecast
            with self._lock:
                self.counters["battery_reads_failed"] += 1
            return {"source": "forecast", "note": f"live batteries not read ({type(exc).__name__}: "
                                                  f"{str(exc)[:200]}); planned on the forecast"}
        missing = sorted(set(candidates) - set(known))
        result: dict[str, Any] = {"source": "live", "read_utc_s": now, "satellites": len(known)}
        if missing:
            result["note"] = f"not read, forecast used: {', '.join(missing[:8])}" + (" ..." if len(missing) > 8 else "")
        return result

    @staticmethod
    def _placement(a: Assignment) -> dict[str, Any]:
        return {"satellite": a.satellite, "device": a.device, "start_utc_s": a.start_utc_s,
                "end_utc_s": a.end_utc_s, "completion_utc_s": a.completion_utc_s,
                "deadline_met": a.deadline_met, "energy_wh": round(a.energy_wh, 3),
                "inputs_from": {t.object_name: list(t.nodes) for t in a.transfers_in}}

    @staticmethod
    def _public(record: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in record.items() if k != "generation"}

    def tasks(self) -> list[dict[str, Any]]:
        with self._lock:
            return [self._public(r) for r in self.records.values()]

    def health(self) -> dict[str, Any]:
        """The dispatch loop's liveness (kernel.services.ServiceHealth) and the counters."""
        with self._lock:
            counters = dict(self.counters)
        return {"dispatch": self.service.snapshot(), "counters": counters,
                "lost": sorted(self.state.lost)}

    # -- the dispatch loop ------------------------------------------------------------------------
    def _pass(self) -> float:
        """One pass: dispatch every task whose start has come; the wait until the next one.
        A task whose dispatch fails is that task's failure; what raises here is the pass's."""
        now = self.clock.now()
        with self._lock:
            due = sorted((max(r["start_utc_s"], self._payloads[name]["not_before"]), name)
                         for name, r in self.records.items() if r["status"] == "placed")
        ready = [name for start, name in due if start <= now]
        for name in ready:
            self._dispatch_one(name)
        self._check_overdue(now)
        later = [start for start, _ in due if start > now]
        return later[0] - now if later else self.service.period_s

    def _check_overdue(self, now: float) -> None:
        """Nothing stays running silently: a task running past its planned end (by more than
        OVERDUE_CHECK_S) is looked for in its satellite's process table (control op "ps"): an
        exited process is its end (one whose report was lost); a process that is gone (its host
        restarted) fails the task with that reason; one still running is left to run."""
        with self._lock:
            overdue = [(name, r["satellite"], r["pid"], r["app"], r["generation"])
                       for name, r in self.records.items()
                       if r["status"] == "running" and now > r["end_utc_s"] + OVERDUE_CHECK_S
                       and now - r.get("checked_utc_s", -math.inf) > OVERDUE_CHECK_S]
            for name, *_ in overdue:
                self.records[name]["checked_utc_s"] = now
        for name, satellite, pid, app, generation in overdue:
            try:
                answer = self.request(satellite, satellite, "ps", {})
            except Exception as exc:  # noqa: BLE001 - looked for again at the next check
                self.events.emit("TASK_CHECK_FAILED", "warning", "scheduler", f"{name}: ps on {satellite} "
                                 f"failed: {type(exc).__name__}: {str(exc)[:200]}", task=name)
                continue
            if not answer.get("ok") or not isinstance(answer.get("value"), list):
                continue  # out of reach now: looked for again later
            row = next((p for p in answer["value"] if isinstance(p, dict) and p.get("pid") == pid
                        and p.get("name") == app), None)
            if row is not None and row.get("state") != "exited":
                continue  # running longer than planned: its own business
            if row is not None:
                self.task_ended({"satellite": satellite, "pid": pid, "name": app, "exit_code": row.get("exit_code"),
                                 "reason": row.get("reason"), "ended_utc_s": now})
                continue
            with self._lock:
                record = self.records[name]
                if record["generation"] != generation or record["status"] != "running":
                    continue
                record.update(status="failed", exit_code=None, ended_utc_s=now,
                              reason=f"pid {pid} ({app}) is no longer on {satellite}: its host restarted "
                                     "or its end was not reported")
                self.counters["failed"] += 1
            self.events.emit("TASK_FAILED", "error", "scheduler", f"{name}: {record['reason']}", task=name)

    def _dispatch_one(self, name: str) -> None:
        with self._lock:
            record = self.records[name]
            if record["status"] != "placed":
                return
            record["status"] = "dispatching"
            record["attempts"] += 1
            generation = record["generation"]
            payload = self._payloads[name]
            satellite = record["satellite"]
        started = self.clock.now()  # its end, reported by the kernel, may come before the reply
        try:
            arguments, pid = self._dispatch(payload, satellite)
        except Exception as exc:  # noqa: BLE001 - one task's failure, never the loop's
            self._dispatch_failed(name, generation, exc)
            return
        with self._lock:
            if record["generation"] != generation:
                return  # replanned meanwhile (its satellite was lost): the new placement stands
            self.counters["dispatched"] += 1
            record.update(dispatched_utc_s=started, inputs=arguments, pid=pid)
            if pid is None:
                record.update(status="done", exit_code=None, ended_utc_s=record["dispatched_utc_s"],
                              note="no image to run: placed and its inputs moved")
                self.counters["done"] += 1
                return
            record["status"] = "running"
            early = self._early_ends.pop((satellite, pid), None)
        if early is not None:
            self.task_ended(early)

    def _dispatch(self, payload: dict[str, Any], satellite: str) -> tuple[list[str], int | None]:
        """Move the inputs, run the image once; (arguments, pid or None without an image).
        Raises OSError for a refused step, and whatever `request` raises."""
        task: Task = payload["task"]
        arguments = []
        for obj in task.inputs:
            path = payload["paths"].get(obj.name)
            if path is None or satellite in obj.holders:
                if path is not None:
                    arguments.append(path)
                continue
            read = self.request(satellite, obj.holders[0], "read", {"path": path})
            if not read.get("ok"):
                raise OSError(read.get("errno") or errno.EIO, f"input {obj.name}: {read.get('error')}")
            wrote = self.request(satellite, satellite, "write", {"path": path, "data": read["value"]})
            if not wrote.get("ok"):
                raise OSError(wrote.get("errno") or errno.EIO, f"input {obj.name} not written: {wrote.get('error')}")
            arguments.append(path)
        if payload["image"] is None:
            return arguments, None
        started = self.request(satellite, satellite, "run", {"image": payload["image"],
                                                             "argv": arguments + payload["argv"]})
        if not started.get("ok"):
            raise OSError(started.get("errno") or errno.EIO, f"not started: {started.get('error')}")
        return arguments, int(started["value"])

    def _dispatch_failed(self, name: str, generation: int, exc: Exception) -> None:
        transient = isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS
        reason = str(exc.strerror or exc) if isinstance(exc, OSError) else f"{type(exc).__name__}: {exc}"
        with self._lock:
            record = self.records[name]
            if record["generation"] != generation:
                return
            self.counters["dispatch_failures"] += 1
            if transient and record["attempts"] < MAX_ATTEMPTS:
                self.counters["retries"] += 1
                retry_s = RETRY_S * 2 ** (record["attempts"] - 1)
                self._payloads[name]["not_before"] = self.clock.now() + retry_s
                record.update(status="placed", last_error=reason)
                event = ("TASK_RETRY", "warning", f"{name}: dispatch failed ({reason}); try "
                         f"{record['attempts'] + 1} in {retry_s:g} s")
            else:
                tries = f" after {record['attempts']} attempts" if record["attempts"] > 1 else ""
                record.update(status="failed", reason=f"dispatch failed{tries}: {reason}",
                              ended_utc_s=self.clock.now())
                self.counters["failed"] += 1
                event = ("TASK_FAILED", "error", f"{name}: {record['reason']}")
        self.events.emit(event[0], event[1], "scheduler", event[2], task=name)

    def _escalate(self, level: str, service: str, reason: str) -> None:
        """The dispatch loop keeps failing: an event; at "restart" the bookings are rebuilt from
        the records (what a fresh service would hold)."""
        self.events.emit("SCHEDULER_ESCALATION", "critical", service, f"{level}: {reason}", level=level)
        if level == "restart":
            with self._lock:
                self.builder = self._rebuilt_builder(self._kept_plan().assignments)

    # -- ends from the kernels --------------------------------------------------------------------
    def task_ended(self, ended: dict[str, Any]) -> bool:
        """A process the scheduler may have started has ended ({satellite, pid, name, exit_code,
        reason, ended_utc_s}, from `Kernel.on_process_exit` through the host). The running task
        with that satellite, pid and app name becomes done (exit code 0) or failed. True when a
        task matched; an end that arrives before its dispatch recorded the pid is kept for it."""
        try:
            satellite, pid, app = str(ended["satellite"]), int(ended["pid"]), ended.get("name")
            code = ended.get("exit_code")
        except (KeyError, TypeError, ValueError):
            return False
        with self._lock:
            match = next((r for r in self.records.values() if r["status"] == "running"
                          and r.get("satellite") == satellite and r.get("pid") == pid and r.get("app") == app), None)
            if match is None:
                if any(r["status"] == "dispatching" and r.get("satellite") == satellite and r.get("app") == app
                       for r in self.records.values()):
                    self._early_ends[(satellite, pid)] = dict(ended)
                    while len(self._early_ends) > EARLY_ENDS_KEPT:
                        self._early_ends.popitem(last=False)
                else:
                    self.counters["ends_unmatched"] += 1
                return False
            ok = code == 0
            match.update(status="done" if ok else "failed", exit_code=code,
                         ended_utc_s=float(ended.get("ended_utc_s", self.clock.now())))
            if not ok:
                match["reason"] = f"exited with code {code}: {ended.get('reason')}"
            self.counters["done" if ok else "failed"] += 1
            name = match["task"]
        self.events.emit("TASK_ENDED", "info" if ok else "warning", "scheduler",
                         f"{name} on {satellite} pid {pid} ended with code {code}", task=name, code=code)
        return True

    # -- lost satellites --------------------------------------------------------------------------
    def satellites_lost(self, satellites: list[str] | tuple[str, ...]) -> dict[str, Any]:
        """Mark satellites lost and plan again the work placed or running there (and what was
        booked but not started anywhere, with `policies.replan`). Returns {lost, replanned:
        {task: satellite}, refused: {task: reason}}. Raises ValueError naming an unknown
        satellite (nothing changes then)."""
        satellites = [str(s) for s in satellites]
        now = self.clock.now()
        with self._lock:
            self.state.mark_lost(satellites)
            previous = self._kept_plan(now)
            active = {n: r for n, r in self.records.items() if r["status"] in ACTIVE}
            tasks = [self._payloads[n]["task"] for n in active]
            # tasks that ended stay booked where they ran (kept), without being placed again
            result = replan(self.state, tasks, previous, now, self.policy)
            ended = {n: a for n, a in previous.assignments.items() if n not in active}
            self.builder = self._rebuilt_builder({**ended, **result.assignments})
            moved, refused = {}, {}
            for name, record in active.items():
                before = self._payloads[name]["assignment"]
                if name in result.unplaced:
                    record.update(status="refused", reason=f"planned again after the loss of "
                                  f"{', '.join(satellites)}: {result.unplaced[name].reason}",
                                  generation=record["generation"] + 1)
                    refused[name] = record["reason"]
                    continue
                after = result.assignments[name]
                if after == before:
                    continue  # started on a satellite still there, or placed again where it was
                record.update(self._placement(after))
                record.update(status="placed", generation=record["generation"] + 1, pid=None,
                              replanned_utc_s=now, replans=record.get("replans", 0) + 1,
                              replanned_from=before.satellite)
                self._payloads[name].update(assignment=after, not_before=0.0)
                moved[name] = after.satellite
            self.counters["replanned"] += len(moved)
            self.counters["refused"] += len(refused)
        self.events.emit("SATELLITES_LOST", "warning", "scheduler", f"{', '.join(satellites)} lost: "
                         f"{len(moved)} tasks placed again, {len(refused)} refused",
                         moved=len(moved), refused=len(refused))
        self._wake.set()
        return {"lost": satellites, "replanned": moved, "refused": refused}

    def _kept_plan(self, now: float | None = None) -> Plan:
        """Every placement the service holds (caller holds the lock). An ended task's booking
        ends when it ended; one running on a lost satellite is treated as not finished."""
        kept = Plan(self.policy)
        for name, payload in self._payloads.items():
            record, a = self.records[name], payload["assignment"]
            if record["status"] == "refused":
                continue
            if record["status"] in ("done", "failed"):
                end = min(a.end_utc_s, record.get("ended_utc_s") or a.end_utc_s)
                a = replace(a, start_utc_s=min(a.start_utc_s, end), end_utc_s=end)
            elif now is not None and a.satellite in self.state.lost:
                a = replace(a, end_utc_s=max(a.end_utc_s, now + 1.0))
            kept.assignments[name] = a
        return kept

    def _rebuilt_builder(self, assignments: dict[str, Assignment]) -> PlanBuilder:
        builder = PlanBuilder(self.state)
        for a in sorted(assignments.values(), key=lambda a: a.start_utc_s):
            if math.isfinite(a.end_utc_s):
                builder.adopt(a)
                builder.outputs_bytes[a.task] = self._payloads[a.task]["task"].output_bytes
        return builder

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self.service.thread is not None:
            self.service.thread.join(timeout=5.0)
