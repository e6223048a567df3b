"""ServiceNow's own failures beyond the HTTP ones of :mod:`shared.http.errors`: a Batch API call that left
items unserviced, and an answer that is not the JSON a call expects (a hibernating instance above all).

:func:`json_answer` is the one place that reads a 2xx body as JSON, for the Table, Batch and IRE APIs and the
token endpoint alike.
"""

from __future__ import annotations

from typing import Any

import requests

from shared.http.errors import TransientError, excerpt

# The title of the page a hibernating developer instance answers every call with, 200 and HTML, the token
# endpoint included. ServiceNow does not publish the page; clients that detect it look for this title:
# Cortex XSOAR (demisto/content, Packs/ServiceNow/Integrations/ServiceNowv2/ServiceNowv2.py) and Itential's
# adapter look for "Instance Hibernating page" in the body. Kibana only refuses a 2xx without ``result``
# (elastic/kibana, stack_connectors lib/servicenow/service.ts, checkInstance); PySNC 1.2.1 does not detect it.
HIBERNATION_TITLE = "Instance Hibernating page"


class BatchIncompleteError(TransientError):
    """Batch items stayed unserviced after every retry; ``results`` holds those that were serviced."""

    def __init__(self, message: str, *, unserviced: list[str], results: dict[str, Any]) -> None:
        self.unserviced = unserviced
        self.results = results
        super().__init__(message)


class InstanceHibernatingError(TransientError):
    """The instance is hibernating (a developer instance asleep): nothing works until someone wakes it."""


def json_answer(response: requests.Response, *, method: str, path: str) -> Any:
    """The JSON document of a successful answer. A hibernating instance's page raises
    :class:`InstanceHibernatingError`; any other body (a proxy's or a login page) a :class:`TransientError`."""
    try:
        return response.json()
    except ValueError:
        pass
    common: dict[str, Any] = {
        "status": response.status_code,
        "transaction_id": response.headers.get("X-Transaction-ID"),
        "method": method,
        "path": path,
    }
    if HIBERNATION_TITLE in response.text:
        raise InstanceHibernatingError(
            "the instance is hibernating: wake it (from the developer portal) and the app resumes",
            **common,
        )
    kind = response.headers.get("Content-Type") or "no Content-Type"
    message = f"expected JSON, got another body ({kind}; a proxy or login page?)"
    raise TransientError(message, detail=excerpt(response.text) or None, **common)
