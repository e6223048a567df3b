"""The forwarding rules' types: actions (what to write where), rules (which alerts), the rule set a document
parses into (:mod:`shared.alerting.rules_document`) and the decision it makes for one message
(:mod:`shared.alerting.rules`, which callers import them from)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from shared.contract.model import Severity
from shared.servicenow.records import table_of

ReportType = Literal["incident", "full"]
Role = Literal["destination", "source"]
DEFAULT_SEVERITY_MAP: dict[str, tuple[int, int]] = {
    "Critical": (1, 1),
    "Major": (1, 2),
    "Minor": (2, 2),
    "Warning": (3, 3),
}


class RulesError(ValueError):
    """The document is invalid; ``errors`` lists every problem with its path."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("invalid forwarding rules:\n" + "\n".join(f"  - {e}" for e in errors))


@dataclass(frozen=True)
class Grouping:
    """Alerts whose ``key`` (a template, e.g. ``{sensor}:{title}``) renders the same within ``window_minutes``
    of the group's first one share one record; later ones are added to it as batched work notes."""

    key: str
    window_minutes: float = 60.0

    def describe(self) -> str:
        return f"grouped by {self.key} for {self.window_minutes:g} min"


@dataclass(frozen=True)
class Action:
    name: str
    connection: str
    report: ReportType
    table: str
    short_description: str = "[Defender for IoT] {severity}: {title} ({sensor})"
    severity_map: Mapping[str, tuple[int, int]] = field(default_factory=lambda: dict(DEFAULT_SEVERITY_MAP))
    fields: Mapping[str, str] = field(default_factory=dict)  # extra fixed values, e.g. assignment_group
    field_map: Mapping[str, str] | None = None  # full report: target field → template
    on_closed: Literal["reopen", "new"] = "new"
    close_code: str = "Resolved by caller"
    close_notes: str = "Alert handled in Microsoft Defender for IoT ({resolution} by {handled_by}). {resolution_notes}"
    # Closing the loop: a record resolved in ServiceNow closes its alert at the source (where one can).
    write_back: bool = True
    done_states: tuple[str, ...] = ()  # empty: the table's (shared.servicenow.records.table_of)
    learn_close_codes: tuple[str, ...] = ()  # close codes that close the alert and learn its traffic
    group: Grouping | None = None  # storms: one record per group of related alerts, not per alert
    # Which device's CI the record names (cmdb_ci). The destination by default: a protocol or policy violation's
    # target is the asset at risk; a scan's source is the scanning host, which a scan rule chooses.
    configuration_item: Role = "destination"
    affected_cis: bool = False  # the other device(s) in task_ci too: a ServiceNow call per device
    impact_from_criticality: Mapping[str, int] = field(default_factory=dict)  # casefolded criticality → impact

    @property
    def done(self) -> tuple[str, ...]:
        return self.done_states or table_of(self.table).done


@dataclass(frozen=True)
class Selection:
    """All values (``names`` None) or the names listed, compared case-insensitively."""

    names: tuple[str, ...] | None = None  # as written in the document
    values: frozenset[str] | None = field(init=False, default=None)  # lower-cased, for matching

    def __post_init__(self) -> None:
        if self.names is not None:
            object.__setattr__(self, "values", frozenset(name.lower() for name in self.names))

    def admits(self, value: str | None) -> bool:
        return self.values is None or (value is not None and value.lower() in self.values)

    def admits_any(self, values: Iterable[str]) -> bool:
        return self.values is None or any(v.lower() in self.values for v in values)


@dataclass(frozen=True)
class Rule:
    name: str
    created_at: datetime
    actions: tuple[str, ...]
    enabled: bool = True
    minimal_severity: Severity = Severity.WARNING
    protocols: Selection = Selection()
    engines: Selection = Selection()
    system_notifications: bool = False
    alert_notifications: bool = True
    sensors: Selection = Selection()
    sites: Selection = Selection()
    zones: Selection = Selection()


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...]
    actions: Mapping[str, Action]


@dataclass(frozen=True)
class Decision:
    """What the rules decided for one message: the matching rules, the actions, and why others did not."""

    rules: tuple[str, ...]
    actions: tuple[Action, ...]
    skipped: Mapping[str, str]
