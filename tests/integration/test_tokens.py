"""OAuth connections end to end: connect, tokens in Key Vault, refresh, revocation, one refresh per herd."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from shared.app import servicenow_client
from shared.app.tokens import refresh_tokens
from shared.cli import main
from shared.platform.identity import LocalEmulatorCredential
from shared.platform.secrets import KeyVaultSecretStore, Secret
from shared.settings import get_settings, load_settings
from tests.conftest import SN_CLIENT_ID, SN_CLIENT_SECRET, SN_PASSWORD, SN_USER
from tests.support.forwarding import Stack, alert
from tests.support.settings import app_settings
from tools.emulators.keyvault import KeyVaultEmulator
from tools.emulators.servicenow import OAuthClient, ServiceNowEmulator
from tools.stack.azurite import Azurite

pytestmark = pytest.mark.integration


def oauth_settings(
    servicenow: ServiceNowEmulator, keyvault: KeyVaultEmulator, storage: str, auth: str = "oauth", **overrides: str
) -> dict[str, str]:
    connection = {"name": "default", "instance_url": servicenow.url, "auth": auth, "client_id": SN_CLIENT_ID}
    if auth == "oauth":
        connection["username"] = SN_USER
    return app_settings(
        storage,
        servicenow.url,
        SERVICENOW_CONNECTIONS=json.dumps([connection]),
        SERVICENOW_CA_BUNDLE=str(servicenow.ca_pem),
        KEY_VAULT_URL=keyvault.url,
        KEY_VAULT_CREDENTIAL="emulator",
        KEY_VAULT_CA_BUNDLE=str(keyvault.ca_pem),
        **overrides,
    )


@pytest.fixture
def vault_store(keyvault: KeyVaultEmulator) -> KeyVaultSecretStore:
    store = KeyVaultSecretStore.connect(keyvault.url, LocalEmulatorCredential(), keyvault.ca_pem, ttl=0)
    store.write("servicenow-default-client-secret", Secret(SN_CLIENT_SECRET), content_type="text/plain")
    return store


@pytest.fixture
def environment(
    servicenow: ServiceNowEmulator,
    keyvault: KeyVaultEmulator,
    azurite: Azurite,
    vault_store: KeyVaultSecretStore,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[..., dict[str, str]]]:
    def apply(auth: str = "oauth", **overrides: str) -> dict[str, str]:
        environ = oauth_settings(servicenow, keyvault, azurite.connection_string, auth, **overrides)
        for name, value in environ.items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()
        return environ

    yield apply
    get_settings.cache_clear()


def run_connect(monkeypatch: pytest.MonkeyPatch, password: str = SN_PASSWORD) -> int:
    monkeypatch.setattr("sys.stdin", io.StringIO(password + "\n"))
    return main(["connect", "default", "--password-stdin"])


def stack_on(environ: dict[str, str], make_stack: Callable[..., Stack]) -> Stack:
    """A forwarding stack on the connection and Key Vault settings of ``environ``."""
    return make_stack(**{k: v for k, v in environ.items() if k.startswith(("SERVICENOW_CONN", "KEY_VAULT"))})


def test_connect_stores_tokens_and_forgets_the_password(
    environment: Callable[..., dict[str, str]],
    keyvault: KeyVaultEmulator,
    servicenow: ServiceNowEmulator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    environment()
    assert run_connect(monkeypatch) == 0
    out, err = capsys.readouterr()
    assert "signed in; tokens stored in Key Vault" in out and "access-token lifespan: 1800 s" in out
    assert "raise it to at least 3600 s" in err  # the emulator's default lifespan is ServiceNow's 1,800 s
    refresh = keyvault.vault.secrets["servicenow-default-refresh-token"][-1]
    access = keyvault.vault.secrets["servicenow-default-access-token"][-1]
    assert refresh.attributes["exp"] > datetime.now(UTC).timestamp() + 99 * 86400
    assert access.attributes["exp"] <= datetime.now(UTC).timestamp() + 1800
    stored = [v.value for versions in keyvault.vault.secrets.values() for v in versions]
    assert SN_PASSWORD not in stored
    assert servicenow.oauth.grants == {"password": 1}


def test_wrong_password_fails_clearly(
    environment: Callable[..., dict[str, str]], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    environment()
    assert run_connect(monkeypatch, "wrong-password") == 1
    err = capsys.readouterr().err
    assert "wrong-password" not in err
    # ServiceNow answers a wrong password and a wrong client alike; the message says so and names both to check.
    assert "ServiceNow refused the sign-in of connection 'default' (401 server_error: access_denied)" in err
    assert f"the password of user '{SN_USER}'" in err
    assert f"client_id {SN_CLIENT_ID!r} and the secret in Key Vault secret 'servicenow-default-client-secret'" in err


def test_a_hibernating_instance_is_named_by_connect_and_defers_alerts(
    environment: Callable[..., dict[str, str]],
    make_stack: Callable[..., Stack],
    servicenow: ServiceNowEmulator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The token endpoint of a hibernating instance answers 200 with HTML too: one line, never a JSONDecodeError."""
    environ = environment()
    servicenow.hibernating = True
    assert run_connect(monkeypatch) == 1
    err = capsys.readouterr().err
    assert "connect failed:" in err and "the instance is hibernating" in err and "Traceback" not in err
    servicenow.hibernating = False
    assert run_connect(monkeypatch) == 0
    stack = stack_on(environ, make_stack)
    servicenow.hibernating = True
    result = stack.handle(alert(alert_id=1), "m-1")
    assert result.status == "deferred" and "the instance is hibernating" in result.reason
    assert stack.poisoned() == []


def test_forwarding_on_oauth_tokens_survives_expiry(
    environment: Callable[..., dict[str, str]],
    make_stack: Callable[..., Stack],
    servicenow: ServiceNowEmulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    environ = environment()
    assert run_connect(monkeypatch) == 0
    stack = stack_on(environ, make_stack)
    assert [o.operation for o in stack.handle(alert(alert_id=1)).outcomes] == ["created"]
    servicenow.clock_offset += 1800  # the access token expires in ServiceNow mid-flight
    assert [o.operation for o in stack.handle(alert(alert_id=2)).outcomes] == ["created"]
    assert servicenow.oauth.grants == {"password": 1, "refresh_token": 1}


def test_a_revoked_refresh_token_defers_alerts_until_connect_is_run_again(
    environment: Callable[..., dict[str, str]],
    make_stack: Callable[..., Stack],
    servicenow: ServiceNowEmulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    environ = environment()
    assert run_connect(monkeypatch) == 0
    stack = stack_on(environ, make_stack)
    servicenow.oauth.revoke()  # an admin revoked every token
    result = stack.handle(alert(alert_id=1), "m-1")
    assert result.status == "deferred" and "run `python -m shared connect default`" in result.reason
    assert stack.poisoned() == []
    assert run_connect(monkeypatch) == 0  # a person signs in again
    ((message_id, deferred),) = stack.deferred(wait=5)
    assert [o.operation for o in stack.handle(deferred, message_id).outcomes] == ["created"]


def test_concurrent_401s_cause_one_refresh(
    environment: Callable[..., dict[str, str]],
    servicenow: ServiceNowEmulator,
    vault_store: KeyVaultSecretStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    environ = environment()
    assert run_connect(monkeypatch) == 0
    settings = load_settings(environ)
    client = servicenow_client(settings.connection("default"), vault_store, settings.http)
    list(client.query("incident"))
    servicenow.clock_offset += 1800
    errors: list[Exception] = []

    def call() -> None:
        try:
            list(client.query("incident"))
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert servicenow.oauth.grants.get("refresh_token") == 1


def test_token_refresh_renews_before_expiry(
    environment: Callable[..., dict[str, str]],
    keyvault: KeyVaultEmulator,
    servicenow: ServiceNowEmulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    environment(TOKEN_RENEW_BEFORE_MINUTES="10")
    assert run_connect(monkeypatch) == 0
    (outcome,) = refresh_tokens()
    assert not outcome.renewed and outcome.error is None  # 30 minutes left: not due yet
    environment(TOKEN_RENEW_BEFORE_MINUTES="45")
    before = keyvault.value("servicenow-default-access-token")
    (outcome,) = refresh_tokens()
    assert outcome.renewed and keyvault.value("servicenow-default-access-token") != before
    assert outcome.refresh_days_left is not None and 99 < outcome.refresh_days_left <= 100
    assert servicenow.oauth.grants["refresh_token"] == 1


def test_revoked_refresh_token_names_the_connection_and_keeps_the_last_tokens(
    environment: Callable[..., dict[str, str]],
    keyvault: KeyVaultEmulator,
    servicenow: ServiceNowEmulator,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    environment(TOKEN_RENEW_BEFORE_MINUTES="45")
    assert run_connect(monkeypatch) == 0
    servicenow.oauth.revoke()
    tokens_before = {name: versions[-1].value for name, versions in keyvault.vault.secrets.items()}
    with caplog.at_level(logging.ERROR, logger="shared.connections"):
        (outcome,) = refresh_tokens()
    assert outcome.error is not None and "run `python -m shared connect default`" in outcome.error
    assert "refused the refresh token of connection 'default'" in caplog.text
    assert {name: versions[-1].value for name, versions in keyvault.vault.secrets.items()} == tokens_before
    import azure.functions.timer

    from functions.token_refresh import token_refresh

    with pytest.raises(RuntimeError, match="token refresh failed for connection"):
        token_refresh(azure.functions.timer.TimerRequest(past_due=False))


@pytest.mark.parametrize(("days", "level"), [(10, logging.WARNING), (2, logging.ERROR)])
def test_refresh_token_expiry_is_announced_days_ahead(
    environment: Callable[..., dict[str, str]],
    vault_store: KeyVaultSecretStore,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    days: int,
    level: int,
) -> None:
    environment()
    assert run_connect(monkeypatch) == 0
    token = vault_store.read("servicenow-default-refresh-token").value
    vault_store.write(
        "servicenow-default-refresh-token", token, content_type="x", expires_on=datetime.now(UTC) + timedelta(days=days)
    )
    with caplog.at_level(logging.INFO, logger="shared.connections"):
        refresh_tokens()
    (record,) = [r for r in caplog.records if "refresh token of connection 'default' expires" in r.getMessage()]
    assert record.levelno == level
    assert f"expires in {days:.1f} day(s)" in record.getMessage()


def test_client_credentials_connection(
    environment: Callable[..., dict[str, str]],
    servicenow: ServiceNowEmulator,
    make_stack: Callable[..., Stack],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    servicenow.oauth.clients[SN_CLIENT_ID] = OAuthClient(
        SN_CLIENT_ID, SN_CLIENT_SECRET, client_credentials_user=SN_USER
    )
    environ = environment(auth="client_credentials")
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert main(["connect", "default"]) == 0
    assert servicenow.oauth.grants == {"client_credentials": 1}
    stack = stack_on(environ, make_stack)
    assert [o.operation for o in stack.handle(alert()).outcomes] == ["created"]


def test_no_secret_value_reaches_a_log_line_or_an_output(
    environment: Callable[..., dict[str, str]],
    keyvault: KeyVaultEmulator,
    servicenow: ServiceNowEmulator,
    make_stack: Callable[..., Stack],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    environ = environment(TOKEN_RENEW_BEFORE_MINUTES="45")
    assert run_connect(monkeypatch) == 0
    stack = stack_on(environ, make_stack)
    stack.handle(alert(alert_id=1))
    servicenow.clock_offset += 1800
    stack.handle(alert(alert_id=2))
    refresh_tokens()
    servicenow.oauth.revoke()
    refresh_tokens()  # the failed flow too
    assert run_connect(monkeypatch, "Wrong-Passw0rd-For-Test") == 1
    secrets: list[str] = [SN_PASSWORD, SN_CLIENT_SECRET, "Wrong-Passw0rd-For-Test"]
    secrets += [v.value for versions in keyvault.vault.secrets.values() for v in versions]
    out, err = capsys.readouterr()
    text = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records) + out + err
    assert "token refresh for connection 'default' failed" in text  # the flows did log
    leaked = [s[:6] + "…" for s in secrets if s and s in text]
    assert leaked == []


def test_oauth_without_key_vault_is_a_settings_error(servicenow: ServiceNowEmulator) -> None:
    from shared.platform.settings import SettingsError

    connection = [
        {"name": "default", "instance_url": servicenow.url, "auth": "oauth", "client_id": "c", "username": "u"}
    ]
    with pytest.raises(
        SettingsError, match="uses auth 'oauth', which keeps its tokens in Key Vault; set KEY_VAULT_URL"
    ):
        load_settings(app_settings("UseDevelopmentStorage=true", SERVICENOW_CONNECTIONS=json.dumps(connection)))


def test_token_refresh_stops_between_connections_at_its_run_time(
    environment: Callable[..., dict[str, str]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No invocation reaches functionTimeout: past the run time the connections left wait for the next tick."""
    import dataclasses

    environment(TOKEN_RENEW_BEFORE_MINUTES="45")
    assert run_connect(monkeypatch) == 0
    settings = get_settings()
    connection = settings.connection("default")
    spent = dataclasses.replace(settings, connections=(connection, connection), run_seconds=0)
    with caplog.at_level(logging.WARNING, logger="shared.app.tokens"):
        outcomes = refresh_tokens(spent)
    assert [o.connection for o in outcomes] == ["default"]  # one worked, the other left for the next tick
    assert "the next tick renews default" in caplog.text
    assert len(refresh_tokens(dataclasses.replace(settings, connections=(connection, connection)))) == 2
