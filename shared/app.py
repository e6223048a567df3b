"""The composition root: the one place that builds the product's parts from the settings and wires them.

Domain packages (``alerting``, ``devices``, ``connections``) take what they need as arguments; only
this module chooses concrete clients (which secret store, which ServiceNow credential, which storage
account) and holds the per-process singletons. The functions call its entry points:
:func:`handle_queue_message` (alert_forwarder), :func:`run_scheduled_sync` (device_sync_timer) and
:func:`refresh_tokens` (token_refresh); the operator CLI builds through it too.

Heavy SDKs (Key Vault, identity, storage) are imported by the functions on first invocation, not when
the host indexes the app, so this module is imported lazily by them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from shared.alerting.forwarder import Forwarder, Result
from shared.alerting.ledger import Ledger
from shared.alerting.poison import poison_queue_name
from shared.alerting.rules_store import RulesSource
from shared.connections import ConnectReport, RefreshOutcome, connect, refresh_connection, report
from shared.defender.console import ConsoleClient
from shared.devices.state import SyncState, SyncStatus
from shared.devices.sync import DeviceSync, SyncProgress, run_if_due
from shared.http.policies import Credential
from shared.platform.identity import LocalEmulatorCredential, azure_credential
from shared.platform.secrets import EnvironmentSecretStore, KeyVaultSecretStore, Secret, SecretStore
from shared.platform.settings import OAUTH_MODES, HttpSettings, ServiceNowConnection, Settings, get_settings
from shared.platform.storage import blob_service, queue_service, table_service
from shared.servicenow.auth import BasicAuth, StaticBearerToken
from shared.servicenow.client import ServiceNowClient
from shared.servicenow.oauth import OAuthTokenProvider, TokenEndpoint, TokenError

logger = logging.getLogger("shared.app")


# -- secrets and ServiceNow clients ------------------------------------------------------------
def secret_store(settings: Settings) -> SecretStore:
    """Key Vault when ``KEY_VAULT_URL`` is set, else app settings (local development, Key Vault references)."""
    vault = settings.key_vault
    if vault is None:
        return EnvironmentSecretStore()
    credential = (
        LocalEmulatorCredential()
        if vault.credential == "emulator"
        else azure_credential(vault.client_id, managed_identity=vault.credential == "managed_identity")
    )
    return KeyVaultSecretStore.connect(vault.url, credential, vault.ca_bundle)


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


def servicenow_client(connection: ServiceNowConnection, secrets: SecretStore, http: HttpSettings) -> ServiceNowClient:
    return ServiceNowClient.for_connection(connection, credential_for(connection, secrets, http), http)


# -- alert forwarding ----------------------------------------------------------------------------
def build_forwarder(settings: Settings) -> Forwarder:
    storage = settings.alerts_storage
    queues = queue_service(storage)
    forwarding = settings.forwarding
    ledger = Ledger(table_service(storage).get_table_client(forwarding.ledger_table), forwarding.claim_seconds)
    ledger.ensure_table()
    location = forwarding.rules_location
    blobs = None if location.path is not None else blob_service(storage)
    secrets = secret_store(settings)
    return Forwarder(
        forwarding,
        rules=RulesSource(location, blobs, [c.name for c in settings.connections]),
        ledger=ledger,
        queue=queues.get_queue_client(settings.alerts_queue),
        poison=queues.get_queue_client(poison_queue_name(settings.alerts_queue)),
        clients={c.name: servicenow_client(c, secrets, settings.http) for c in settings.connections},
    )


_forwarder: Forwarder | None = None
_lock = threading.Lock()


def handle_queue_message(body: bytes, *, message_id: str, dequeue_count: int) -> Result:
    """Process one message from the alerts queue (the alert_forwarder function's entry point).

    Returns normally when the message is done with — forwarded, filtered, deferred (a copy is back on
    the queue) or poisoned (a wrapped copy is on the poison queue). Raises only when even deferring
    failed, so that the host's own retry keeps the message.
    """
    global _forwarder  # noqa: PLW0603 - one forwarder per worker process, built on first use
    with _lock:
        if _forwarder is None:
            _forwarder = build_forwarder(get_settings())
    return _forwarder.handle(body, message_id)


# -- device sync -----------------------------------------------------------------------------------
def sync_state(settings: Settings) -> SyncState:
    return SyncState(table_service(settings.alerts_storage).get_table_client(settings.device_sync.state_table))


def build_sync(
    settings: Settings, state: SyncState | None = None, progress: Callable[[SyncProgress], None] | None = None
) -> DeviceSync:
    sync = settings.device_sync
    secrets = secret_store(settings)
    console = ConsoleClient.connect(
        sync.console_url,
        lambda: secrets.get(sync.console_token_secret),
        settings.http,
        proxy_url=sync.console_proxy.url if sync.console_proxy else None,
        ca_bundle=sync.console_ca_bundle,
        page_size=sync.page_size,
    )
    servicenow = servicenow_client(settings.connection(sync.connection), secrets, settings.http)
    return DeviceSync(sync, console, servicenow, state or sync_state(settings), progress=progress)


def run_scheduled_sync(*, past_due: bool, settings: Settings | None = None) -> SyncStatus | None:
    """The device_sync_timer entry point: the sync state is read on every tick; the clients are built
    only when a run is due (:func:`shared.devices.sync.run_if_due`)."""
    settings = settings or get_settings()
    if not settings.device_sync.enabled:
        logger.info("device sync is disabled (DEVICE_SYNC_ENABLED)")
        return None
    state = sync_state(settings)
    return run_if_due(state, settings.device_sync, past_due=past_due, build=lambda: build_sync(settings, state))


# -- ServiceNow connections --------------------------------------------------------------------------
def connect_connection(
    settings: Settings, connection: ServiceNowConnection, username: str, password: Secret
) -> ConnectReport:
    """``connect``: sign a connection in, with its tokens in Key Vault, and prove them with one call."""
    store = key_vault(settings)
    client = servicenow_client(connection, store, settings.http)
    try:
        return connect(connection, store, TokenEndpoint(connection, settings.http), client, username, password)
    finally:
        client.close()


def refresh_tokens(settings: Settings | None = None) -> list[RefreshOutcome]:
    """The token_refresh function's entry point: every OAuth connection, renewed and checked."""
    settings = settings or get_settings()
    oauth = [c for c in settings.connections if c.auth in OAUTH_MODES]
    if not oauth:
        return []
    store = key_vault(settings)  # settings require Key Vault for OAuth connections
    outcomes = []
    for connection in oauth:
        try:
            outcome = refresh_connection(connection, store, TokenEndpoint(connection, settings.http), settings.tokens)
        except Exception as exc:  # one connection's failure must not stop the others' renewal
            outcome = RefreshOutcome(connection.name, False, None, None, f"{type(exc).__name__}: {exc}")
        report(outcome, settings.tokens)
        outcomes.append(outcome)
    return outcomes
