"""hello: the smallest orbitos app."""


def main(sys, argv):
    name = argv[0] if argv else "world"
    sys.log("HELLO", "info", message=f"hello, {name}, from pid {sys.getpid()}")
    sys.publish("hello", {"greeting": f"hello, {name}", "time_utc_s": sys.time()})
    return 0
