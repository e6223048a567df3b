"""What the Identification and Reconciliation engine answers, typed: one result per payload item, paired with
its input by ``inputIndices`` (ServiceNow documents that field, not that answers keep the input order).

Source: ServiceNow's REST reference, ``POST /now/identifyreconcile`` (ServiceNow/ServiceNowDocs,
``api-reference/rest-apis/c_IdentifyReconcileAPI.md``): ``operation`` is INSERT, UPDATE,
UPDATE_WITH_UPGRADE, UPDATE_WITH_DOWNGRADE, UPDATE_WITH_SWITCH, DELETE or NO_CHANGE; ``sysId`` is
"Unknown" when identification failed; ``errors`` holds ``{error, message}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

UNKNOWN = "Unknown"
RECLASSIFIED = frozenset({"UPDATE_WITH_UPGRADE", "UPDATE_WITH_DOWNGRADE", "UPDATE_WITH_SWITCH"})


@dataclass(frozen=True)
class IreResult:
    """The engine's answer for one payload item."""

    index: int
    class_name: str
    operation: str
    sys_id: str
    errors: tuple[tuple[str, str], ...] = ()  # (code, message)

    @property
    def ok(self) -> bool:
        return not self.errors and bool(self.sys_id) and self.sys_id != UNKNOWN

    @property
    def kind(self) -> str:
        """created, updated (reclassified included), retired, unchanged or failed."""
        if not self.ok:
            return "failed"
        if self.operation == "INSERT":
            return "created"
        if self.operation == "UPDATE" or self.operation in RECLASSIFIED:
            return "updated"
        if self.operation == "DELETE":
            return "retired"
        return "unchanged"

    @property
    def problem(self) -> str:
        if self.errors:
            return f"{self.errors[0][0]}: {self.errors[0][1]}"
        return "" if self.ok else f"no CI identified (sysId {self.sys_id or 'missing'})"


def results(answer: Mapping[str, Any], items: int) -> list[IreResult]:
    """One result per input item, in input order; an item the answer leaves out is failed."""
    by_index: dict[int, IreResult] = {}
    for raw in answer.get("items") or []:
        if not isinstance(raw, Mapping):
            continue
        indices = raw.get("inputIndices")
        for index in indices if isinstance(indices, Sequence) and not isinstance(indices, str) else []:
            if isinstance(index, int) and 0 <= index < items:
                by_index[index] = _result(index, raw)
    return [
        by_index.get(i) or IreResult(i, "", "", UNKNOWN, (("MISSING_RESULT", "no answer for this item"),))
        for i in range(items)
    ]


def _result(index: int, raw: Mapping[str, Any]) -> IreResult:
    errors = tuple(
        (str(e.get("error", "")), str(e.get("message", ""))) for e in raw.get("errors") or [] if isinstance(e, Mapping)
    )
    if raw.get("errorCount") and not errors:
        errors = (("ERROR", "the engine counted an error without naming it"),)
    return IreResult(
        index, str(raw.get("className", "")), str(raw.get("operation", "")), str(raw.get("sysId", "")), errors
    )
