"""drivers: one interface per device class over local, remote (device server) and native backends.

Not built yet: see the drivers issue. Imports only sim_hw.
"""
