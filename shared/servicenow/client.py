"""ServiceNow REST calls on the wire: Table API, Batch API, IRE.

Business operations (push an incident, sync a device) live in their domain packages and call this
client; this module knows only URLs, parameters and ServiceNow's response shapes. How it signs in is
given to it (a :class:`shared.http.policies.Credential`), chosen by the composition root.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import requests

from shared.http.errors import (
    HttpError,
    PermanentError,
    error_from_parts,
    error_from_response,
)
from shared.http.policies import AuthPolicy, CallStats, Credential, Pipeline, build_pipeline
from shared.http.settings import HttpSettings
from shared.http.transport import HttpRequest
from shared.servicenow.budget import Budget, BudgetPolicy
from shared.servicenow.errors import BatchIncompleteError, json_answer
from shared.servicenow.query import SYS_ID_PATTERN, TABLE_PATTERN, EncodedQuery
from shared.servicenow.settings import ServiceNowConnection

Record = dict[str, Any]


@dataclass(frozen=True)
class BatchItem:
    """One request inside a Batch API call; ``url`` is instance-relative, e.g. ``/api/now/table/incident``."""

    id: str
    method: str
    url: str
    body: Mapping[str, Any] | None = None


@dataclass
class BatchResult:
    id: str
    status: int
    body: Any
    error: HttpError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _more_after(response: requests.Response, offset: int, *, short: bool) -> bool:
    """Whether rows follow ``offset``: the ``Link`` header's ``rel="next"`` when it is there, else
    ``X-Total-Count``; with neither (a proxy stripped them), only a full page says more may follow."""
    links = response.headers.get("Link")
    if links is not None:
        return 'rel="next"' in links
    total = response.headers.get("X-Total-Count", "")
    if total.isdigit():
        return offset < int(total)
    return not short


@dataclass
class ServiceNowClient:
    """Calls against one ServiceNow instance through one pipeline and one pooled session."""

    instance_url: str
    pipeline: Pipeline
    stats: CallStats = field(default_factory=CallStats)
    batch_rounds: int = 5
    context: Mapping[str, Any] = field(default_factory=dict)  # put on every request (HttpRequest.context)

    @classmethod
    def for_connection(
        cls,
        connection: ServiceNowConnection,
        credential: Credential,
        http: HttpSettings,
        budget: Budget | None = None,
    ) -> ServiceNowClient:
        """A client for one connection, signing in with ``credential`` (which the composition root chooses),
        within the connection's ``budget`` when given (the process's one :class:`Budget` for it)."""
        stats = CallStats()
        pipeline = build_pipeline(
            http,
            service="ServiceNow",
            auth=AuthPolicy(credential),
            budget=BudgetPolicy(budget) if budget is not None else None,
            stats=stats,
            proxy_url=connection.proxy.url if connection.proxy else None,
            ca_bundle=connection.ca_bundle,
            ca_setting="SERVICENOW_CA_BUNDLE",
        )
        return cls(connection.instance_url, pipeline, stats)

    def with_context(self, **options: Any) -> ServiceNowClient:
        """The same client (pipeline, session, stats), its requests carrying ``options`` too, e.g. ``priority``
        (:mod:`shared.servicenow.budget`)."""
        return replace(self, context={**self.context, **options})

    # -- the one way out ---------------------------------------------------------------------
    def call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        expected: Sequence[int] = (200,),
        retry_safe: bool | None = None,
    ) -> requests.Response:
        """Send one logical call; return the response or raise the typed error."""
        self.stats.calls += 1
        request = HttpRequest(
            method=method,
            url=self.instance_url + path,
            params=dict(params) if params else None,
            body=json.dumps(body, separators=(",", ":")).encode() if body is not None else None,
            retry_safe=retry_safe,
            context=dict(self.context),
        )
        response = self.pipeline.send(request)
        if response.status_code not in expected:
            if 200 <= response.status_code < 300:
                json_answer(response, method=method, path=path)  # a hibernating instance answers 200 to a POST too
            raise error_from_response(response, method=method, path=path, now=time.time())
        return response

    @staticmethod
    def _result(response: requests.Response, method: str, path: str) -> Any:
        document = json_answer(response, method=method, path=path)
        if not isinstance(document, dict) or "result" not in document:
            raise PermanentError("response has no 'result'", status=response.status_code, method=method, path=path)
        return document["result"]

    # -- Table API ---------------------------------------------------------------------------
    @staticmethod
    def _table_path(table: str, sys_id: str | None = None) -> str:
        if not TABLE_PATTERN.fullmatch(table):
            raise ValueError(f"{table!r} is not a ServiceNow table name")
        if sys_id is None:
            return f"/api/now/table/{table}"
        if not SYS_ID_PATTERN.fullmatch(sys_id):
            raise ValueError(f"{sys_id!r} is not a sys_id (32 lower-case hex digits)")
        return f"/api/now/table/{table}/{sys_id}"

    @staticmethod
    def _read_params(fields: Sequence[str] | None, display_value: str | None) -> dict[str, str]:
        params = {"sysparm_exclude_reference_link": "true"}
        if fields:
            params["sysparm_fields"] = ",".join(fields)
        if display_value:
            params["sysparm_display_value"] = display_value
        return params

    def get_record(
        self, table: str, sys_id: str, *, fields: Sequence[str] | None = None, display_value: str | None = None
    ) -> Record:
        path = self._table_path(table, sys_id)
        response = self.call("GET", path, params=self._read_params(fields, display_value))
        result: Record = self._result(response, "GET", path)
        return result

    def query(
        self,
        table: str,
        query: EncodedQuery | None = None,
        *,
        fields: Sequence[str] | None = None,
        page_size: int = 1000,
        limit: int | None = None,
        display_value: str | None = None,
    ) -> Iterator[Record]:
        """Yield matching records page by page, until neither ``Link`` (``rel="next"``) nor ``X-Total-Count``
        says more follow.

        ServiceNow applies ``sysparm_limit`` before ACL evaluation (Table API doc, ``sysparm_limit``): a page can
        be short, even empty, with more rows after it, so the offset moves by the page asked for, not by the rows
        that came back. Without an explicit order the query is ordered by ``sys_id`` so that offset paging is
        stable.
        """
        path = self._table_path(table)
        query = query or EncodedQuery()
        if not query.has_order:
            query = query.order_by("sys_id")
        params = self._read_params(fields, display_value)
        params["sysparm_query"] = str(query)
        offset = returned = 0
        while limit is None or returned < limit:
            size = page_size if limit is None else min(page_size, limit - returned)
            params.update(sysparm_limit=str(size), sysparm_offset=str(offset))
            response = self.call("GET", path, params=params)
            page = self._result(response, "GET", path)
            yield from page
            returned += len(page)
            offset += size
            if not _more_after(response, offset, short=len(page) < size):
                return

    def create_record(self, table: str, values: Mapping[str, Any], *, retry_safe: bool = False) -> Record:
        """POST one record. Not repeated after an ambiguous failure unless ``retry_safe``."""
        path = self._table_path(table)
        response = self.call(
            "POST",
            path,
            body=dict(values),
            expected=(201,),
            retry_safe=retry_safe,
            params={"sysparm_exclude_reference_link": "true"},
        )
        result: Record = self._result(response, "POST", path)
        return result

    def update_record(self, table: str, sys_id: str, values: Mapping[str, Any], *, retry_safe: bool = True) -> Record:
        """PATCH fields. Pass ``retry_safe=False`` when the patch appends (``work_notes``)."""
        path = self._table_path(table, sys_id)
        response = self.call(
            "PATCH", path, body=dict(values), retry_safe=retry_safe, params={"sysparm_exclude_reference_link": "true"}
        )
        result: Record = self._result(response, "PATCH", path)
        return result

    def delete_record(self, table: str, sys_id: str) -> None:
        self.call("DELETE", self._table_path(table, sys_id), expected=(204,))

    # -- Batch API ---------------------------------------------------------------------------
    def batch(self, items: Sequence[BatchItem]) -> dict[str, BatchResult]:
        """Run items through ``/api/now/v1/batch``; unserviced items are sent again, never dropped.

        Raises :class:`BatchIncompleteError` (transient) if some items stay unserviced after every round.
        """
        pending = {item.id: item for item in items}
        if len(pending) != len(items):
            raise ValueError("batch item ids must be unique")
        results: dict[str, BatchResult] = {}
        for round_number in range(1, self.batch_rounds + 1):
            document = self._batch_round(list(pending.values()), round_number)
            for served in document.get("serviced_requests") or []:
                item = pending.pop(str(served.get("id")), None)
                if item is not None:
                    results[item.id] = self._batch_result(item, served)
            if not pending:
                return results
            unserviced = [str(i) for i in document.get("unserviced_requests") or []]
            missing = sorted(set(pending) - set(unserviced))
            if missing:
                # Neither serviced nor reported unserviced: treat as unserviced rather than lose it.
                unserviced.extend(missing)
            if round_number < self.batch_rounds:
                time.sleep(min(2.0, 0.1 * 2**round_number))
        raise BatchIncompleteError(
            f"{len(pending)} of {len(items)} batch item(s) still unserviced after {self.batch_rounds} rounds",
            unserviced=sorted(pending),
            results=results,
        )

    def _batch_round(self, items: Sequence[BatchItem], round_number: int) -> dict[str, Any]:
        rest_requests = []
        for item in items:
            headers = [{"name": "Accept", "value": "application/json"}]
            request: dict[str, Any] = {
                "id": item.id,
                "method": item.method,
                "url": item.url,
                "exclude_response_headers": False,
            }
            if item.body is not None:
                headers.append({"name": "Content-Type", "value": "application/json"})
                request["body"] = base64.b64encode(json.dumps(item.body).encode()).decode("ascii")
            request["headers"] = headers
            rest_requests.append(request)
        body = {"batch_request_id": str(round_number), "rest_requests": rest_requests}
        safe = all(item.method.upper() != "POST" for item in items)
        response = self.call("POST", "/api/now/v1/batch", body=body, retry_safe=safe)
        document = json_answer(response, method="POST", path="/api/now/v1/batch")
        if not isinstance(document, dict):
            raise PermanentError("batch response is not a JSON object", status=response.status_code)
        return document

    @staticmethod
    def _batch_result(item: BatchItem, served: Mapping[str, Any]) -> BatchResult:
        status = int(served.get("status_code", 0))
        raw = base64.b64decode(served.get("body") or b"").decode("utf-8", "replace")
        headers = {h.get("name", ""): h.get("value", "") for h in served.get("headers") or []}
        try:
            parsed: Any = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw
        result = parsed.get("result") if isinstance(parsed, dict) and "result" in parsed else parsed
        if 200 <= status < 300:
            return BatchResult(item.id, status, result)
        error = error_from_parts(
            status,
            headers,
            raw,
            method=item.method,
            path=item.url,
            now=time.time(),
            reason=str(served.get("status_text") or ""),
        )
        return BatchResult(item.id, status, parsed, error)

    # -- CMDB Identification and Reconciliation ----------------------------------------------
    def identify_reconcile(self, payload: Mapping[str, Any], *, data_source: str) -> dict[str, Any]:
        """POST items and relations to the IRE; identification makes a repeat safe, so it is retried."""
        path = "/api/now/identifyreconcile"
        response = self.call(
            "POST", path, params={"sysparm_data_source": data_source}, body=dict(payload), retry_safe=True
        )
        result: dict[str, Any] = self._result(response, "POST", path)
        return result

    def close(self) -> None:
        self.pipeline.close()
