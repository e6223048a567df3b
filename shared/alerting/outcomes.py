"""What forwarding one message came to: per action an :class:`Outcome`, per message a :class:`Result`."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from shared.contract.model import AlertMessage
from shared.platform import telemetry

BUSY_RETRY_SECONDS = 5.0  # another worker's write takes a second or so, not an outage's back-off

Status = Literal["forwarded", "filtered", "deferred", "poisoned"]
Operation = Literal[
    "created", "recovered", "work_note", "reopened", "recreated", "duplicate", "resolved", "grouped", "group_opened"
]


@dataclass
class Outcome:
    action: str
    operation: Operation
    sys_id: str = ""
    number: str = ""


@dataclass
class Result:
    status: Status
    outcomes: list[Outcome] = field(default_factory=list)
    rules: tuple[str, ...] = ()
    reason: str = ""
    kind: str = ""  # deferred or poisoned: why, in a few words for telemetry (failures.FailureKind, or poison's)


def observe_latency(message: AlertMessage, action: str, now: datetime) -> None:
    """From the alert's time in Defender to its new record in ServiceNow."""
    seconds = (now - message.raised_at).total_seconds()
    # Below zero only when a sensor's clock runs ahead of ours: no latency worth a negative sample.
    telemetry.ALERTS_LATENCY.record(max(seconds, 0.0), {"action": action})
