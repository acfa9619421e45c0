"""kernel: one satellite's operating system (processes, syscalls, bus, files, power, security).

Not built yet: see the kernel issue. Imports sim_hw and drivers, never ray or runtime.
"""
