"""drivers: one interface per device class over local, remote and native backends.

`DeviceTree.build(profile, clock, backends)` binds every device of a hardware profile to its
driver (`GpuDriver`, `FpgaDriver`, `LaserDriver`, `StorageDriver`, `ImagerDriver`, `EpsDriver`)
and a transport (`LocalTransport`, `TcpTransport`, `NativeStorageTransport`,
`NativeGpuTransport`). Imports only sim_hw. See docs/drivers.md.
"""
