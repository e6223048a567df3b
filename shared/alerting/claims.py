"""Claim rows: how the ledger's entries and the groups' headers are claimed, and how such a row reads.

A row is *claimed* by the worker about to write its ServiceNow record (an insert only one writer wins, or a
conditional merge), *created* once the record exists, *uncertain* when a write failed in a way that may have
created it (the next attempt looks it up first). A claim older than ``claim_seconds`` is stale: its worker
crashed or gave up, and another may take it over.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, Literal

ClaimState = Literal["claimed", "created", "uncertain"]
REQUIRED = object()  # a column every row of the family has


def claim_columns(now: datetime) -> dict[str, Any]:
    """The columns that claim a row now."""
    return {"state": "claimed", "claim_id": uuid.uuid4().hex, "claimed_at": now}


def stale(claimed_at: datetime | None, now: datetime, claim_seconds: float) -> bool:
    """A claim without a readable time is stale too: recovery looks the record up before writing."""
    return claimed_at is None or now - claimed_at >= timedelta(seconds=claim_seconds)


class Columns:
    """A row family's columns as dataclass fields: their defaults (for older rows that lack one) and how a
    stored value reads (JSON text, a datetime once stored as ISO text)."""

    def __init__(self, defaults: Mapping[str, Any], decode: Mapping[str, Callable[[Any], Any]]) -> None:
        self.defaults = defaults
        self.decode = decode

    def read(self, entity: Mapping[str, Any]) -> dict[str, Any]:
        """Every column of a stored row."""
        return {
            name: self._value(name, entity[name] if default is REQUIRED else entity.get(name, default))
            for name, default in self.defaults.items()
        }

    def merged(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The columns among ``values`` (a merge just written), as fields."""
        return {name: self._value(name, value) for name, value in values.items() if name in self.defaults}

    def _value(self, name: str, value: Any) -> Any:
        convert = self.decode.get(name)
        return value if convert is None else convert(value)
