"""Where the applied forwarding rules live (``FORWARDING_RULES_LOCATION``): a blob ``container/name`` in
the alerts storage account, or ``file:/path``. Operator commands and the demo read and write it here."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobServiceClient

from shared.rules import load_document


def file_path(location: str) -> Path | None:
    """The file a ``file:`` (or absolute) location names; None for a blob location."""
    return Path(location.removeprefix("file:")) if location.startswith(("file:", "/")) else None


def blob_name(location: str) -> tuple[str, str]:
    container, _, name = location.partition("/")
    return container, name


def read_rules(location: str, blobs: BlobServiceClient | None) -> Any:
    """The applied document, or None when nothing was applied yet; ValueError names a malformed one."""
    path = file_path(location)
    try:
        if path is not None:
            return load_document(path.read_bytes(), str(path))
        assert blobs is not None, "a blob location needs the storage account's blob service"
        return load_document(blobs.get_blob_client(*blob_name(location)).download_blob().readall(), location)
    except (FileNotFoundError, ResourceNotFoundError):
        return None


def write_rules(location: str, blobs: BlobServiceClient | None, document: dict[str, Any]) -> str:
    """Store the document (JSON) where the forwarder reads it; returns where."""
    text = json.dumps(document, indent=2) + "\n"
    path = file_path(location)
    if path is not None:
        path.write_text(text)
        return str(path)
    assert blobs is not None, "a blob location needs the storage account's blob service"
    container_name, name = blob_name(location)
    container = blobs.get_container_client(container_name)
    with contextlib.suppress(ResourceExistsError):
        container.create_container()
    container.upload_blob(name, text.encode(), overwrite=True)
    return location
