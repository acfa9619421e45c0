"""hk-logger: housekeeping telemetry to /data/hk/hk.log, rotated atomically.

Receives every housekeeping record (`hk.*`), appends one line each, and when the log passes
`--max-bytes` moves it to hk.log.1 with rename (atomic: the old or the new, never half) and
starts a new one. A receive timeout below its watchdog window keeps it visibly alive.

    argv: [--max-bytes N] [--records N]
"""


def main(sys, argv):
    max_bytes = int(argv[argv.index("--max-bytes") + 1]) if "--max-bytes" in argv else 65536
    limit = int(argv[argv.index("--records") + 1]) if "--records" in argv else 0
    sys.mkdir("/data/hk")
    feed = sys.subscribe("hk.*", depth=32)
    written = 0
    while limit == 0 or written < limit:
        try:
            message = sys.recv(feed, timeout_s=60.0)
        except TimeoutError:
            sys.heartbeat()
            continue
        record = message["data"]
        power = record.get("power", {})
        line = (f"{record['time_utc_s']:.0f} soc={power.get('soc', float('nan')):.4f} "
                f"load_w={power.get('load_w', float('nan')):.1f} "
                f"procs={sum(record['processes'].values())} safe={int(record['safe_mode'])}\n")
        log = sys.open("/data/hk/hk.log", "a")
        sys.write(log, line.encode())
        sys.close(log)
        written += 1
        if sys.stat("/data/hk/hk.log")["size"] > max_bytes:
            sys.rename("/data/hk/hk.log", "/data/hk/hk.log.1")
    return 0
