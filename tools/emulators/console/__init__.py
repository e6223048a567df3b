"""Management console emulator (developer tooling): integration API v3 from generated inventories."""

from tools.emulators.console.inventory import Inventory, generate, handle_alert, mutate, raise_alert
from tools.emulators.console.server import ConsoleEmulator

__all__ = ["ConsoleEmulator", "Inventory", "generate", "handle_alert", "mutate", "raise_alert"]
