"""ServiceNow REST client: one transport, small policies, typed errors.

``client`` speaks the wire (Table, Batch, IRE); ``policies`` hold retry, auth, headers and logging;
``auth`` the credential providers; ``query`` the safe encoded-query builder; ``errors`` the types
callers branch on.
"""

from shared.servicenow.client import BatchItem, BatchResult, ServiceNowClient
from shared.servicenow.errors import (
    AuthError,
    BatchIncompleteError,
    NotFoundError,
    PermanentError,
    RateLimitedError,
    ServiceNowConnectionError,
    ServiceNowError,
    TransientError,
)
from shared.servicenow.query import EncodedQuery, QueryValueError

__all__ = [
    "AuthError",
    "BatchIncompleteError",
    "BatchItem",
    "BatchResult",
    "EncodedQuery",
    "NotFoundError",
    "PermanentError",
    "QueryValueError",
    "RateLimitedError",
    "ServiceNowClient",
    "ServiceNowConnectionError",
    "ServiceNowError",
    "TransientError",
]
