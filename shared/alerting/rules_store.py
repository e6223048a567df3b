"""The applied forwarding rules (``FORWARDING_RULES_LOCATION``: a blob ``container/name`` in the alerts
storage account, or ``file:/path``): written by ``rules apply``, read by the forwarder through
:class:`RulesSource`, which re-reads it only when it changed and keeps the last good rules in force."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobServiceClient

from shared.alerting.rules import RulesError, RuleSet, load_document, parse_rules
from shared.alerting.settings import RulesLocation

logger = logging.getLogger("shared.alerting.rules_store")


def read_rules(location: RulesLocation, blobs: BlobServiceClient | None) -> Any:
    """The applied document, or None when nothing was applied yet; ValueError names a malformed one."""
    try:
        if location.path is not None:
            return load_document(location.path.read_bytes(), str(location.path))
        assert blobs is not None, "a blob location needs the storage account's blob service"
        data = blobs.get_blob_client(location.container, location.blob).download_blob().readall()
        return load_document(data, str(location))
    except (FileNotFoundError, ResourceNotFoundError):
        return None


def write_rules(location: RulesLocation, blobs: BlobServiceClient | None, document: dict[str, Any]) -> str:
    """Store the document (JSON) where the forwarder reads it; returns where."""
    text = json.dumps(document, indent=2) + "\n"
    if location.path is not None:
        location.path.write_text(text)
        return str(location.path)
    assert blobs is not None, "a blob location needs the storage account's blob service"
    container = blobs.get_container_client(location.container)
    with contextlib.suppress(ResourceExistsError):
        container.create_container()
    container.upload_blob(location.blob, text.encode(), overwrite=True)
    return str(location)


class RulesUnavailableError(Exception):
    """No forwarding rules are in force yet (none applied, unreadable, or invalid): alerts wait for them."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class RulesSource:
    """The applied rules document, re-read only when its ETag (blob) or mtime and size (file) changed, and
    looked at no more often than every ``check_seconds``: between looks the rules in force are returned
    without any storage call or lock (a look per alert was a HEAD per alert, under a process-wide lock).

    An invalid new version is refused with every error logged, and the last good rules stay in force.
    """

    def __init__(
        self,
        location: RulesLocation,
        blobs: BlobServiceClient | None,
        connections: list[str],
        *,
        check_seconds: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.location = location
        self.blobs = blobs
        self.connections = connections
        self.check_seconds = check_seconds
        self.clock = clock
        self.version: str | None = None
        self.rules: RuleSet | None = None
        self.checked = -math.inf
        self.lock = threading.Lock()

    def _read(self) -> tuple[str, bytes]:
        """The current version, and the document's bytes when that version is not the one in force."""
        if self.location.path is not None:
            stat = self.location.path.stat()
            version = f"{stat.st_mtime_ns}:{stat.st_size}"
            return (version, b"") if version == self.version else (version, self.location.path.read_bytes())
        assert self.blobs is not None
        blob = self.blobs.get_blob_client(self.location.container, self.location.blob)
        properties = blob.get_blob_properties()
        if properties.etag == self.version:
            return properties.etag, b""
        return properties.etag, blob.download_blob().readall()

    def current(self) -> RuleSet:
        rules = self.rules
        if rules is not None and self.clock() - self.checked < self.check_seconds:
            return rules  # looked recently: no storage call, no lock
        with self.lock:
            if self.rules is not None and self.clock() - self.checked < self.check_seconds:
                return self.rules  # another thread looked while this one waited
            self.checked = self.clock()
            try:
                version, data = self._read()
            except (ResourceNotFoundError, FileNotFoundError):
                if self.rules is None:
                    raise RulesUnavailableError(
                        f"no forwarding rules at {self.location}; apply a rules document"
                    ) from None
                return self.rules
            except AzureError as exc:
                if self.rules is None:
                    raise RulesUnavailableError(f"cannot read the forwarding rules: {type(exc).__name__}") from None
                return self.rules
            if version == self.version and self.rules is not None:
                return self.rules
            try:
                self.rules = parse_rules(load_document(data, str(self.location)), self.connections)
                logger.info("forwarding rules loaded from %s (%d rules)", self.location, len(self.rules.rules))
            except (ValueError, RulesError) as exc:
                errors = exc.errors if isinstance(exc, RulesError) else [str(exc)]
                logger.error(
                    "forwarding rules at %s refused; the last good rules stay in force:\n%s",
                    self.location,
                    "\n".join(errors),
                )
                if self.rules is None:
                    raise RulesUnavailableError("the forwarding rules document is invalid") from None
            self.version = version
            return self.rules
