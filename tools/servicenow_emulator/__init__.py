"""ServiceNow emulator (developer tooling, never deployed): ``python -m tools.servicenow_emulator``."""

from tools.servicenow_emulator.oauth import OAuthClient
from tools.servicenow_emulator.server import ServiceNowEmulator

__all__ = ["OAuthClient", "ServiceNowEmulator"]
