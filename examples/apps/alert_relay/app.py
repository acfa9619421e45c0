"""alert-relay: every alert published on this satellite goes to a collector over the ISL network.

    argv: COLLECTOR [PORT]   (default port 7000)
"""
import errno


def main(sys, argv):
    collector = argv[0]
    port = int(argv[1]) if len(argv) > 1 else 7000
    alerts = sys.subscribe("alerts.*", depth=64)
    while True:
        message = sys.recv(alerts)
        try:
            sys.send(collector, port, {"topic": message["topic"], "alert": message["data"]})
        except OSError as exc:
            reason = errno.errorcode.get(exc.errno, str(exc.errno))
            sys.log("RELAY_FAILED", "warning", message=f"alert not relayed to {collector}: {reason}")
