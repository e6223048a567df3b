"""Azure Resource Graph emulator (developer tooling): the ``iotsecurityresources`` table of cloud-connected
Defender for IoT sensors, served to the real ``azure-mgmt-resourcegraph`` SDK."""

from tools.emulators.resourcegraph.server import ResourceGraphEmulator

__all__ = ["ResourceGraphEmulator"]
