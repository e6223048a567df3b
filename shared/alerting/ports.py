"""What the forwarder's collaborators need of storage and of ServiceNow, as protocols: the ledger
(:class:`shared.alerting.ledger.Ledger`), the group book (:class:`shared.alerting.groups.GroupBook`), the
records of one ServiceNow instance (:class:`shared.servicenow.records.Records`) and the queues. Each decision
of the path of one alert can so be tried against an in-memory fake as well as against Azurite."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from shared.alerting.groups import Header, Member
from shared.alerting.ledger import Claim, Entry
from shared.alerting.records import PreparedAlert
from shared.alerting.rules import Action


class RecordStore(Protocol):
    def create(self, table: str, fields: dict[str, Any]) -> dict[str, Any]: ...

    def find(self, table: str, correlation_id: str) -> dict[str, Any] | None: ...

    def state(self, table: str, sys_id: str) -> str | None: ...

    def note(self, table: str, sys_id: str, text: str) -> dict[str, Any]: ...

    def reopen(self, table: str, sys_id: str, note: str) -> dict[str, Any]: ...

    def resolve(self, table: str, sys_id: str, close_code: str, close_notes: str) -> dict[str, Any]: ...

    def affect(self, task_sys_id: str, ci_sys_id: str) -> dict[str, Any]: ...

    def link(self, table: str, sys_id: str) -> str: ...


# The records of a connection, for calls made at a priority (the alert's, within the ServiceNow budget).
RecordsFor = Callable[[str, int], RecordStore]


class LedgerPort(Protocol):
    def claim(self, alert_key: str, action: str, correlation_id: str) -> Claim: ...

    def created(
        self,
        entry: Entry,
        *,
        sys_id: str,
        number: str,
        table: str,
        correlation_id: str,
        delivery_id: str,
        generation: int,
        origin: tuple[str, str] | None = None,
    ) -> Entry: ...

    def uncertain(self, entry: Entry) -> None: ...

    def release(self, entry: Entry) -> None: ...

    def begin_generation(self, entry: Entry, generation: int, correlation_id: str) -> Entry | None: ...

    def repeated(self, entry: Entry, delivery_id: str, *, reopened: bool) -> Entry | None: ...

    def undelivered(self, entry: Entry, delivery_id: str) -> None: ...

    def entries(self, alert_key: str) -> list[Entry]: ...

    def resolved(self, entry: Entry) -> None: ...


class GroupPort(Protocol):
    def latest(self, gid: str) -> Header | None: ...

    def join(self, gid: str, generation: int, alert: PreparedAlert) -> Member | None: ...

    def member(self, gid: str, key: str) -> Member | None: ...

    def open(
        self, gid: str, generation: int, action: Action, value: str, member: Member, now: datetime
    ) -> Header | None: ...

    def created(self, header: Header, sys_id: str, number: str) -> Header | None: ...

    def unwritten(self, header: Header, *, maybe_written: bool) -> Header | None: ...


class MessageQueue(Protocol):
    def send_message(self, content: Any, **kwargs: Any) -> Any: ...

    def create_queue(self, **kwargs: Any) -> Any: ...


__all__ = ["GroupPort", "LedgerPort", "MessageQueue", "RecordStore", "RecordsFor"]
