"""``verify``: does this deployment work? Each check is one line that says what it found and, when it failed,
how to fix it; then one synthetic test alert end to end (enqueued, forwarded, its record found, resolved).
The checks read, they do not repair: nothing is created but the test alert's record, marked a test and resolved.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from azure.core.exceptions import AzureError, HttpResponseError, ResourceNotFoundError

from shared.alerting.enqueue import checked, send
from shared.alerting.poison import poison_queue_name
from shared.alerting.records import correlation_id, record_values
from shared.alerting.rules import Action, RuleSet, evaluate
from shared.alerting.rules_store import RulesUnavailableError
from shared.app import secret_store, servicenow_client
from shared.app.rules import rules_source
from shared.app.sources import alert_source
from shared.contract.model import envelope
from shared.defender.model import ReadReport
from shared.defender.rest import DefenderApiError
from shared.http.errors import AuthError, HttpError
from shared.platform.secrets import KeyVaultSecretStore, SecretNotFoundError, SecretStore
from shared.platform.storage import queue_service, table_service
from shared.servicenow import EncodedQuery, ServiceNowClient
from shared.servicenow.oauth import TokenError
from shared.servicenow.records import Records
from shared.servicenow.settings import ServiceNowConnection
from shared.settings import Settings

# The roles an integration user needs to write each kind of table (ServiceNow's base roles for them).
TABLE_ROLES = {
    "incident": ("itil",),
    "sn_si_incident": ("sn_si.basic", "sn_si.analyst"),
    "sn_vul_vulnerable_item": ("sn_vul.vulnerability_write", "sn_vul.admin"),
    "task_ci": ("itil", "sn_si.basic", "sn_si.analyst"),  # an incident's or a security incident's Affected CIs
}
IRE_ROLES = ("itil", "asset")  # the Identification and Reconciliation API's documented roles
SECRET_ROLES = {"oauth": ("client-secret", "refresh-token"), "client_credentials": ("client-secret",)}
# What the app writes on every table besides an action's values: the notes (repeats, group notes) and the
# resolution (the forwarder's, and the test alert's).
WRITTEN_ALWAYS = ("work_notes", "state", "close_code", "close_notes")


def sample_alert(run: str, now: datetime) -> dict[str, Any]:
    """The synthetic test alert (``verify``'s end to end, and the sample whose field values are checked)."""
    return envelope(
        "alert",
        {"name": "verify", "site": "verify"},
        alert={
            "id": f"verify-{run}",
            "time": int(now.timestamp() * 1000),
            "title": f"[TEST] Defender for IoT to ServiceNow verification {run}",
            "severity": "Critical",
            "engine": "Policy Violation",
            "message": "A synthetic test alert sent by `python -m shared verify`; it is resolved at once.",
        },
    )


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"{'ok  ' if self.ok else 'FAIL'} {self.name}: {self.detail}"
        return text if self.ok or not self.fix else f"{text} — fix: {self.fix}"


def _storage_problem(exc: AzureError, what: str, role: str) -> tuple[str, str]:
    if isinstance(exc, ResourceNotFoundError):
        return f"{what} does not exist", "deploy infra/bicep/main.bicep (locally: make run creates it)"
    if isinstance(exc, HttpResponseError) and exc.status_code == 403:
        return f"{what}: access refused (403)", f"grant the identity in use '{role}' on the storage account"
    return f"{what} unreachable ({type(exc).__name__})", "check ALERTS_STORAGE and the network path to the account"


class Verifier:
    def __init__(self, settings: Settings, *, timeout: float = 120.0, poll: float = 2.0) -> None:
        self.settings = settings
        self.timeout = timeout
        self.poll = poll
        self.rules: RuleSet | None = None
        self.secrets: SecretStore | None = None
        self.clients: dict[str, ServiceNowClient] = {}

    # -- storage ---------------------------------------------------------------------------
    def storage(self) -> Iterator[Check]:
        queues = queue_service(self.settings.alerts_storage, retry_total=1)
        for name in (self.settings.alerts_queue, poison_queue_name(self.settings.alerts_queue)):
            try:
                queues.get_queue_client(name).get_queue_properties()
                yield Check(f"queue {name}", True, "reachable")
            except AzureError as exc:
                detail, fix = _storage_problem(exc, f"queue {name}", "Storage Queue Data Contributor")
                yield Check(f"queue {name}", False, detail, fix)
        tables = table_service(self.settings.alerts_storage)
        wanted = [self.settings.forwarding.ledger_table]
        if self.settings.intake.sources:
            wanted.append(self.settings.intake.state_table)
        if self.settings.device_sync.enabled:
            wanted.append(self.settings.device_sync.state_table)
        for name in wanted:
            try:
                next(
                    iter(tables.get_table_client(name).query_entities("PartitionKey eq 'verify'", results_per_page=1)),
                    None,
                )
                yield Check(f"table {name}", True, "reachable")
            except AzureError as exc:
                if isinstance(exc, ResourceNotFoundError):  # each is created by its function's first run
                    yield Check(f"table {name}", True, "not created yet (the function that uses it creates it)")
                    continue
                detail, fix = _storage_problem(exc, f"table {name}", "Storage Table Data Contributor")
                yield Check(f"table {name}", False, detail, fix)
        location = self.settings.forwarding.rules_location
        try:
            self.rules = rules_source(self.settings).current()
            yield Check("forwarding rules", True, f"{len(self.rules.rules)} rule(s) at {location}")
        except RulesUnavailableError as exc:
            fix = "python -m shared rules apply examples/forwarding-rules.yaml"
            yield Check("forwarding rules", False, str(exc), fix)

    # -- secrets -----------------------------------------------------------------------------
    def secret_names(self) -> list[tuple[str, str]]:
        """(secret name, what needs it) for every secret the settings name."""
        names = []
        for connection in self.settings.connections:
            roles = SECRET_ROLES.get(connection.auth, ("password",) if connection.auth == "basic" else ("token",))
            names += [(connection.secret_name(role), f"connection '{connection.name}'") for role in roles]
        for source in self.settings.intake.sources + self.settings.device_sync.sources:
            if source.kind != "cloud":
                names.append((source.token_secret, f"source '{source.name}'"))
        return list(dict.fromkeys(names))

    def key_vault(self) -> Iterator[Check]:
        try:
            self.secrets = secret_store(self.settings)
        except Exception as exc:  # a credential that cannot be built: one line, not a traceback
            yield Check("secret store", False, f"{type(exc).__name__}: {exc}", "check KEY_VAULT_URL and the sign-in")
            return
        where = "Key Vault" if isinstance(self.secrets, KeyVaultSecretStore) else "app settings"
        for name, needed_by in self.secret_names():
            try:
                self.secrets.get(name)
                yield Check(f"secret {name}", True, f"present in {where} ({needed_by})")
            except SecretNotFoundError:
                fix = (
                    f"python -m shared connect {needed_by.split(chr(39))[1]}"
                    if name.endswith("refresh-token")
                    else f"az keyvault secret set --vault-name <vault> --name {name} --value '<value>'"
                )
                yield Check(f"secret {name}", False, f"missing from {where} ({needed_by})", fix)
            except Exception as exc:  # refused or unreachable: the store's own one-line reason
                fix = "grant the identity in use 'Key Vault Secrets User' on the vault"
                yield Check(f"secret {name}", False, f"{type(exc).__name__}: {exc}", fix)

    # -- ServiceNow ----------------------------------------------------------------------------
    def servicenow(self) -> Iterator[Check]:
        actions = list(self.rules.actions.values()) if self.rules else []
        for connection in self.settings.connections:
            yield from self._connection(connection, [a for a in actions if a.connection == connection.name])

    def _connection(self, connection: ServiceNowConnection, actions: list[Action]) -> Iterator[Check]:
        name = f"ServiceNow '{connection.name}'"
        if self.secrets is None:
            return
        try:
            client = servicenow_client(connection, self.secrets, self.settings.http)
            user = next(iter(client.query("sys_user", EncodedQuery().eq("user_name", connection.username or ""),
                                          fields=["sys_id", "user_name"], limit=1)), None)  # fmt: skip
        except (AuthError, TokenError) as exc:
            fix = f"python -m shared connect {connection.name} (check the user's password and the OAuth client)"
            yield Check(name, False, f"sign-in refused: {exc}", fix)
            return
        except (HttpError, ValueError) as exc:
            yield Check(name, False, f"unreachable: {exc}", "check the instance URL, proxy and CA bundle settings")
            return
        self.clients[connection.name] = client
        yield Check(name, True, f"signed in at {connection.instance_url} as {connection.username or 'the client'}")
        if connection.auth == "oauth" and isinstance(self.secrets, KeyVaultSecretStore):
            yield self._refresh_token(connection, self.secrets)
        roles = self._roles(client, user)
        tables = {a.table for a in actions}
        if self.settings.device_sync.enabled and any(a.affected_cis and a.group is None for a in actions):
            tables.add("task_ci")  # new records list their other devices' CIs as Affected CIs
        for table in sorted(tables):
            check = self._table(client, connection, table, roles)
            yield check
            if check.ok and table != "task_ci":
                yield self._fields(client, connection, table, [a for a in actions if a.table == table])
        if self.settings.device_sync.enabled and self.settings.device_sync.connection == connection.name:
            if roles is not None and not roles & set(IRE_ROLES):
                fix = f"give {connection.username} itil or asset (the IRE API's roles)"
                yield Check(
                    f"ServiceNow '{connection.name}' IRE", False, f"{connection.username} lacks itil or asset", fix
                )
            yield self._data_source(client)

    def _refresh_token(self, connection: ServiceNowConnection, store: KeyVaultSecretStore) -> Check:
        name = f"ServiceNow '{connection.name}' refresh token"
        try:
            secret = store.read(connection.secret_name("refresh-token"), fresh=True)
        except SecretNotFoundError:
            return Check(name, False, "missing", f"python -m shared connect {connection.name}")
        if secret.expires_on is None:
            return Check(name, True, "present (no expiry recorded)")
        days = (secret.expires_on - datetime.now(UTC)).total_seconds() / 86400
        if days <= self.settings.tokens.warn_days:
            return Check(name, False, f"expires in {days:.1f} day(s)", f"python -m shared connect {connection.name}")
        return Check(name, True, f"valid for {days:.0f} more day(s)")

    def _roles(self, client: ServiceNowClient, user: dict[str, Any] | None) -> set[str] | None:
        """The user's role names, or None when the instance does not let the user see them."""
        if user is None:
            return None
        try:
            held = [str(r.get("role", "")) for r in client.query(
                "sys_user_has_role", EncodedQuery().eq("user", user["sys_id"]), fields=["role"]
            )]  # fmt: skip
            if not held:
                return set()
            roles = client.query("sys_user_role", EncodedQuery().in_("sys_id", held), fields=["name"])
            return {str(r.get("name", "")) for r in roles}
        except HttpError:
            return None

    def _table(
        self, client: ServiceNowClient, connection: ServiceNowConnection, table: str, roles: set[str] | None
    ) -> Check:
        name = f"ServiceNow '{connection.name}' table {table}"
        try:
            next(iter(client.query(table, fields=["sys_id"], limit=1)), None)
        except HttpError as exc:
            if exc.status == 400:
                plugin = (
                    "Security Incident Response" if table.startswith("sn_si") else "the application that provides it"
                )
                return Check(
                    name, False, "does not exist on the instance", f"install {plugin} (docs/servicenow-setup.md)"
                )
            if exc.status == 403:
                needed = " or ".join(TABLE_ROLES.get(table, ("a role that may write it",)))
                return Check(
                    name, False, "the integration user may not read it", f"give {connection.username} {needed}"
                )
            return Check(name, False, str(exc), "see docs/servicenow-setup.md")
        needed_roles = TABLE_ROLES.get(table)
        if roles is None or needed_roles is None:
            return Check(name, True, "present (the user's roles are not visible to it; the test alert proves writing)")
        if not roles & set(needed_roles):
            needed = " or ".join(needed_roles)
            return Check(
                name,
                False,
                f"present, but {connection.username} lacks the role {needed}",
                f"give {connection.username} {needed}",
            )
        return Check(name, True, f"present; role {sorted(roles & set(needed_roles))[0]}")

    def _fields(
        self, client: ServiceNowClient, connection: ServiceNowConnection, table: str, actions: list[Action]
    ) -> Check:
        """Every field the actions write is in the table's dictionary: an instance drops an unknown field from a
        write without a word, so a typo in a field map would otherwise only show as an empty field."""
        name = f"ServiceNow '{connection.name}' fields of {table}"
        _, message = checked(sample_alert("fields", datetime.now(UTC)))
        written = set(WRITTEN_ALWAYS)
        for action in actions:
            written |= set(record_values(message, action))
            written |= {"cmdb_ci"} if self.settings.device_sync.enabled and action.group is None else set()  # its CI
        try:
            defined = self._dictionary(client, table)
        except HttpError as exc:
            detail = f"not checked: the integration user may not read sys_db_object or sys_dictionary ({exc.status})"
            return Check(name, True, detail + "; check the field maps by hand")
        unknown = sorted(written - defined)
        if unknown:
            fix = "correct the field map (rules apply), or add the field to the table"
            return Check(name, False, f"{table} has no field {', '.join(unknown)} (ServiceNow would drop it)", fix)
        return Check(name, True, f"the {len(written)} field(s) the rules write are all in its dictionary")

    @staticmethod
    def _dictionary(client: ServiceNowClient, table: str) -> set[str]:
        """The fields of ``table`` and of the tables it extends (``sys_db_object.super_class``), from
        ``sys_dictionary``, where each field is listed under the table that defines it."""
        found = next(iter(client.query("sys_db_object", EncodedQuery().eq("name", table),
                                       fields=["name", "super_class"], limit=1)), None)  # fmt: skip
        lineage: list[str] = []
        while found is not None and len(lineage) < 20:  # a class hierarchy is a few levels deep
            lineage.append(str(found["name"]))
            parent = str(found.get("super_class") or "")
            found = client.get_record("sys_db_object", parent, fields=["name", "super_class"]) if parent else None
        if not lineage:
            return set()
        rows = client.query("sys_dictionary", EncodedQuery().in_("name", lineage), fields=["element"])
        return {str(row.get("element", "")) for row in rows}

    def _data_source(self, client: ServiceNowClient) -> Check:
        source = self.settings.device_sync.data_source
        name = f"IRE data source {source}"
        query = EncodedQuery().eq("name", "cmdb_ci").eq("element", "discovery_source").eq("value", source)
        try:
            found = next(iter(client.query("sys_choice", query, fields=["value"], limit=1)), None)
        except HttpError:
            return Check(name, True, "not visible to the integration user (the device sync's first run proves it)")
        if found is None:
            fix = "add it to the Discovery source choices of cmdb_ci (docs/servicenow-setup.md)"
            return Check(name, False, "not registered among the discovery sources", fix)
        return Check(name, True, "registered")

    # -- Defender ---------------------------------------------------------------------------
    def defender(self) -> Iterator[Check]:
        for source in self.settings.intake.sources:
            name = f"Defender source '{source.name}' ({source.kind})"
            try:
                reader = alert_source(source, self.settings, self.secrets)
                try:
                    list(reader.open_alerts(ReadReport()))
                finally:
                    reader.close()
                yield Check(name, True, "read its open alerts")
            except (DefenderApiError, ValueError) as exc:
                fix = (
                    "deploy infra/bicep/defender-reader.bicep for the app's identity"
                    if source.kind == "cloud"
                    else "check its URL, CA bundle and API token"
                )
                yield Check(name, False, str(exc), fix)

    # -- end to end -----------------------------------------------------------------------------
    def end_to_end(self, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> Iterator[Check]:
        if self.rules is None:
            return
        body, message = checked(sample_alert(uuid.uuid4().hex[:8], now()))
        decision = evaluate(self.rules, message)
        if not decision.actions:
            why = "; ".join(f"{k}: {v}" for k, v in decision.skipped.items()) or "no rules"
            fix = "add a rule for Critical alerts (examples/forwarding-rules.yaml)"
            yield Check("test alert", False, f"no rule forwards a Critical alert ({why})", fix)
            return
        queue = queue_service(self.settings.alerts_storage).get_queue_client(self.settings.alerts_queue)
        send(queue, [body])
        for action in decision.actions:
            yield self._await_record(message, action)

    def _await_record(self, message: Any, action: Action) -> Check:
        name = f"test alert → {action.table} (action {action.name})"
        client = self.clients.get(action.connection)
        if client is None:
            return Check(name, False, f"connection '{action.connection}' did not sign in", "fix the checks above")
        wanted = correlation_id(message, action)
        deadline = time.monotonic() + self.timeout
        records = Records(client)
        while time.monotonic() < deadline:
            found = records.find(action.table, wanted)
            if found is not None:
                notes = "Test alert from `python -m shared verify`: resolved at once."
                records.resolve(action.table, found["sys_id"], action.close_code, notes)
                connection = self.settings.connection(action.connection)
                link = f"{connection.instance_url}/nav_to.do?uri={action.table}.do?sys_id={found['sys_id']}"
                return Check(name, True, f"{found.get('number', found['sys_id'])} created and resolved: {link}")
            time.sleep(self.poll)
        fix = "is the function app running? Its log says why the alert was not forwarded; see `poison list`"
        return Check(name, False, f"no record within {self.timeout:.0f} s", fix)

    def close(self) -> None:
        for client in self.clients.values():
            client.close()


def run_checks(settings: Settings, *, timeout: float = 120.0, end_to_end: bool = True) -> Iterator[Check]:
    """Every check in order; the test alert only when everything before it passed."""
    verifier = Verifier(settings, timeout=timeout)
    failed = False
    try:
        for group in (verifier.storage, verifier.key_vault, verifier.servicenow, verifier.defender):
            for check in group():
                failed = failed or not check.ok
                yield check
        if not end_to_end:
            return
        if failed:
            yield Check("test alert", False, "not sent: fix the checks above first")
            return
        yield from verifier.end_to_end()
    finally:
        verifier.close()
