"""The ServiceNow client: the wire (Table, Batch, IRE) in ``client``, its credentials in ``auth`` and
``oauth``, the safe encoded-query builder in ``query``. The HTTP pipeline and the typed errors callers
branch on are :mod:`shared.http`'s.
"""

from shared.servicenow.client import BatchItem, BatchResult, ServiceNowClient
from shared.servicenow.errors import BatchIncompleteError
from shared.servicenow.query import EncodedQuery, QueryValueError

__all__ = ["BatchIncompleteError", "BatchItem", "BatchResult", "EncodedQuery", "QueryValueError", "ServiceNowClient"]
