"""Locally managed sensor emulator (developer tooling): one sensor's REST API over a generated inventory."""

from tools.emulators.sensor.server import SensorEmulator

__all__ = ["SensorEmulator"]
