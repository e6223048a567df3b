"""The ServiceNow client: the wire (Table, Batch, IRE) in ``client``, its credentials in ``auth`` and
``oauth``, the safe encoded-query builder in ``query``, the connections' settings in ``settings``. The HTTP
pipeline and the typed errors callers branch on are :mod:`shared.http`'s.

The names below load on first use: the settings are read at start-up, and importing them must not load the
client's HTTP stack (``requests``) with them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared.servicenow.client import BatchItem, BatchResult, ServiceNowClient
    from shared.servicenow.errors import BatchIncompleteError
    from shared.servicenow.query import EncodedQuery, QueryValueError

_HOMES = {
    "BatchItem": "shared.servicenow.client",
    "BatchResult": "shared.servicenow.client",
    "ServiceNowClient": "shared.servicenow.client",
    "BatchIncompleteError": "shared.servicenow.errors",
    "EncodedQuery": "shared.servicenow.query",
    "QueryValueError": "shared.servicenow.query",
}
__all__ = ["BatchIncompleteError", "BatchItem", "BatchResult", "EncodedQuery", "QueryValueError", "ServiceNowClient"]


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'shared.servicenow' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
