"""The outbound HTTP policy every client of the app shares: its timeouts and its retries.

The settings keep their ``SERVICENOW_`` names, which deployments already set, but they bound every call the
app makes: ServiceNow's, and the Defender sources' (Resource Graph and Resource Manager, locally managed
sensors, management consoles, their write-back). A proxy and a CA bundle are each client's own: a ServiceNow
connection's (``SERVICENOW_PROXY_URL`` / ``_CA_BUNDLE`` by default), a source's in ``DEFENDER_SOURCES``.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.platform.settings import Reader, declare

CONNECT_TIMEOUT, READ_TIMEOUT, RETRY_BUDGET, MAX_ATTEMPTS = declare(
    "SERVICENOW_CONNECT_TIMEOUT_SECONDS",
    "SERVICENOW_READ_TIMEOUT_SECONDS",
    "SERVICENOW_RETRY_BUDGET_SECONDS",
    "SERVICENOW_MAX_ATTEMPTS",
)


@dataclass(frozen=True)
class HttpSettings:
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    retry_budget_seconds: float = 30.0
    max_attempts: int = 5

    @property
    def longest_call(self) -> float:
        """The longest one call may take, its retries included: what a claim and a run must outlast."""
        return self.retry_budget_seconds + self.connect_timeout + self.read_timeout


def read_http_settings(reader: Reader, retries: bool = True) -> HttpSettings:
    """``retries=False``: the timeouts only, the retries left at their defaults (the relay reads no more)."""
    timeouts = HttpSettings(
        connect_timeout=reader.number(CONNECT_TIMEOUT, HttpSettings.connect_timeout, 0.1, 120),
        read_timeout=reader.number(READ_TIMEOUT, HttpSettings.read_timeout, 0.1, 300),
    )
    if not retries:
        return timeouts
    return HttpSettings(
        timeouts.connect_timeout,
        timeouts.read_timeout,
        retry_budget_seconds=reader.number(RETRY_BUDGET, HttpSettings.retry_budget_seconds, 0, 3600),
        max_attempts=reader.integer(MAX_ATTEMPTS, HttpSettings.max_attempts, 1, 20),
    )
