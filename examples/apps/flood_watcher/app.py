"""flood-watcher: imager, then a normalized-difference water index on the GPU, then an alert.

Every period it captures the tile below, asks the GPU for NDWI = (green - nir) / (green + nir)
and two threshold masks: water (NDWI above 0.2) and turbid (red above 0.06). Still water is clear
and dark in red; flood water carries sediment: water that is turbid is water where land should
be. When it covers more than `--min-fraction` of the tile, the app publishes an alert on
`alerts.flood` and appends the detection to /data/flood/detections.log.

    argv: [--period S] [--captures N] [--min-fraction F]
"""
from . import detect


def parse(argv):
    options = {"period": 60.0, "captures": 0, "min_fraction": 0.01}
    names = {"--period": ("period", float), "--captures": ("captures", int),
             "--min-fraction": ("min_fraction", float)}
    i = 0
    while i < len(argv):
        key, kind = names[argv[i]]
        options[key] = kind(argv[i + 1])
        i += 2
    return options


def main(sys, argv):
    options = parse(argv)
    imager = sys.open("/dev/imager0")
    gpu = sys.open("/dev/gpu0")
    sys.mkdir("/data/flood")
    sys.log("FLOOD_WATCH_START", "info", message=f"watching every {options['period']:g} s")
    captures = 0
    while options["captures"] == 0 or captures < options["captures"]:
        tile = sys.read(imager)
        captures += 1
        fraction = detect.flood_fraction(sys, gpu, tile)
        if fraction >= options["min_fraction"]:
            alert = {"lat_deg": tile["lat_deg"], "lon_deg": tile["lon_deg"],
                     "time_utc_s": tile["time_utc_s"], "flood_fraction": fraction}
            sys.publish("alerts.flood", alert)
            log = sys.open("/data/flood/detections.log", "a")
            sys.write(log, (f"{alert['time_utc_s']:.0f} {alert['lat_deg']:.3f} {alert['lon_deg']:.3f} "
                            f"{fraction:.4f}\n").encode())
            sys.close(log)
            sys.log("FLOOD_DETECTED", "warning", message=f"flood water over {fraction:.1%} of the tile "
                    f"at {alert['lat_deg']:.2f}, {alert['lon_deg']:.2f}")
        sys.sleep(options["period"])
    sys.close(gpu)
    sys.close(imager)
    return 0
