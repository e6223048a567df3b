"""Closing an alert at its source, the other half of the loop: Azure Resource Manager for a cloud alert,
the console's alert action for a console alert. A locally managed sensor's API has no call that handles
an alert (its alert API is read-only), so a sensor source cannot be written back to and says so.

Each write is idempotent (closing a closed alert changes nothing), so a crash between the write and the
record of it repeats the write rather than skipping it. An alert the source no longer has (deleted, or
aged out) is an outcome, ``gone``, not an error to retry forever.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from shared.defender.rest import DefenderApiError
from shared.http.errors import HttpError, error_from_response
from shared.http.policies import AuthPolicy, CallStats, Pipeline, build_pipeline
from shared.http.settings import HttpSettings
from shared.http.transport import HttpRequest
from shared.platform.secrets import Secret

logger = logging.getLogger("shared.defender.writeback")
WriteResult = Literal["closed", "gone"]
# What Resource Manager answers a learn action it does not take (no public contract documents the action).
LEARN_REFUSED = (400, 403, 404, 405, 501)
ARM_SCOPE = "https://management.azure.com/.default"
ALERTS_API_VERSION = "2021-07-01-preview"


class AlertWriter(Protocol):
    """A source an alert can be closed at; ``reference`` is the source's own id of the alert."""

    name: str

    def close_alert(self, reference: str, *, learn: bool = False) -> WriteResult: ...


@runtime_checkable
class StatusReader(Protocol):
    """A source that can say whether an alert is closed already (None: it cannot tell)."""

    def is_closed(self, reference: str) -> bool | None: ...


class WriteBackUnsupportedError(DefenderApiError):
    """The source offers no way to close an alert (a locally managed sensor)."""


@dataclass
class AzureBearer:
    """An Azure credential's token for Resource Manager as an ``Authorization`` header, renewed a few
    minutes before it expires (and once when Resource Manager refuses it)."""

    credential: Any  # azure.core.credentials.TokenCredential
    scope: str = ARM_SCOPE
    _token: Any = None

    def authorization(self) -> Secret:
        if self._token is None or self._token.expires_on - time.time() < 300:
            self._token = self.credential.get_token(self.scope)
        return Secret(f"Bearer {self._token.token}")

    def refresh(self, rejected: Secret) -> Secret | None:
        self._token = None
        fresh = self.authorization()
        return None if fresh == rejected else fresh


def _outcome(response: Any, method: str, path: str, source: str) -> WriteResult:
    if response.status_code in (200, 202, 204):
        return "closed"
    if response.status_code == 404:
        return "gone"
    problem = error_from_response(response, method=method, path=path, now=time.time())
    retryable = response.status_code in (401, 403, 408, 409, 429) or response.status_code >= 500
    raise DefenderApiError(
        f"{source}: {method} {path} → {response.status_code}: {problem.message}",
        status=response.status_code,
        retryable=retryable,  # an identity without write access waits for a person, then works: defer
    )


class CloudAlertWriter:
    """Closes cloud alerts through Azure Resource Manager with ``PATCH <alert id>`` and status ``Closed``
    (spec operation ``IotAlerts_Patch``). The alert's ``learn`` action (close, and learn the traffic as
    authorised) exists only as an RBAC operation with no published request, so it is used only when the
    source opts in (``learn``), and a refusal falls back to the documented close with a warning."""

    def __init__(self, name: str, base_url: str, pipeline: Pipeline, stats: CallStats, *, learn: bool = False) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.pipeline = pipeline
        self.stats = stats
        self.learn = learn

    @classmethod
    def connect(
        cls,
        name: str,
        base_url: str,
        credential: Any,
        http: HttpSettings,
        ca_bundle: Any = None,
        *,
        learn: bool = False,
    ) -> CloudAlertWriter:
        stats = CallStats()
        pipeline = build_pipeline(
            http,
            service="arm",
            auth=AuthPolicy(AzureBearer(credential)),
            stats=stats,
            ca_bundle=ca_bundle,
            ca_setting=f"DEFENDER_SOURCES[{name}].ca_bundle",
        )
        return cls(name, base_url, pipeline, stats, learn=learn)

    def close_alert(self, reference: str, *, learn: bool = False) -> WriteResult:
        if not reference.lower().startswith("/subscriptions/") or "/alerts/" not in reference.lower():
            raise DefenderApiError(f"source '{self.name}': {reference!r} is not an alert's resource id")
        if learn and self.learn:
            response = self._send("POST", f"{reference}/learn", None)
            if response.status_code not in LEARN_REFUSED:
                return _outcome(response, "POST", f"{reference}/learn", f"source '{self.name}'")
            logger.warning(
                "source '%s': the learn action was refused (HTTP %s); closing alert %s with status Closed instead",
                self.name,
                response.status_code,
                reference,
            )
        body = json.dumps({"properties": {"status": "Closed"}}).encode()
        return _outcome(self._send("PATCH", reference, body), "PATCH", reference, f"source '{self.name}'")

    def is_closed(self, reference: str) -> bool | None:
        """``GET <alert id>`` (spec operation ``IotAlerts_Get``): whether its status is ``Closed``; None when
        the answer does not say (the caller then closes it again, which changes nothing)."""
        response = self._send("GET", reference, None)
        if response.status_code == 404:
            return True  # gone from the source: nothing left to close
        if response.status_code != 200:
            return None
        try:
            return str(response.json()["properties"]["status"]) == "Closed"
        except (ValueError, KeyError, TypeError):
            return None

    def _send(self, method: str, path: str, body: bytes | None) -> Any:
        request = HttpRequest(
            method,
            f"{self.base_url}{path}",
            params={"api-version": ALERTS_API_VERSION},
            headers={"Content-Type": "application/json"},
            body=body,
            retry_safe=True,  # closing (or learning) twice is closing once
        )
        self.stats.calls += 1
        try:
            return self.pipeline.send(request)
        except HttpError as exc:
            raise DefenderApiError(f"source '{self.name}': {method} failed: {exc}", retryable=exc.retryable) from None

    def close(self) -> None:
        self.pipeline.close()


# The console's documented 500 answers that no repeat can change (management-alert-apis, "UUID"); its third,
# "Unexpected error occurred", may pass.
CONSOLE_REFUSALS = ("Invalid action", "Couldn't execute request because no alert was found for this UUID")


def console_close(
    pipeline: Pipeline, stats: CallStats, base_url: str, source: str, reference: str, learn: bool
) -> WriteResult:
    """``PUT /external/v1/alerts/<UUID>`` with ``handle`` or ``handleAndLearn``: 200 with a ``content``
    message (done, or handled already), or 500 with an ``error`` message. A refusal for the alert (no alert
    for the UUID, invalid action) is permanent, not retryable."""
    path = f"/external/v1/alerts/{reference}"
    body = json.dumps({"action": "handleAndLearn" if learn else "handle"}).encode()
    request = HttpRequest("PUT", f"{base_url}{path}", headers={"Content-Type": "application/json"}, body=body)
    stats.calls += 1
    try:
        response = pipeline.send(request)
    except HttpError as exc:
        raise DefenderApiError(f"source '{source}': PUT failed: {exc}", retryable=exc.retryable) from None
    if response.status_code == 500:
        try:
            answer = response.json()
        except ValueError:
            answer = None
        error = str(answer.get("error", "")) if isinstance(answer, dict) else ""
        if error.rstrip(".") in CONSOLE_REFUSALS:
            raise DefenderApiError(f"source '{source}': the console refused {reference!r}: {error}", status=500)
    return _outcome(response, "PUT", path, f"source '{source}'")
