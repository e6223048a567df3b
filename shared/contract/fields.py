"""Reading and checking one JSON object of a message: case-insensitive field names, errors that name the
field path. The parser reads with these; a typed message is checked with the same rules as it is written
(:meth:`shared.contract.model.AlertMessage.to_document`), so a document is valid both ways or neither."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.platform.times import parse_iso

MAX_TEXT = 16_384
MAX_ID = 256
# The other limits of the contract's fields (schemas/alert-message.v1.json), read and written alike.
MAX_TITLE = 1024
MAX_ENGINE = 128
MAX_NAME = 256  # a sensor's name, site and zone; a device address; who handled an alert
MAX_PROTOCOL = 64
MAX_SOURCE = 64  # origin.source: a source's name in DEFENDER_SOURCES
MAX_REF = 1024  # origin.ref: an ARM id, a console's alert UUID
MAX_ACTION = 32
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class InvalidMessageError(ValueError):
    """The message can never be processed; ``reason`` names the field and what was wrong."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def millis(moment: datetime) -> int:
    """A time as the contract writes it: whole milliseconds since the epoch, UTC (exact, no float)."""
    aware = moment if moment.tzinfo is not None else moment.astimezone(UTC)  # naive: local time, as timestamp()
    return (aware - EPOCH) // timedelta(milliseconds=1)


# The checks name the field as ``object.field`` (``where``, ``name``), put together only when one fails.
def path(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def check_text(
    value: str | None, where: str, name: str, *, required: bool = False, limit: int = MAX_TEXT
) -> str | None:
    """A text field's value (None for absent or, when not required, empty), or why it is not one."""
    if value is None or (value == "" and not required):
        if required:
            raise InvalidMessageError(f"{path(where, name)}: required")
        return None
    if not isinstance(value, str):
        raise InvalidMessageError(f"{path(where, name)}: expected a string, got {type(value).__name__}")
    if required and not value.strip():
        raise InvalidMessageError(f"{path(where, name)}: must not be empty")
    if len(value) > limit:
        raise InvalidMessageError(f"{path(where, name)}: {len(value)} characters, more than {limit}")
    return value


def check_identifier(value: Any, where: str, name: str) -> str:
    """An id as the contract holds it: a number, or a printable string of 1-256 characters (stripped)."""
    if isinstance(value, bool) or value is None:
        raise InvalidMessageError(f"{path(where, name)}: required (a number or a string)")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip() and len(value) <= MAX_ID and value.isprintable():
        return value.strip()
    raise InvalidMessageError(f"{path(where, name)}: expected a number or a printable string of 1-{MAX_ID} characters")


def check_url(value: str | None, where: str, name: str) -> str | None:
    if value is None:
        return None
    url = check_text(value, where, name, limit=2048)
    if url is not None and not url.lower().startswith(("https://", "http://")):
        raise InvalidMessageError(f"{path(where, name)}: expected an http(s) URL")
    return url


class Fields:
    """Case-insensitive read access to one JSON object, with errors that name the field path."""

    def __init__(self, raw: Any, where: str) -> None:
        if not isinstance(raw, dict):
            raise InvalidMessageError(f"{where}: expected an object, got {type(raw).__name__}")
        self.raw: dict[str, Any] = raw
        self.where = where
        self.keys: dict[str, str] = {}
        for key in raw:
            folded = str(key).lower()
            if folded in self.keys:
                raise InvalidMessageError(f"{where}: fields {self.keys[folded]!r} and {key!r} differ only in case")
            self.keys[folded] = key

    def path(self, name: str) -> str:
        return path(self.where, name)

    def get(self, name: str) -> Any:
        key = self.keys.get(name.lower())
        return None if key is None else self.raw[key]

    def text(self, name: str, *, required: bool = False, limit: int = MAX_TEXT) -> str | None:
        value = self.get(name)
        # The common cases, which check_text accepts as they are, without a call per field: a text within its
        # limit (not blank, when required), or an optional field left out.
        if type(value) is str and 0 < len(value) <= limit and (not required or not value.isspace()):
            return value
        if value is None and not required:
            return None
        return check_text(value, self.where, name, required=required, limit=limit)

    def identifier(self, name: str) -> str:
        value = self.get(name)
        return str(value) if type(value) is int else check_identifier(value, self.where, name)

    def time(self, name: str, *, required: bool = True) -> datetime | None:
        value = self.get(name)
        if value is None:
            if required:
                raise InvalidMessageError(f"{self.path(name)}: required (milliseconds since the epoch, UTC)")
            return None
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            try:
                return datetime.fromtimestamp(value / 1000, UTC)
            except (OverflowError, OSError, ValueError):
                pass
        elif isinstance(value, str) and (parsed := parse_iso(value)) is not None:
            return parsed
        raise InvalidMessageError(f"{self.path(name)}: {value!r} is not a time (milliseconds since the epoch, UTC)")

    def integer(self, name: str) -> int | None:
        value = self.get(name)
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise InvalidMessageError(f"{self.path(name)}: expected a whole number or null")

    def boolean(self, name: str) -> bool | None:
        value = self.get(name)
        if value is None or isinstance(value, bool):
            return value
        raise InvalidMessageError(f"{self.path(name)}: expected true or false")

    def child(self, name: str, *, required: bool = True) -> Fields | None:
        value = self.get(name)
        if value is None:
            if required:
                raise InvalidMessageError(f"{self.path(name)}: required")
            return None
        return Fields(value, self.path(name))
