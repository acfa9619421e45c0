"""Test-suite root: loads the hardware-in-the-loop plugin so its options work from any path."""
pytest_plugins = ["tests.hil.plugin"]
