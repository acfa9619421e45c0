"""`orbitos demo`: the Three-Body-12 constellation on an embedded Ray, a flood watcher on every
satellite, alerts relayed over the ISL network to one collector, two orbits at 60x speed.

A live `rich` progress bar (simulated time, elapsed wall time and ETA) shows what is happening
(eclipses entered, laser links acquired, floods detected and reported) on a terminal; written to
a file or a pipe, the same news is plain lines, one per happening plus a progress line every 10%.
A summary ends the run (`--json`: one object
with satellites, sim_seconds, wall_seconds, alerts, isl_messages_delivered,
isl_messages_expired, min_soc, apps_running, and more).
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO

from cryptography.hazmat.primitives import serialization

from orbitos.kernel.image import build_image, generate_key, load_private_key
from orbitos.sim_hw.constellation import load_constellation
from orbitos.sim_hw.orbits import period_s

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT / "examples" / "constellations" / "three-body-12.toml"
APPS = ROOT / "examples" / "apps"
COLLECTOR = "TB01"


def _clock_text(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def run_demo(config: Path = DEFAULT_CONFIG, speed: float = 60.0, orbits: float = 2.0, hosts: int = 2,
             out: TextIO = sys.stdout, live: bool = True, poll_s: float = 0.5) -> dict[str, Any]:
    """Run the demo; returns the summary. Raises ConfigError, ValueError for bad arguments."""
    from orbitos.runtime.constellation_run import ConstellationRun  # Ray only when a demo runs

    if not 0 < speed <= 10_000 or not 0 < orbits <= 50:
        raise ValueError(f"speed must be in (0, 10000] and orbits in (0, 50]; got {speed}, {orbits}")
    constellation = load_constellation(config)
    orbit_s = period_s(constellation.records[0])
    sim_seconds = orbits * orbit_s
    work = Path(tempfile.mkdtemp(prefix="orbitos-demo-"))
    generate_key(work / "demo.key")
    key = load_private_key(work / "demo.key")
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    images = {name: build_image(APPS / name, key) for name in ("flood_watcher", "alert_relay", "alert_collector")}
    wall_start = time.perf_counter()
    run = ConstellationRun.up(config, hosts=hosts, speed=speed, hours=sim_seconds / 3600.0 + 0.5,
                              trusted_keys_pem=(public,), housekeeping_period_s=60.0)
    summary: dict[str, Any] = {}
    try:
        collector = COLLECTOR if COLLECTOR in run.satellites else run.satellites[0]
        run.deploy(images["alert_collector"], to=collector)
        run.deploy(images["alert_relay"], to="all", argv=(collector,))
        # Image every 20 s: at 7.6 km/s a satellite crosses a 300 km flood in about 40 s.
        run.deploy(images["flood_watcher"], to="all", argv=("--period", "20"))
        epoch = constellation.epoch_utc_s
        end = epoch + sim_seconds
        since: dict[str, int] = {}
        in_eclipse: dict[str, bool] = {}
        counts = {"eclipses": 0, "link_acquisitions": 0, "alerts": 0, "reports": 0}
        min_soc = 1.0
        rows: list[dict[str, Any]] = []
        plan_windows = [w for w in run.plan.windows if w.kind == "isl" and w.source < w.target]
        last_now = epoch - 1.0
        progress = _Progress(out, sim_seconds) if live else None
        while True:
            now = run.now()
            rows = run.status()
            min_soc = min([min_soc] + [r["soc"] for r in rows if r["soc"] is not None])
            happenings = []
            for row in rows:
                was = in_eclipse.get(row["id"])
                if row["in_eclipse"] and was is False:
                    counts["eclipses"] += 1
                    happenings.append(f"{row['id']} entered Earth's shadow")
                in_eclipse[row["id"]] = bool(row["in_eclipse"])
            for satellite, events in run.events_since(since).items():
                for event in events:
                    since[satellite] = max(since.get(satellite, 0), event["seq"])
                    if event["event_id"] == "FLOOD_DETECTED":
                        counts["alerts"] += 1
                        happenings.append(f"{satellite}: {event['message']}")
                    elif event["event_id"] == "FLOOD_REPORT":
                        counts["reports"] += 1
                        happenings.append(f"{satellite} collector: {event['message']}")
            for window in plan_windows:
                if last_now < window.data_start <= now:
                    counts["link_acquisitions"] += 1
                    happenings.append(f"laser link {window.source}-{window.target} acquired")
            last_now = now
            if progress is not None:
                progress.update(now - epoch, happenings,
                                f"shadow {sum(in_eclipse.values())}/{len(rows)} links "
                                f"{sum(r['links_up'] for r in rows) // 2} alerts {counts['alerts']} "
                                f"SoC>={min_soc:.2f}")
            if now >= end:
                break
            time.sleep(poll_s)  # wall time between polls of the running constellation
        if progress is not None:
            progress.stop()
        network = run.network_counters()
        summary = {
            "config": constellation.spec.name, "satellites": len(run.satellites), "hosts": hosts,
            "speed": speed, "orbits": orbits, "sim_seconds": sim_seconds,
            "wall_seconds": time.perf_counter() - wall_start, "boot_seconds": run.boot_s,
            "alerts": counts["alerts"], "alerts_reported_to_collector": counts["reports"],
            "eclipses_entered": counts["eclipses"], "link_acquisitions": counts["link_acquisitions"],
            "isl_messages_delivered": network.get("delivered", 0),
            "isl_messages_expired": network.get("expired", 0),
            "isl_messages_unreachable": network.get("unreachable", 0),
            "min_soc": min_soc, "apps_running": sum(r["apps"] for r in rows),
        }
    finally:
        run.down()
    return summary


class _Progress:
    """The demo's progress: a rich bar with elapsed time and ETA on a terminal, plain lines
    (each happening, and the progress every 10%) otherwise."""

    def __init__(self, out: TextIO, sim_seconds: float) -> None:
        from orbitos.runtime.cli_output import is_terminal

        self.out = out
        self.sim_seconds = sim_seconds
        self.next_tenth = 1
        self.terminal = is_terminal(out)
        self.bar: Any = None
        if self.terminal:
            from rich.console import Console
            from rich.progress import (BarColumn, Progress, TaskProgressColumn, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)

            from rich.table import Column

            fixed = {"table_column": Column(no_wrap=True, min_width=7)}  # times are never cut short
            self.bar = Progress(TextColumn("T+{task.fields[sim]}", **fixed), BarColumn(bar_width=16),
                                TaskProgressColumn(), TimeElapsedColumn(**fixed), TextColumn("ETA"),
                                TimeRemainingColumn(**fixed),
                                TextColumn("{task.fields[news]}", table_column=Column(no_wrap=True,
                                                                                      overflow="ellipsis")),
                                console=Console(file=out), transient=False)
            self.task = self.bar.add_task("demo", total=sim_seconds, sim="00:00:00", news="")
            self.bar.start()

    def update(self, elapsed_s: float, happenings: list[str], news: str) -> None:
        clock = _clock_text(elapsed_s)
        if self.bar is not None:
            for line in happenings:
                self.bar.console.print(f"  [T+{clock}] {line}", markup=False, highlight=False)
            self.bar.update(self.task, completed=min(elapsed_s, self.sim_seconds), sim=clock, news=news)
            return
        for line in happenings:
            self.out.write(f"  [T+{clock}] {line}\n")
        while elapsed_s >= self.next_tenth * self.sim_seconds / 10 and self.next_tenth <= 10:
            self.out.write(f"progress {self.next_tenth * 10}% sim T+{clock} | {news}\n")
            self.next_tenth += 1
        self.out.flush()

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def print_summary(summary: dict[str, Any], out: TextIO) -> None:
    out.write("\n")
    out.write(f"{summary['config']}: {summary['satellites']} satellites on {summary['hosts']} Ray hosts, "
              f"{summary['orbits']:g} orbits ({summary['sim_seconds'] / 60:.1f} simulated minutes) in "
              f"{summary['wall_seconds']:.1f} s at {summary['speed']:g}x\n")
    out.write(f"  flood alerts: {summary['alerts']} detected, {summary['alerts_reported_to_collector']} "
              f"reported to the collector over the ISL network\n")
    out.write(f"  ISL messages: {summary['isl_messages_delivered']} delivered, "
              f"{summary['isl_messages_expired']} expired, {summary['isl_messages_unreachable']} unreachable\n")
    out.write(f"  eclipses entered: {summary['eclipses_entered']}, laser links acquired: "
              f"{summary['link_acquisitions']}, lowest state of charge: {summary['min_soc']:.1%}, "
              f"apps running at the end: {summary['apps_running']}\n")
