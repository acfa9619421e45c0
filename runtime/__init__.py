"""runtime: the constellation on Ray (hosts, ISL network, global scheduler, gateway) and the CLI.

The only package that imports ray; the CLI imports it lazily, so `orbitos world` starts fast.
"""
