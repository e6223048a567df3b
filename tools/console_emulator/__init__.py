"""Management console emulator (developer tooling): integration API v3 from generated inventories."""

from tools.console_emulator.inventory import Inventory, generate, mutate
from tools.console_emulator.server import ConsoleEmulator

__all__ = ["ConsoleEmulator", "Inventory", "generate", "mutate"]
