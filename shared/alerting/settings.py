"""The alert pipeline's settings: the forwarder's (rules, ledger, deferrals, claims) and the intake's."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from shared.defender.settings import OVERLAP_MINUTES, SourceSettings
from shared.http.settings import HttpSettings
from shared.platform.settings import TABLE_NAME_PATTERN, Reader, declare

declare(
    "FORWARDING_RULES_LOCATION",
    "FORWARDING_LEDGER_TABLE",
    "FORWARDING_MAX_AGE_HOURS",
    "FORWARDING_RETRY_BASE_SECONDS",
    "FORWARDING_RETRY_MAX_SECONDS",
    "FORWARDING_CLAIM_SECONDS",
    "FORWARDING_RULES_CHECK_SECONDS",
    "ALERT_INTAKE_STATE_TABLE",
)


@dataclass(frozen=True)
class RulesLocation:
    """Where the forwarding rules document lives: ``file:/path`` (or an absolute path), or a blob
    ``container/name`` in the alerts storage account."""

    text: str
    path: Path | None = None
    container: str = ""
    blob: str = ""

    @classmethod
    def parse(cls, value: str, where: str = "FORWARDING_RULES_LOCATION") -> RulesLocation:
        if value.startswith(("file:", "/")):
            return cls(value, path=Path(value.removeprefix("file:")))
        container, _, blob = value.partition("/")
        if not container or not blob:
            raise ValueError(
                f"{where}={value!r} is invalid; expected a blob 'container/name' in the alerts storage account, "
                "or 'file:/path'"
            )
        return cls(value, container=container, blob=blob)

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class ForwardingSettings:
    rules_location: RulesLocation = RulesLocation(
        "rules/forwarding-rules.json", container="rules", blob="forwarding-rules.json"
    )
    ledger_table: str = "forwardedalerts"
    max_age_hours: float = 24.0
    claim_seconds: float = 300.0
    retry_base_seconds: float = 30.0
    retry_max_seconds: float = 900.0
    rules_check_seconds: float = 30.0  # how often the forwarder looks for a new rules document


@dataclass(frozen=True)
class IntakeSettings:
    sources: tuple[SourceSettings, ...] = ()
    state_table: str = "alertintake"
    overlap_minutes: float = OVERLAP_MINUTES  # how far each read reaches back (shared.defender.settings)


def check_forwarding(reader: Reader, http: HttpSettings) -> ForwardingSettings:
    forwarding = ForwardingSettings(
        rules_location=reader.parsed("FORWARDING_RULES_LOCATION", RulesLocation.parse)
        or ForwardingSettings.rules_location,
        ledger_table=reader.raw("FORWARDING_LEDGER_TABLE") or ForwardingSettings.ledger_table,
        max_age_hours=reader.number("FORWARDING_MAX_AGE_HOURS", 24.0, 0.01, 24 * 7),
        retry_base_seconds=reader.number("FORWARDING_RETRY_BASE_SECONDS", 30.0, 1, 3600),
        retry_max_seconds=reader.number("FORWARDING_RETRY_MAX_SECONDS", 900.0, 1, 24 * 3600),
        claim_seconds=reader.number("FORWARDING_CLAIM_SECONDS", 300.0, 5, 3600),
        rules_check_seconds=reader.number("FORWARDING_RULES_CHECK_SECONDS", 30.0, 0, 3600),
    )
    # A claim older than this is taken for a crashed worker's; a live worker's write must never last that long.
    if forwarding.claim_seconds <= http.longest_call:
        reader.fail(
            f"FORWARDING_CLAIM_SECONDS={forwarding.claim_seconds:g} must be longer than one ServiceNow write can "
            f"take (SERVICENOW_RETRY_BUDGET_SECONDS + SERVICENOW_CONNECT_TIMEOUT_SECONDS + "
            f"SERVICENOW_READ_TIMEOUT_SECONDS = {http.longest_call:g} s); otherwise a slow write could be repeated"
        )
    if not TABLE_NAME_PATTERN.fullmatch(forwarding.ledger_table):
        reader.fail(
            f"FORWARDING_LEDGER_TABLE={forwarding.ledger_table!r} is not a table name; expected 3-63 "
            "letters and digits starting with a letter"
        )
    return forwarding


def check_intake(
    reader: Reader, sources: tuple[SourceSettings, ...], overlap_minutes: float = OVERLAP_MINUTES
) -> IntakeSettings:
    table = reader.raw("ALERT_INTAKE_STATE_TABLE") or IntakeSettings.state_table
    if not TABLE_NAME_PATTERN.fullmatch(table):
        reader.fail(f"ALERT_INTAKE_STATE_TABLE={table!r} is not a table name; expected 3-63 letters and digits")
    return IntakeSettings(
        sources=tuple(s for s in sources if s.alerts), state_table=table, overlap_minutes=overlap_minutes
    )
