"""The composition root: the one place that builds the product's parts from the settings and wires them.

Domain packages (``alerting``, ``devices``, ``connections``) take what they need as arguments; only
this package chooses concrete clients (which secret store, which ServiceNow credential, which storage
account) and holds the per-process singletons. Here: what every function needs (secrets and
ServiceNow clients). One module per function, so that each loads only the SDKs it uses on its first
invocation: :mod:`shared.app.forwarding` (alert_forwarder), :mod:`shared.app.devices`
(device_sync_timer) and :mod:`shared.app.tokens` (token_refresh and ``connect``). The operator CLI
builds through them too.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from azure.data.tables import TableClient

from shared.defender.settings import SourceSettings
from shared.http.policies import Credential
from shared.http.settings import HttpSettings
from shared.platform.budget_board import TableBudgetBoard
from shared.platform.identity import credential_named
from shared.platform.secrets import EnvironmentSecretStore, KeyVaultSecretStore, SecretStore
from shared.platform.settings import KeyVaultSettings
from shared.platform.storage import table_service
from shared.servicenow.auth import BasicAuth, StaticBearerToken
from shared.servicenow.budget import Budget
from shared.servicenow.client import ServiceNowClient
from shared.servicenow.oauth import OAuthTokenProvider, TokenEndpoint, TokenError
from shared.servicenow.settings import OAUTH_MODES, ServiceNowConnection
from shared.settings import Settings

logger = logging.getLogger("shared.app")
T = TypeVar("T")


class ProcessSingleton(Generic[T]):
    """One per worker process, built on its first use (by whichever invocation's thread comes first)."""

    def __init__(self, build: Callable[[], T]) -> None:
        self._build = build
        self._value: T | None = None
        self._lock = threading.Lock()

    def get(self) -> T:
        with self._lock:
            if self._value is None:
                self._value = self._build()
            return self._value


def secret_store(settings: Settings) -> SecretStore:
    """Key Vault when ``KEY_VAULT_URL`` is set, else app settings (local development, Key Vault references)."""
    return vault_store(settings.key_vault)


def vault_store(vault: KeyVaultSettings | None) -> SecretStore:
    if vault is None:
        return EnvironmentSecretStore()
    return KeyVaultSecretStore.connect(vault.url, credential_named(vault.credential, vault.client_id), vault.ca_bundle)


def key_vault(settings: Settings) -> KeyVaultSecretStore:
    """The Key Vault store, for what only Key Vault can hold (OAuth tokens, which are written back)."""
    store = secret_store(settings)
    if not isinstance(store, KeyVaultSecretStore):
        raise TokenError("OAuth tokens are kept in Key Vault: set KEY_VAULT_URL")
    return store


def credential_for(connection: ServiceNowConnection, secrets: SecretStore, http: HttpSettings) -> Credential:
    """How a connection signs in, by its auth mode, reading its secret lazily from the store."""
    if connection.auth in OAUTH_MODES:
        if not isinstance(secrets, KeyVaultSecretStore):
            raise ValueError(f"connection '{connection.name}' keeps its OAuth tokens in Key Vault; set KEY_VAULT_URL")
        return OAuthTokenProvider(connection, secrets, TokenEndpoint(connection, http))
    if connection.auth == "basic":
        assert connection.username is not None  # guaranteed by settings validation
        return BasicAuth(connection.username, lambda: secrets.get(connection.secret_name("password")))
    return StaticBearerToken(lambda: secrets.get(connection.secret_name("token")))


def servicenow_client(
    connection: ServiceNowConnection, secrets: SecretStore, http: HttpSettings, budget: Budget | None = None
) -> ServiceNowClient:
    return ServiceNowClient.for_connection(connection, credential_for(connection, secrets, http), http, budget)


def sync_scope(source: SourceSettings) -> str:
    """The scope a source's device sync keeps its state and its devices' index rows under: its name; the console
    of the legacy ``CONSOLE_*`` settings keeps the unscoped rows it always had."""
    return "" if getattr(source, "legacy", False) else source.name


def forwarding_table(settings: Settings) -> TableClient:
    """The one table of the ledger, its correlation index, the alert groups and the ServiceNow budget board
    (their rows kept apart by partition: :mod:`shared.alerting.table_layout`)."""
    return table_service(settings.alerts_storage).get_table_client(settings.forwarding.ledger_table)


_budgets: dict[tuple[object, ...], Budget] = {}
_boards: dict[tuple[object, ...], TableBudgetBoard] = {}
_budgets_lock = threading.Lock()


def board_for(settings: Settings) -> TableBudgetBoard:
    """The process's one row on the budget board (in the ledger's table): every connection's budget reports on
    it, and the outcome tally with them — one row per instance, so the board counts instances, not budgets."""
    key = (settings.alerts_storage, settings.forwarding.ledger_table)
    with _budgets_lock:
        board = _boards.get(key)
        if board is None:
            board = _boards[key] = TableBudgetBoard(forwarding_table(settings))
        return board


def report_soon() -> None:
    """The outcomes just counted reach ``status`` through the process's board, if it has one yet."""
    with _budgets_lock:
        boards = list(_boards.values())
    for board in boards:
        board.report_soon()


def budget_for(settings: Settings, connection: ServiceNowConnection) -> Budget:
    """The process's one budget for a connection, shared by every client of it and, through the board in the
    alerts storage account, with every other instance of the app."""
    key = (settings.alerts_storage, settings.forwarding.ledger_table, connection.name, connection.instance_url)
    board = board_for(settings)
    with _budgets_lock:
        budget = _budgets.get(key)
        if budget is None:
            budget = _budgets[key] = Budget(
                connection.name, connection.concurrency, hourly_requests=connection.hourly_requests, board=board
            )
        return budget
