"""An Azure Resource Graph emulator for the ``iotsecurityresources`` table (developer tooling, never deployed).

What the real ``azure-mgmt-resourcegraph`` SDK sees of ARG, pointed at it through its ``base_url``:
``POST /providers/Microsoft.ResourceGraph/resources`` with ``{"subscriptions", "query", "options":
{"$top", "$skipToken", "resultFormat"}}`` → ``{"totalRecords", "count", "resultTruncated", "$skipToken",
"data"}``; an ARM bearer token required (any non-empty one: the token flow is Entra ID's, not ARG's);
the per-user quota headers (``x-ms-user-quota-remaining``, ``x-ms-user-quota-resets-after``) and a 429
past the quota; eventual consistency (a change shows ``consistency_seconds`` after it was made; until then
queries show the version before it, and a new resource not at all); Resource Manager's alert writes
(``PATCH`` of an alert's status, its ``learn`` action) with the hourly write limit; resource provider
registration (``POST …/providers/{namespace}/register``, then ``GET …/providers/{namespace}`` shows
``Registering`` once and ``Registered`` after, as registration takes a while in Azure); and the shared fault
plan.

Only the KQL shapes the product sends are evaluated, honestly — anything else is refused with the
``InvalidQuery`` error ARG gives, so a query the product changes cannot pass here and fail in Azure:

    iotsecurityresources
    | where type =~ '<resource type>'   (or: type in~ ('<type>', '<type>'))
    [| where properties.status !~ 'Closed']
    [| extend updated = todatetime(properties.<field>)]
    [| where updated >= datetime(<ISO 8601>)]
    | order by <updated|name> asc[, name asc]
    | project id, name, type, properties[, updated]
"""

from __future__ import annotations

import base64
import json
import math
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from shared.platform.times import parse_iso
from tools.emulators.azure import azure_error, has_bearer_token
from tools.emulators.faults import FaultPlan
from tools.emulators.httpserver import Reply, TlsEmulator

TABLE = "iotsecurityresources"
# Resource Manager's alert operations: PATCH the alert (its status), POST its learn action.
ALERT_PATH = re.compile(
    r"^(?P<id>/subscriptions/[^/]+/providers/Microsoft\.IoTSecurity/locations/[^/]+/deviceGroups/[^/]+/alerts/[^/]+)"
    r"(?P<learn>/learn)?$",
    re.I,
)
PROVIDER_PATH = re.compile(
    r"^/subscriptions/(?P<subscription>[^/]+)/providers/(?P<namespace>[A-Za-z.]+)(?P<register>/register)?$"
)
ALERT_STATUSES = ("New", "InProgress", "Closed")  # the spec's AlertStatus: there is no Active
WRITES_PER_HOUR = 1200  # Resource Manager's documented default per subscription and principal
QUERY_PATH = "/providers/microsoft.resourcegraph/resources"
MAX_TOP = 1000
SHAPE = re.compile(
    r"^\s*iotsecurityresources\s*"
    r"\|\s*where\s+type\s*"
    r"(?:=~\s*'(?P<type>[a-z0-9./]+)'|in~\s*\((?P<types>\s*'[a-z0-9./]+'(?:\s*,\s*'[a-z0-9./]+')*\s*)\))\s*"
    r"(?:\|\s*where\s+properties\.status\s*!~\s*'(?P<not_status>[A-Za-z]+)'\s*)?"
    r"(?:\|\s*extend\s+updated\s*=\s*todatetime\(properties\.(?P<field>[A-Za-z]+)\)\s*)?"
    r"(?:\|\s*where\s+updated\s*>=\s*datetime\((?P<since>[0-9T:.\-+Z]+)\)\s*)?"
    r"\|\s*order\s+by\s+(?P<order>updated|name)\s+asc(?:\s*,\s*name\s+asc)?\s*"
    r"\|\s*project\s+id\s*,\s*name\s*,\s*type\s*,\s*properties(?P<with_updated>\s*,\s*updated)?\s*$",
    re.S,
)


@dataclass
class StoredResource:
    document: dict[str, Any]
    visible_at: float  # eventual consistency: when a query first sees this version
    previous: dict[str, Any] | None = None  # what queries show until then (None: a new resource, not shown)

    def seen(self, now: float) -> dict[str, Any] | None:
        return self.document if self.visible_at <= now else self.previous


@dataclass
class Quota:
    per_window: int = 15  # ARG's documented default per user and 5-second window
    window_seconds: float = 5.0
    window_start: float = 0.0
    used: int = 0


class ResourceGraphEmulator(TlsEmulator):
    thread_name = "resourcegraph-emulator"

    def __init__(
        self, *, host: str = "127.0.0.1", port: int = 0, tls_dir: Path = Path(".local/tls"), subscription: str = ""
    ) -> None:
        self.subscription = subscription or "00000000-0000-0000-0000-00000000d1f0"
        self.resources: dict[str, StoredResource] = {}  # by lower-cased ARM id
        self.by_type: dict[str, dict[str, StoredResource]] = {}
        self.version = 0  # bumped on every change: a paged query's sorted rows are kept until then
        self._cache: tuple[tuple[Any, ...], list[dict[str, Any]]] | None = None
        self._cache_until = 0.0
        self.lock = threading.Lock()
        self.faults = FaultPlan(time.time)
        self.quota = Quota()
        self.consistency_seconds = 0.0
        self.stats: Counter[str] = Counter()
        self.queries: list[str] = []
        self.writes: list[tuple[str, str, str]] = []  # (method, alert id, status), in order
        self.write_window = [0.0, 0]
        self.providers: dict[str, str] = {}  # namespace → registrationState, as Resource Manager shows it
        # Sensors in contact: queries show their connectivityTime as now, as a connected sensor keeps it.
        self.heartbeats: set[str] = set()
        super().__init__(host, port, tls_dir)

    # -- the world -------------------------------------------------------------------------
    def put(self, *documents: dict[str, Any]) -> None:
        """Add or replace resources (ARM documents with ``id``, ``name``, ``type``, ``properties``); each
        version shows in queries ``consistency_seconds`` later."""
        visible_at = time.time() + self.consistency_seconds
        with self.lock:
            for document in documents:
                self._store(json.loads(json.dumps(document)), visible_at)

    def _store(self, document: dict[str, Any], visible_at: float) -> None:
        key = str(document["id"]).lower()
        current = self.resources.get(key)
        stored = StoredResource(document, visible_at, current.seen(time.time()) if current else None)
        self.resources[key] = stored
        self.by_type.setdefault(str(document.get("type", "")).lower(), {})[key] = stored
        self.version += 1

    def replace(self, resource_types: set[str], documents: list[dict[str, Any]]) -> None:
        """Make these types hold exactly ``documents``: changed ones are stored again (and show late, as
        any change), unchanged ones keep their time, missing ones are deleted."""
        visible_at = time.time() + self.consistency_seconds
        wanted = {str(d["id"]).lower(): d for d in documents}
        with self.lock:
            for resource_type in resource_types:
                for key in list(self.by_type.get(resource_type, {})):
                    if key not in wanted:
                        del self.by_type[resource_type][key]
                        del self.resources[key]
                        self.version += 1
            for key, document in wanted.items():
                current = self.resources.get(key)
                if current is None or current.document != document:
                    self._store(json.loads(json.dumps(document)), visible_at)

    def load_world(self, inventory: Any) -> None:
        """Show a generated inventory (devices, sensors, vulnerabilities) as the cloud would."""
        from tools.emulators.resourcegraph import world  # noqa: PLC0415 - only worlds need the console's inventory

        documents = world.documents(inventory, self.subscription)
        self.replace({world.DEVICES, world.SENSORS, world.VULNERABILITIES}, documents)
        self.heartbeats = {
            str(d["id"]).lower()
            for d in documents
            if d["type"] == world.SENSORS and d["properties"]["sensorStatus"] == "Ok"
        }

    def get(self, resource_id: str) -> dict[str, Any] | None:
        with self.lock:
            stored = self.resources.get(resource_id.lower())
            return json.loads(json.dumps(stored.document)) if stored else None

    def reset(self) -> None:
        with self.lock:
            self.resources.clear()
            self.by_type.clear()
            self.version += 1
        self.faults.clear()
        self.quota = Quota()
        self.consistency_seconds = 0.0
        self.stats.clear()
        self.queries.clear()
        self.writes.clear()
        self.write_window = [0.0, 0]
        self.providers.clear()
        self.heartbeats.clear()

    # -- the wire --------------------------------------------------------------------------
    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Reply | None:
        url = urlsplit(target)
        if url.path.startswith("/_emulator/"):
            return self.admin(method, url.path, body)
        if not has_bearer_token(headers):
            return azure_error(
                401, "AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing."
            )
        fault = self.faults.take()
        if fault is not None:
            self.stats["faults"] += 1
            if fault.kind == "reset":
                return None
            if fault.kind == "slow_response" and ALERT_PATH.match(url.path) and method in ("PATCH", "POST"):
                reply = self.write_alert(method, url.path, url.query, body)
                time.sleep(fault.seconds)  # the write took effect; its answer comes too late (a lost response)
                return reply
            if fault.status == 429:
                return self.throttled(fault.retry_after or "1")
            return azure_error(fault.status, "ServiceUnavailable", "The service is temporarily unavailable.")
        if ALERT_PATH.match(url.path) and method in ("PATCH", "POST"):
            return self.write_alert(method, url.path, url.query, body)
        if (alert := ALERT_PATH.match(url.path)) and method == "GET" and not alert["learn"]:
            # IotAlerts_Get: Resource Manager reads the resource itself, at once (no query lag).
            document = self.get(alert["id"])
            if document is None:
                return azure_error(404, "ResourceNotFound", f"The alert '{alert['id']}' was not found.")
            self.stats["alert_reads"] += 1
            return Reply(200, document)
        if (provider := PROVIDER_PATH.match(url.path)) and method in ("GET", "POST"):
            return self.provider(method, provider)
        if method != "POST" or url.path.lower() != QUERY_PATH:
            return azure_error(404, "NotFound", f"{method} {url.path} is not served here")
        remaining, resets_after = self.take_quota()
        if remaining < 0:
            return self.throttled(str(max(1, round(resets_after))))
        quota_headers = {
            "x-ms-user-quota-remaining": str(remaining),
            "x-ms-user-quota-resets-after": _timespan(resets_after),
        }
        try:
            request = json.loads(body)
            query = str(request["query"])
            options = request.get("options") or {}
        except (ValueError, KeyError, TypeError):
            return azure_error(400, "BadRequest", "The request body must be a JSON object with a 'query'.")
        self.stats["queries"] += 1
        self.queries.append(query)
        reply = self.run(query, options, list(request.get("subscriptions") or []))
        reply.headers.update(quota_headers)
        return reply

    def take_quota(self) -> tuple[int, float]:
        """One query off the user's quota: (remaining after it, negative when over; seconds to the reset)."""
        now = time.time()
        with self.lock:
            quota = self.quota
            if now - quota.window_start >= quota.window_seconds:
                quota.window_start, quota.used = now, 0
            quota.used += 1
            return quota.per_window - quota.used, quota.window_start + quota.window_seconds - now

    def throttled(self, retry_after: str) -> Reply:
        self.stats["throttled"] += 1
        return azure_error(
            429,
            "RateLimiting",
            "Please provide below info when asking for support: the query was throttled (user quota exceeded).",
            {
                "Retry-After": retry_after,
                "x-ms-user-quota-remaining": "0",
                "x-ms-user-quota-resets-after": _timespan(float(retry_after)),
            },
        )

    def run(self, query: str, options: dict[str, Any], subscriptions: list[str]) -> Reply:
        shape = SHAPE.match(query)
        if shape is None:
            return azure_error(
                400,
                "InvalidQuery",
                "Query is invalid (the emulator evaluates only the product's fixed query shapes; see its docstring)",
            )
        since = parse_iso(shape["since"]) if shape["since"] else None
        if shape["since"] and since is None:
            return azure_error(400, "InvalidQuery", f"datetime({shape['since']}) is not a time")
        if (shape["since"] or shape["with_updated"] or shape["order"] == "updated") and not shape["field"]:
            return azure_error(400, "InvalidQuery", "'updated' is used but never defined with extend")
        top = int(options.get("$top") or 100)
        if not 1 <= top <= MAX_TOP:
            return azure_error(400, "InvalidQuery", f"$top must be from 1 to {MAX_TOP}")
        rows = self.evaluate(shape, since, subscriptions)
        columns = ["id", "name", "type", "properties"] + (["updated"] if shape["with_updated"] else [])
        start = _offset(options.get("$skipToken"))
        page = [json.loads(json.dumps({k: r.get(k) for k in columns})) for r in rows[start : start + top]]
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        for row in page:
            if str(row["id"]).lower() in self.heartbeats:
                row["properties"]["connectivityTime"] = now
        document: dict[str, Any] = {
            "totalRecords": len(rows),
            "count": len(page),
            "resultTruncated": "false",
            "data": page,
        }
        if start + top < len(rows):
            document["$skipToken"] = base64.b64encode(json.dumps({"offset": start + top}).encode()).decode()
        return Reply(200, document)

    def evaluate(self, shape: re.Match[str], since: datetime | None, subscriptions: list[str]) -> list[dict[str, Any]]:
        """The rows a query shape selects, in its order (shared, not copied: the caller copies its page).

        Kept between the pages of one query until the data changes or a pending change becomes visible,
        as ARG's own snapshot behind a skip token."""
        now = time.time()
        key = (shape.group(0), tuple(sorted(s.lower() for s in subscriptions)), self.version)
        with self.lock:
            if self._cache is not None and self._cache[0] == key and now < self._cache_until:
                return self._cache[1]
            wanted = set(key[1])
            types = [shape["type"]] if shape["type"] else re.findall(r"'([^']+)'", shape["types"])
            candidates = [r for t in types for r in self.by_type.get(t, {}).values()]
            pending = [r.visible_at for r in candidates if r.visible_at > now]
            documents = [
                document
                for r in candidates
                if (document := r.seen(now)) is not None
                and (not wanted or str(document.get("subscriptionId", self.subscription)).lower() in wanted)
            ]
        rows: list[dict[str, Any]] = []
        excluded = (shape["not_status"] or "").lower()
        for document in documents:
            properties = document.get("properties") or {}
            if excluded and str(properties.get("status", "")).lower() == excluded:
                continue
            row = dict(document)
            if shape["field"]:
                row["updated"] = properties.get(shape["field"])
                moment = parse_iso(str(row["updated"]))
                if since is not None and (moment is None or moment < since):
                    continue
                row["_moment"] = moment or datetime.min.replace(tzinfo=UTC)
            rows.append(row)
        if shape["order"] == "updated":
            rows.sort(key=lambda r: (r["_moment"], r["name"]))
        else:
            rows.sort(key=lambda r: str(r["name"]))
        with self.lock:
            self._cache = (key, rows)
            self._cache_until = min(pending, default=math.inf)
        return rows

    def write_alert(self, method: str, path: str, query: str, body: bytes) -> Reply:
        """ARM's alert write: ``PATCH`` with ``{"properties": {"status": …}}``, or ``POST …/learn`` (closes it);
        the change shows in queries ``consistency_seconds`` later, as any change. Writes count against
        Resource Manager's hourly write limit, reported in ``x-ms-ratelimit-remaining-subscription-writes``."""
        match = ALERT_PATH.match(path)
        assert match is not None
        if "api-version=" not in query:
            return azure_error(400, "MissingApiVersionParameter", "The api-version query parameter is required.")
        now = time.time()
        with self.lock:
            if now - self.write_window[0] >= 3600:
                self.write_window = [now, 0]
            self.write_window[1] += 1
            remaining = WRITES_PER_HOUR - self.write_window[1]
        limit = {"x-ms-ratelimit-remaining-subscription-writes": str(max(0, remaining))}
        if remaining < 0:
            self.stats["throttled"] += 1
            return azure_error(429, "TooManyRequests", "Too many writes.", {"Retry-After": "60", **limit})
        status = "Closed"
        if not match["learn"]:
            try:
                status = str(json.loads(body)["properties"]["status"])
            except (ValueError, KeyError, TypeError):
                return azure_error(400, "InvalidRequestContent", "The body must be {'properties': {'status': …}}.")
            if status not in ALERT_STATUSES:
                return azure_error(400, "InvalidRequestContent", f"status must be one of {', '.join(ALERT_STATUSES)}")
        with self.lock:
            stored = self.resources.get(match["id"].lower())
            document = json.loads(json.dumps(stored.document)) if stored else None
        if (
            document is None
            or str(document.get("type", "")).lower() != "microsoft.iotsecurity/locations/devicegroups/alerts"
        ):
            return azure_error(404, "ResourceNotFound", f"The alert '{match['id']}' was not found.", limit)
        document.setdefault("properties", {})["status"] = status
        self.stats["writes"] += 1
        self.writes.append((method, match["id"], status))
        self.put(document)
        reply = Reply(200, document)
        reply.headers.update(limit)
        return reply

    def provider(self, method: str, match: re.Match[str]) -> Reply:
        """Providers_Register / Providers_Get: the provider document with its ``registrationState``."""
        namespace = match["namespace"]
        if (method == "POST") != bool(match["register"]):
            return azure_error(404, "NotFound", f"{method} {match[0]} is not served here")
        with self.lock:
            state = self.providers.get(namespace.lower(), "NotRegistered")
            if method == "POST" and state != "Registered":
                state = "Registering"
            elif state == "Registering":
                state = "Registered"  # the next look after registering finds it done
            self.providers[namespace.lower()] = state
        self.stats[f"providers.{method.lower()}"] += 1
        provider_id = f"/subscriptions/{match['subscription']}/providers/{namespace}"
        return Reply(200, {"id": provider_id, "namespace": namespace, "registrationState": state})

    def admin(self, method: str, path: str, body: bytes) -> Reply:
        name = path[len("/_emulator/") :]
        spec = json.loads(body or b"{}")
        if name == "faults":
            return Reply(200, self.faults.admin(method, spec))
        if name == "resources" and method == "POST":
            self.put(*spec.get("resources", []))
            return Reply(200, {"resources": len(self.resources)})
        if name == "consistency" and method == "POST":
            self.consistency_seconds = float(spec.get("seconds", 0))
            return Reply(200, {"seconds": self.consistency_seconds})
        if name == "quota" and method == "POST":
            self.quota = Quota(per_window=int(spec.get("per_window", 15)))
            return Reply(200, {"per_window": self.quota.per_window})
        if name == "stats":
            return Reply(200, dict(self.stats))
        if name == "providers":
            return Reply(200, dict(self.providers))
        return azure_error(404, "NotFound", path)


def _offset(token: Any) -> int:
    if not token:
        return 0
    try:
        return int(json.loads(base64.b64decode(str(token)))["offset"])
    except (ValueError, KeyError, TypeError):
        return 0


def _timespan(seconds: float) -> str:
    whole = max(0, math.ceil(seconds))
    return f"{whole // 3600:02d}:{whole % 3600 // 60:02d}:{whole % 60:02d}"
