"""Clients for the storage account behind a named connection, built the way the host resolves it."""

from __future__ import annotations

from typing import Any

import requests
import requests.adapters
from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError
from azure.data.tables import TableClient, TableServiceClient, UpdateMode
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueServiceClient

from shared.platform.identity import azure_credential
from shared.platform.settings import StorageConnection


def _credential(connection: StorageConnection) -> Any:
    return azure_credential(connection.client_id)


def pooled_session(size: int = 10) -> requests.Session:
    """A requests session for an Azure SDK client with a pool of ``size`` connections (the default is 10).

    It does not consult the environment (``trust_env``): requests would otherwise look up proxy, ``.netrc``
    and CA-bundle variables on every request, which costs a few hundred microseconds where every app
    setting is an environment variable (Azure Functions), and is not how the product takes its settings."""
    session = requests.Session()
    session.trust_env = False
    adapter = requests.adapters.HTTPAdapter(pool_connections=2, pool_maxsize=size)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def create_table_if_missing(table: TableClient) -> None:
    """Create the table if missing. The deployment creates it and may grant only table-level data access,
    under which creating answers 403 rather than 409: both mean there is nothing to do."""
    try:
        table.create_table()
    except ResourceExistsError:
        pass
    except HttpResponseError as exc:
        if exc.status_code != 403:
            raise


def merge_if_unchanged(table: TableClient, entity: dict[str, Any], etag: str) -> str | None:
    """Merge ``entity`` into its row only if the row still has ``etag``: the row's new etag, or None when
    another writer changed it first (storage answers 409 or 412)."""
    try:
        metadata = table.update_entity(
            entity, mode=UpdateMode.MERGE, etag=etag, match_condition=MatchConditions.IfNotModified
        )
    except HttpResponseError as exc:
        if exc.status_code in (409, 412):
            return None
        raise
    new_etag: str = metadata["etag"]
    return new_etag


def queue_service(connection: StorageConnection, **options: Any) -> QueueServiceClient:
    """``options``: the SDK's client options, e.g. shorter retries for an operator at a terminal."""
    options.setdefault("session", pooled_session())
    if connection.connection_string:
        return QueueServiceClient.from_connection_string(connection.connection_string, **options)
    assert connection.queue_uri is not None
    return QueueServiceClient(connection.queue_uri, credential=_credential(connection), **options)


def table_service(connection: StorageConnection, pool_size: int = 20, **options: Any) -> TableServiceClient:
    """``options``: as for :func:`queue_service`."""
    options.setdefault("session", pooled_session(pool_size))  # the device sync reads a page's rows in parallel
    if connection.connection_string:
        return TableServiceClient.from_connection_string(connection.connection_string, **options)
    if connection.table_uri is None:
        raise ValueError(f"{connection.name}__tableServiceUri is not set; the forwarding ledger needs table storage")
    return TableServiceClient(connection.table_uri, credential=_credential(connection), **options)


def blob_service(connection: StorageConnection, **options: Any) -> BlobServiceClient:
    options.setdefault("session", pooled_session())
    if connection.connection_string:
        return BlobServiceClient.from_connection_string(connection.connection_string, **options)
    if connection.blob_uri is None:
        raise ValueError(f"{connection.name}__blobServiceUri is not set; the rules document lives in blob storage")
    return BlobServiceClient(connection.blob_uri, credential=_credential(connection), **options)
