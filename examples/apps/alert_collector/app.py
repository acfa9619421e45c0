"""alert-collector: alerts from the whole constellation arrive on one port (one for all).

Each relayed alert becomes a FLOOD_REPORT event and a line in /data/alerts/reports.log.

    argv: [PORT]   (default 7000)
"""


def main(sys, argv):
    port = sys.bind(int(argv[0]) if argv else 7000)
    sys.mkdir("/data/alerts")
    while True:
        message = sys.recv(port)
        alert = message["data"]["alert"]
        source = message["sender"].split(":")[0]
        line = (f"{alert['time_utc_s']:.0f} {source} {alert['lat_deg']:.3f} {alert['lon_deg']:.3f} "
                f"{alert['flood_fraction']:.4f}\n")
        log = sys.open("/data/alerts/reports.log", "a")
        sys.write(log, line.encode())
        sys.close(log)
        sys.log("FLOOD_REPORT", "warning", message=f"{source} saw flood water over "
                f"{alert['flood_fraction']:.1%} at {alert['lat_deg']:.2f}, {alert['lon_deg']:.2f}")
