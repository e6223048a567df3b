"""What went wrong while forwarding an alert, classified once.

One place decides, for any failure: defer the message (try again later) or poison it; whether a
failed write may still have created the record (then the next attempt looks it up by correlation id
rather than risk a second one); how long the cause asked to wait; and a low-cardinality ``kind`` that
telemetry counts by.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from azure.core.exceptions import AzureError

from shared.alerting.rules_store import RulesUnavailableError
from shared.http.errors import (
    AuthError,
    ConnectionFailedError,
    HttpError,
    PermanentError,
    RateLimitedError,
    TransientError,
)
from shared.platform.secrets import SecretNotFoundError, SecretStoreUnavailableError
from shared.servicenow.oauth import TokenError

FailureKind = Literal[
    "busy",  # another worker holds the alert's ledger entry
    "rules",  # no forwarding rules yet, or unreadable
    "rate_limited",  # 429
    "timeout",  # no answer in time
    "servicenow_unavailable",  # 5xx, connection failures, a dropped or non-JSON answer
    "auth",  # a credential refused or missing: a person must fix it; the alert waits for them
    "key_vault",  # a secret missing or the vault unreachable
    "storage",  # the ledger, queue or rules blob
    "servicenow_refused",  # 400, 403, 404: the same request can never succeed
]
# Outcomes that are not failures of a call, for the same telemetry dimension.
PoisonKind = Literal["invalid_message", "max_age"]


@dataclass(frozen=True)
class Failure:
    kind: FailureKind
    reason: str  # one line, for the log and the message's attempt history
    defer: bool  # True: try again later; False: the poison queue
    maybe_written: bool  # a failed create may still have created the record
    retry_after: float | None = None  # the wait the cause asked for


class DeferError(Exception):
    """The forwarder's own reason to try again later (another worker is busy with this alert)."""

    def __init__(self, reason: str, retry_after: float | None = None, kind: FailureKind = "busy") -> None:
        self.reason = reason
        self.retry_after = retry_after
        self.kind = kind
        super().__init__(reason)


def classify(exc: BaseException) -> Failure | None:
    """The failure ``exc`` stands for; None for an exception nobody anticipated (it propagates, and the
    host's own retry keeps the message)."""
    if isinstance(exc, DeferError):
        return Failure(exc.kind, exc.reason, defer=True, maybe_written=False, retry_after=exc.retry_after)
    if isinstance(exc, RulesUnavailableError):
        return Failure("rules", exc.reason, defer=True, maybe_written=False)
    if isinstance(exc, TokenError):
        # No credential: nothing reached ServiceNow. A person fixes it; the alert must still be there then.
        return Failure("auth", str(exc), defer=True, maybe_written=False)
    if isinstance(exc, SecretNotFoundError | SecretStoreUnavailableError):
        return Failure("key_vault", str(exc), defer=True, maybe_written=False)
    if isinstance(exc, RateLimitedError):
        return Failure("rate_limited", str(exc), defer=True, maybe_written=False, retry_after=exc.retry_after)
    if isinstance(exc, ConnectionFailedError):
        kind: FailureKind = "timeout" if exc.timed_out else "servicenow_unavailable"
        return Failure(kind, str(exc), defer=True, maybe_written=exc.request_sent)
    if isinstance(exc, AuthError):
        return Failure("auth", str(exc), defer=True, maybe_written=False)  # a 401 was not processed
    if isinstance(exc, TransientError):
        # 5xx may have been processed; 202 is a dropped request that may still run.
        maybe = exc.status is None or exc.status >= 500 or exc.status == 202
        return Failure("servicenow_unavailable", str(exc), defer=True, maybe_written=maybe)
    if isinstance(exc, PermanentError | HttpError):
        return Failure("servicenow_refused", str(exc), defer=False, maybe_written=False)
    if isinstance(exc, AzureError):
        return Failure("storage", f"{type(exc).__name__} from storage", defer=True, maybe_written=True)
    return None
