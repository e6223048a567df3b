"""A threaded HTTPS server with ServiceNow's wire behaviour (see shared reference notes).

Serves ``/oauth_token.do``, the Table API (default, v1, v2), the Batch API and the IRE API, with
Basic and bearer auth, error envelopes, pagination headers, session cookies (and the 202 a busy
session gets), and injectable faults. ``/_emulator/*`` is the admin API for tests and operators:
faults, clock, token revocation, table dumps, the log of executed queries and request counters.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import secrets
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit

from tools.emulators.faults import FaultPlan
from tools.emulators.httpserver import Reply, TlsEmulator
from tools.emulators.servicenow import dictionary
from tools.emulators.servicenow.ire import Ire
from tools.emulators.servicenow.ire_cost import InFlight, IreCost
from tools.emulators.servicenow.oauth import OAuthClient, OAuthDeniedError, OAuthServer
from tools.emulators.servicenow.query import ParsedQuery, QuerySyntaxError, parse
from tools.emulators.servicenow.shape import Renderer
from tools.emulators.servicenow.store import Record, Store, StoreError

logger = logging.getLogger("servicenow_emulator")
NOT_AUTHENTICATED = {"message": "User Not Authenticated", "detail": "Required to provide Auth information"}
RATE_LIMITED = {
    "message": "Rate limit exceeded",
    "detail": "Rate limit of 100 requests per hour for Table API exceeded",
}


def envelope(status: int, message: str, detail: str | None = None, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, {"error": {"message": message, "detail": detail}, "status": "failure"}, headers or {})


# What a hibernating developer instance answers to every call, the token endpoint included: 200 and an HTML
# page. ServiceNow does not publish the page; what clients detect is its title, "Instance Hibernating page"
# (Cortex XSOAR's and Itential's ServiceNow clients look for it in the body, one alert script matches
# ``<title>\s+Instance Hibernating page\s+</title>``), and that the body is no JSON with a ``result``
# (Kibana's checkInstance). The rest of the page here is a stand-in.
HIBERNATION_PAGE = b"""<!DOCTYPE html>
<html>
<head>
<title>
Instance Hibernating page
</title>
</head>
<body><h1>Your instance is hibernating</h1><p>Sign in to the developer portal to wake it up.</p></body>
</html>
"""


def html_page(status: int) -> Reply:
    phrase = HTTPStatus(status).phrase
    body = (
        f"<html><head><title>{status} {phrase}</title></head><body><h1>{status} {phrase}</h1>"
        f"<p>The server is temporarily unable to service your request.</p></body></html>"
    )
    return Reply(status, body.encode(), content_type="text/html; charset=utf-8")


# The roles an integration user is given (docs/servicenow-setup.md): incidents, security incidents, the CMDB
# through the IRE, vulnerable items.
DEFAULT_ROLES = ("itil", "sn_si.analyst", "sn_vul.vulnerability_write")
# Tables only these roles (and admin) may read. "audit_viewer: provides read access to the sys_audit,
# sys_journal_field, and sys_history_set tables" (ServiceNow docs, platform security, granular admin roles for
# Audit tables). A table-level block answers 403 (KB2971488); the envelope's words are not published.
READ_ROLES = {"sys_journal_field": ("audit_viewer", "admin")}


class ServiceNowEmulator(TlsEmulator):
    thread_name = "servicenow-emulator"

    """The emulator: start it, point a client at ``url`` trusting ``ca_pem``, stop it."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tls_dir: Path = Path(".local/tls"),
        users: dict[str, str] | None = None,
        clients: Iterable[OAuthClient] = (),
        session_queue_limit: int = 10,
        batch_max_serviced: int | None = None,
    ) -> None:
        self.clock_offset = 0.0
        self.store = Store(self.clock)
        self.oauth = OAuthServer(self.clock, users=dict(users or {}), clients={c.client_id: c for c in clients})
        self.faults = FaultPlan(self.clock)
        self.ire = Ire(self.store)
        self.ire_cost = IreCost()  # what a payload costs a real instance (none: the emulator's speed)
        self.ire_in_flight = InFlight()  # the CIs the payloads in flight write
        self.renderer = Renderer(self.store, lambda: self.url)
        self.session_queue_limit = session_queue_limit
        self.batch_max_serviced = batch_max_serviced
        self.queries: deque[dict[str, Any]] = deque(maxlen=10_000)
        self.stats: Counter[str] = Counter()
        self.ire_items: Counter[tuple[str, str]] = Counter()  # (className, correlation_id) of every IRE item sent
        self.sessions: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.roles: dict[str, set[str]] = {user: set(DEFAULT_ROLES) for user in self.oauth.users}
        # A saturated instance: at most this many transactions at once, the rest refused (None: no limit).
        self.max_transactions: int | None = None
        self.transactions = 0
        # An hourly rate-limit rule per user (None: none); the hour counts from each user's first request.
        self.rate_limit_per_hour: int | None = None
        self.rate_windows: dict[str, tuple[float, int]] = {}
        self.hibernating = False  # every call, the token endpoint's too, gets the hibernation page
        # Records a row-level ACL hides from the API's users. ServiceNow applies sysparm_limit before ACL
        # evaluation (Table API doc), so a page that holds hidden rows comes back short while more follow.
        self.acl_hidden: set[str] = set()
        super().__init__(host, port, tls_dir)
        self.seed_directory()

    # -- lifecycle -------------------------------------------------------------------------
    def clock(self) -> float:
        return time.time() + self.clock_offset

    def secret_values(self) -> set[str]:
        with self.oauth.lock:
            values = set(self.oauth.issued) | set(self.oauth.users.values())
            values |= {client.client_secret for client in self.oauth.clients.values()}
            values |= {base64.b64encode(f"{u}:{p}".encode()).decode() for u, p in self.oauth.users.items()}
        return values

    def reset(self) -> None:
        """Forget records, faults, logs and counters; keep users and OAuth clients."""
        with self.store.lock:
            self.store.data.clear()
            self.store.counters.clear()
            self.store.indexes.clear()
            self.store.inserted_at.clear()
        self.faults.clear()
        self.queries.clear()
        with self.lock:
            self.stats.clear()
            self.ire_items.clear()
        self.oauth.grants.clear()
        self.clock_offset = 0.0
        self.max_transactions = None
        self.rate_limit_per_hour = None
        self.rate_windows.clear()
        self.ire.shuffle = False
        self.ire_cost = IreCost()
        self.ire_in_flight.clear()
        self.hibernating = False
        self.acl_hidden.clear()
        self.seed_directory()

    def seed_directory(self) -> None:
        """What an instance holds before the product writes anything: its users (``sys_user``), their roles
        (``sys_user_role``, ``sys_user_has_role``; ``roles`` says which) and the product's discovery source
        among ``cmdb_ci``'s choices. A test removes a role or the choice to see the product notice."""
        store = self.store
        with store.lock:
            for table in (
                "sys_user",
                "sys_user_role",
                "sys_user_has_role",
                "sys_choice",
                "sys_db_object",
                "sys_dictionary",
            ):
                store.data.pop(table, None)
            store.indexes.clear()
        role_ids = {
            name: store.insert("sys_user_role", {"name": name}, "system")["sys_id"]
            for name in sorted({r for roles in self.roles.values() for r in roles} | set(DEFAULT_ROLES))
        }
        for user in sorted(set(self.oauth.users) | set(self.roles)):
            user_id = store.insert("sys_user", {"user_name": user, "active": "true"}, "system")["sys_id"]
            for role in sorted(self.roles_of(user)):
                store.insert("sys_user_has_role", {"user": user_id, "role": role_ids[role]}, "system")
        objects: dict[str, str] = {}
        for row in dictionary.table_rows():  # parents first; super_class is a reference, the parent's sys_id
            parent = objects.get(row["super_class"], "")
            objects[row["name"]] = store.insert("sys_db_object", {**row, "super_class": parent}, "system")["sys_id"]
        for row in dictionary.dictionary_rows():
            store.insert("sys_dictionary", row, "system")
        # Some of the base system's discovery sources, and the product's (docs/servicenow-setup.md adds it).
        for value, label in (
            ("ServiceNow", "ServiceNow"),
            ("Manual Entry", "Manual Entry"),
            ("Other Automated", "Other Automated"),
            ("ImportSet", "ImportSet"),
            ("MicrosoftDefenderForIoT", "Microsoft Defender for IoT"),
        ):
            choice = {"name": "cmdb_ci", "element": "discovery_source", "value": value, "label": label}
            store.insert("sys_choice", choice, "system")
        with store.lock:
            store.data.pop("cmdb_rel_type", None)
        self.ire.seed()

    def roles_of(self, user: str) -> set[str]:
        return self.roles.get(user, set(DEFAULT_ROLES))

    def count_by(self, key: str, amount: int) -> None:
        with self.lock:
            self.stats[key] += amount

    def count(self, *keys: str) -> None:
        with self.lock:
            self.stats.update(keys)

    # -- request handling ------------------------------------------------------------------
    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Reply | None:
        """Serve one request; None means 'drop the connection' (an injected reset)."""
        url = urlsplit(target)
        if url.path.startswith("/_emulator/"):
            return self.admin(method, url.path, body)
        self.count("requests", f"method:{method}")
        if self.hibernating:
            return Reply(200, HIBERNATION_PAGE, content_type="text/html; charset=utf-8")
        if "jsessionid" in headers.get("cookie", "").lower():
            self.count("requests_with_session_cookie")
        session = self.session_of(headers)
        if session and not self.enter_session(session):
            self.count("session_queue_dropped")
            return Reply(202, None)
        if not self.enter_transaction():
            if session:
                self.leave_session(session)
            self.count("semaphore_rejected")
            # What a saturated instance answers: 429, and no Retry-After to say when to come back.
            detail = "The maximum number of concurrent API transactions is in use; try again later"
            return Reply(429, {"error": {"message": "Too many requests", "detail": detail}, "status": "failure"})
        entered = time.perf_counter()
        try:
            fault = self.faults.take()
            if fault is not None:
                self.count("faults_injected")
                if fault.kind == "reset":
                    return None
                if fault.kind == "hang":
                    time.sleep(fault.seconds)
                elif fault.kind != "slow_response":
                    return self.fault_reply(fault.status, fault.retry_after)
            reply = self.route(method, url.path, url.query, headers, body)
            if fault is not None and fault.kind == "slow_response":
                # The request took effect; its answer comes too late for the client (a lost response).
                time.sleep(fault.seconds)
        finally:
            self.leave_transaction()
            # Transaction time served, in ms: how busy the instance's slots were (a benchmark's optimum).
            self.count_by("transaction_ms", round((time.perf_counter() - entered) * 1000))
            if session:
                self.leave_session(session)
        reply.headers.setdefault("X-Transaction-ID", secrets.token_hex(6))
        reply.headers["Set-Cookie"] = f"JSESSIONID={secrets.token_hex(16).upper()}; Path=/; Secure; HttpOnly"
        return reply

    def fault_reply(self, status: int, retry_after: str | None) -> Reply:
        if status == 429:
            headers = {
                "Retry-After": retry_after or "1",
                "X-RateLimit-Limit": "100",
                "X-RateLimit-Reset": str(int(self.clock()) + int(float(retry_after or "1"))),
                "X-RateLimit-Rule": "emulator rate limit",
            }
            return Reply(429, {"error": RATE_LIMITED, "status": "failure"}, headers)
        reply = html_page(status) if status >= 500 else envelope(status, HTTPStatus(status).phrase)
        if retry_after is not None:
            reply.headers["Retry-After"] = retry_after
        return reply

    @staticmethod
    def session_of(headers: dict[str, str]) -> str | None:
        for part in headers.get("cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name.upper() == "JSESSIONID" and value:
                return value
        return None

    def enter_session(self, session: str) -> bool:
        with self.lock:
            if self.sessions[session] >= self.session_queue_limit:
                return False
            self.sessions[session] += 1
            return True

    def leave_session(self, session: str) -> None:
        with self.lock:
            self.sessions[session] -= 1
            if self.sessions[session] <= 0:
                del self.sessions[session]

    def enter_transaction(self) -> bool:
        with self.lock:
            if self.max_transactions is not None and self.transactions >= self.max_transactions:
                return False
            self.transactions += 1
            return True

    def leave_transaction(self) -> None:
        with self.lock:
            self.transactions -= 1

    def rate_limited(self, user: str) -> tuple[Reply | None, dict[str, str]]:
        """The user's hourly rule: (a 429 when spent, else None; the rule's headers for the answer)."""
        if self.rate_limit_per_hour is None:
            return None, {}
        now = self.clock()
        with self.lock:
            start, used = self.rate_windows.get(user, (now, 0))
            if now - start >= 3600:
                start, used = now, 0
            used += 1
            self.rate_windows[user] = (start, used)
        reset = int(start + 3600)
        headers = {
            "X-RateLimit-Limit": str(self.rate_limit_per_hour),
            "X-RateLimit-Reset": str(reset),
            "X-RateLimit-Rule": "emulator hourly rule",
        }
        if used <= self.rate_limit_per_hour:
            return None, headers
        self.count("rate_limited")
        detail = f"Rate limit of {self.rate_limit_per_hour} requests per hour for Table API exceeded"
        body = {"error": {"message": "Rate limit exceeded", "detail": detail}, "status": "failure"}
        return Reply(429, body, {**headers, "Retry-After": str(max(1, reset - int(now)))}), headers

    def authenticate(self, headers: dict[str, str]) -> str | None:
        value = headers.get("authorization", "")
        scheme, _, credential = value.partition(" ")
        if scheme.lower() == "bearer":
            return self.oauth.user_for_bearer(credential.strip())
        if scheme.lower() == "basic":
            try:
                username, _, password = base64.b64decode(credential.strip(), validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return None
            return self.oauth.user_for_basic(username, password)
        return None

    def route(self, method: str, path: str, query: str, headers: dict[str, str], body: bytes) -> Reply:
        if path == "/oauth_token.do":
            self.count("oauth")
            return self.token_endpoint(method, headers, body)
        if path == "/oauth_revoke_token.do":
            token = parse_qs(query).get("token", [""])[0]
            self.oauth.revoke(token)
            return Reply(200, {})
        user = self.authenticate(headers)
        if user is None:
            challenge = {"WWW-Authenticate": 'Basic realm="Service-now"'}
            return envelope(401, NOT_AUTHENTICATED["message"], NOT_AUTHENTICATED["detail"], challenge)
        refused, rule = self.rate_limited(user)
        if refused is not None:
            return refused
        reply = self.serve(method, path, query, headers, body, user)
        reply.headers.update(rule)
        return reply

    def serve(self, method: str, path: str, query: str, headers: dict[str, str], body: bytes, user: str) -> Reply:
        if path == "/api/now/v1/batch" and method == "POST":
            self.count("batch")
            return self.batch(body, user)
        return self.api(method, path, query, headers, body, user)

    def api(self, method: str, path: str, query: str, headers: dict[str, str], body: bytes, user: str) -> Reply:
        if path == "/api/now/identifyreconcile" and method == "POST":
            self.count("ire")
            return self.identify_reconcile(query, headers, body, user)
        parts = path.strip("/").split("/")
        version = None
        if len(parts) >= 3 and parts[:2] == ["api", "now"] and parts[2] in ("v1", "v2"):
            version = parts.pop(2)
        if len(parts) in (4, 5) and parts[:3] == ["api", "now", "table"]:
            self.count("table", f"table:{method}")
            sys_id = parts[4] if len(parts) == 5 else None
            try:
                return self.table(method, parts[3], sys_id, version, query, headers, body, user)
            except StoreError as exc:
                return envelope(exc.status, exc.message, exc.detail)
            except QuerySyntaxError as exc:
                return envelope(400, "Invalid query", str(exc))
        return envelope(400, "Requested URI does not represent any resource", path)

    # -- OAuth -----------------------------------------------------------------------------
    def token_endpoint(self, method: str, headers: dict[str, str], body: bytes) -> Reply:
        denied = Reply(401, {"error_description": "access_denied", "error": "server_error"})
        if method != "POST" or "application/x-www-form-urlencoded" not in headers.get("content-type", ""):
            return denied
        form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        scheme, _, credential = headers.get("authorization", "").partition(" ")
        if "client_id" not in form and scheme.lower() == "basic":
            # RFC 6749 2.3.1 client authentication in the header (what requests-oauthlib sends).
            try:
                client_id, _, client_secret = base64.b64decode(credential, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return denied
            form.update(client_id=client_id, client_secret=client_secret)
        try:
            return Reply(200, self.oauth.grant(form))
        except OAuthDeniedError:
            return denied

    # -- Table API -------------------------------------------------------------------------
    def table(
        self,
        method: str,
        table: str,
        sys_id: str | None,
        version: str | None,
        query: str,
        headers: dict[str, str],
        body: bytes,
        user: str,
    ) -> Reply:
        params = dict(parse_qsl(query, keep_blank_values=True))
        if method in ("POST", "PUT", "PATCH"):
            if "accept" not in headers or "content-type" not in headers:
                return envelope(400, "Invalid request: the Accept and Content-Type headers are required")
            try:
                values = json.loads(body or b"{}")
            except ValueError:
                return envelope(400, "Exception while reading request", "The payload is not valid JSON.")
            if isinstance(values, list):  # ServiceNow processes only the first record of a list
                values = values[0] if values else {}
            if not isinstance(values, dict):
                return envelope(400, "Exception while reading request", "The payload is not a JSON object.")
            keep = dictionary.known(table)
            if keep is not None:  # a field the table does not have is dropped without a word, as an instance does
                values = {k: v for k, v in values.items() if k in keep}
        else:
            values = {}
        if method == "GET" and table in READ_ROLES and not self.roles_of(user) & set(READ_ROLES[table]):
            return envelope(403, "Operation Failed", f"ACL restricts the retrieval of {table} records")
        if method == "GET" and sys_id is None:
            return self.table_list(table, version, params)
        if sys_id is None:
            if method != "POST":
                return envelope(405, "Method not supported", f"{method} needs a sys_id")
            record = self.store.insert(table, values, user)
            location = f"{self.url}/api/now/table/{table}/{record['sys_id']}"
            return self.record_reply(201, table, record, params, headers, {"Location": location})
        if method == "GET":
            return self.record_reply(200, table, self.store.get(table, sys_id), params, headers)
        if method in ("PUT", "PATCH"):
            return self.record_reply(200, table, self.store.update(table, sys_id, values, user), params, headers)
        if method == "DELETE":
            self.store.delete(table, sys_id)
            return Reply(204, None)
        return envelope(405, "Method not supported", method)

    def table_list(self, table: str, version: str | None, params: dict[str, str]) -> Reply:
        raw_query = params.get("sysparm_query", "")
        parsed = parse(raw_query)
        plain = [(k, v) for k, v in params.items() if not k.startswith("sysparm_")]
        if plain:
            extra = parse("^".join(f"{k}={v.replace('^', '^^')}" for k, v in plain))
            parsed = ParsedQuery(
                groups=[g + extra.groups[0] for g in parsed.groups] if parsed.groups else extra.groups,
                order=parsed.order,
            )
        try:
            limit = int(params.get("sysparm_limit", "10000"))
            offset = int(params.get("sysparm_offset", "0"))
        except ValueError:
            return envelope(400, "Invalid sysparm_limit or sysparm_offset")
        self.queries.append({"table": table, "sysparm_query": raw_query, "parsed": parsed.as_json(), "offset": offset})
        if offset < 0 or limit < 1:
            return envelope(400, "sysparm_offset must be non-negative and sysparm_limit positive")
        found = self.store.query(table, parsed)
        page = [r for r in found[offset : offset + limit] if r["sys_id"] not in self.acl_hidden]
        if not page and version == "v1":
            return envelope(
                404, "No Record found", "Records matching query not found. Check query parameter or offset parameter"
            )
        headers: dict[str, str] = {}
        if params.get("sysparm_no_count", "false") != "true":
            headers["X-Total-Count"] = str(len(found))
        if params.get("sysparm_suppress_pagination_header", "false") != "true":
            headers["Link"] = self.link_header(table, params, offset, limit, len(found))
        return Reply(200, {"result": [self.renderer.shape(table, r, params) for r in page]}, headers)

    def link_header(self, table: str, params: dict[str, str], offset: int, limit: int, total: int) -> str:
        def link(rel: str, at: int) -> str:
            query = urlencode({**params, "sysparm_limit": str(limit), "sysparm_offset": str(max(0, at))})
            return f'<{self.url}/api/now/table/{table}?{query}>;rel="{rel}"'

        last = max(0, ((total - 1) // limit) * limit) if total else 0
        links = [link("first", 0)]
        if offset > 0:
            links.append(link("prev", offset - limit))
        if offset + limit < total:
            links.append(link("next", offset + limit))
        links.append(link("last", last))
        return ",".join(links)

    def record_reply(
        self,
        status: int,
        table: str,
        record: Record,
        params: dict[str, str],
        headers: dict[str, str],
        extra: dict[str, str] | None = None,
    ) -> Reply:
        if headers.get("x-no-response-body", "").lower() == "true":
            return Reply(status, None, extra or {})
        return Reply(status, {"result": self.renderer.shape(table, record, params)}, extra or {})

    # -- Batch API -------------------------------------------------------------------------
    def batch(self, body: bytes, user: str) -> Reply:
        try:
            document = json.loads(body)
            requests = list(document["rest_requests"])
        except (ValueError, KeyError, TypeError):
            return envelope(400, "Invalid batch request", "expected {'batch_request_id', 'rest_requests': [...]}")
        serviced, unserviced = [], []
        for index, item in enumerate(requests):
            if self.batch_max_serviced is not None and index >= self.batch_max_serviced:
                unserviced.append(str(item.get("id")))
                continue
            started = time.perf_counter()
            headers = {str(h.get("name", "")).lower(): str(h.get("value", "")) for h in item.get("headers") or []}
            # A sub-request answers in JSON whatever it says; ServiceNow requires no Accept header of it (PySNC
            # sends only Content-Type), unlike a direct Table API write.
            headers.setdefault("accept", "application/json")
            item_body = base64.b64decode(item.get("body") or "") if item.get("body") else b""
            url = urlsplit(str(item.get("url", "")))
            reply = self.api(str(item.get("method", "GET")).upper(), url.path, url.query, headers, item_body, user)
            entry: dict[str, Any] = {
                "id": str(item.get("id")),
                "body": base64.b64encode(reply.payload()).decode("ascii"),
                "status_code": reply.status,
                "status_text": HTTPStatus(reply.status).phrase,
                "execution_time": int((time.perf_counter() - started) * 1000),
                "headers": []
                if item.get("exclude_response_headers")
                else [
                    {"name": k, "value": v} for k, v in {**reply.headers, "Content-Type": reply.content_type}.items()
                ],
            }
            serviced.append(entry)
        with self.lock:
            self.stats["batch_items_serviced"] += len(serviced)
            self.stats["batch_items_unserviced"] += len(unserviced)
        return Reply(
            200,
            {
                "batch_request_id": str(document.get("batch_request_id", "")),
                "serviced_requests": serviced,
                "unserviced_requests": unserviced,
            },
        )

    # -- IRE -------------------------------------------------------------------------------
    def identify_reconcile(self, query: str, headers: dict[str, str], body: bytes, user: str) -> Reply:
        source = parse_qs(query).get("sysparm_data_source", [""])[0]  # none: an incomplete payload
        try:
            payload = json.loads(body)
        except ValueError:
            return envelope(400, "Exception while reading request", "The payload is not valid JSON.")
        if not isinstance(payload, dict):
            return envelope(400, "Exception while reading request", "The payload is not a JSON object.")
        with self.lock:
            self.ire_items.update(
                (str(item.get("className")), str((item.get("values") or {}).get("correlation_id")))
                for item in payload.get("items") or []
                if isinstance(item, dict)
            )
        ticket = self.ire_in_flight.enter(payload.get("items") or [])
        try:
            result = self.ire.reconcile(payload, user, source)
            # The instance's time for the payload, in this request's transaction slot (not under the store's lock).
            self.ire_cost.spend(result["items"])
            return Reply(200, {"result": result})
        except StoreError as exc:
            return envelope(exc.status, exc.message, exc.detail)
        finally:
            self.ire_in_flight.leave(ticket)

    # -- admin API -------------------------------------------------------------------------
    def admin(self, method: str, path: str, body: bytes) -> Reply:
        try:
            spec = json.loads(body) if body else {}
        except ValueError:
            return envelope(400, "admin body is not JSON")
        name = path[len("/_emulator/") :]
        if name == "health":
            return Reply(200, {"status": "ok"})
        if name.startswith("login-page/"):
            # What a single sign-on proxy in front of an instance answers: 200 and its own sign-in page.
            page = b"<html><head><title>Sign in</title></head><body><form>Sign in to continue</form></body></html>"
            return Reply(200, page, content_type="text/html; charset=utf-8")
        if name == "hibernate" and method == "POST":
            self.hibernating = bool(spec.get("hibernating", True))
            return Reply(200, {"hibernating": self.hibernating})
        if name == "faults":
            return Reply(200, self.faults.admin(method, spec))
        if name == "ire":
            # {"shuffle": bool, "cost": {"payload_ms": …, "native_item_ms": …, "rule_item_ms": …}}
            self.ire_cost.configure(spec.get("cost") or {})
            with self.ire_in_flight.lock:
                in_flight = {"most": self.ire_in_flight.most, "overlaps": list(self.ire_in_flight.overlaps)}
            return Reply(200, {**self.ire.admin(spec), "cost": self.ire_cost.as_dict(), "in_flight": in_flight})
        if name == "reset" and method == "POST":
            self.reset()
            return Reply(200, {"status": "reset"})
        if name == "clock" and method == "POST":
            self.clock_offset += float(spec.get("advance_seconds", 0))
            return Reply(200, {"now": self.clock()})
        if name == "revoke" and method == "POST":
            return Reply(200, {"revoked": self.oauth.revoke(spec.get("token"))})
        if name == "users" and method == "POST":
            self.oauth.users[str(spec["username"])] = str(spec["password"])
            return Reply(200, {"username": spec["username"]})
        if name == "limits" and method == "POST":
            # {"max_transactions": N | null, "rate_limit_per_hour": N | null}
            self.max_transactions = spec.get("max_transactions")
            self.rate_limit_per_hour = spec.get("rate_limit_per_hour")
            self.rate_windows.clear()
            return Reply(
                200, {"max_transactions": self.max_transactions, "rate_limit_per_hour": self.rate_limit_per_hour}
            )
        if name == "oauth_clients" and method == "POST":
            client = OAuthClient(**spec)
            self.oauth.clients[client.client_id] = client
            return Reply(200, {"client_id": client.client_id})
        if name.startswith("tables/") and method == "GET":
            return Reply(200, {"result": self.store.all(name[len("tables/") :])})
        if name == "queries":
            return Reply(200, {"result": list(self.queries)})
        if name == "stats":
            with self.lock:
                return Reply(200, {**self.stats, "oauth_grants": dict(self.oauth.grants)})
        return envelope(404, "unknown admin endpoint", path)
