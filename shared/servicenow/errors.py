"""ServiceNow's own failure beyond the HTTP ones of :mod:`shared.http.errors`: a Batch API call that left
items unserviced."""

from __future__ import annotations

from typing import Any

from shared.http.errors import TransientError


class BatchIncompleteError(TransientError):
    """Batch items stayed unserviced after every retry; ``results`` holds those that were serviced."""

    def __init__(self, message: str, *, unserviced: list[str], results: dict[str, Any]) -> None:
        self.unserviced = unserviced
        self.results = results
        super().__init__(message)
