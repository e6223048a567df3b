"""ServiceNow emulator (developer tooling, never deployed): ``python -m tools.emulators.servicenow``."""

from tools.emulators.servicenow.oauth import OAuthClient
from tools.emulators.servicenow.server import ServiceNowEmulator

__all__ = ["OAuthClient", "ServiceNowEmulator"]
