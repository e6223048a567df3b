"""Secrets in Key Vault through the real azure-keyvault-secrets SDK, against the Key Vault emulator."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shared.platform.identity import LocalEmulatorCredential
from shared.platform.secrets import (
    KeyVaultSecretStore,
    Secret,
    SecretNotFoundError,
    SecretStoreUnavailableError,
)
from shared.platform.settings import SettingsError
from shared.settings import load_settings
from tests.support.forwarding import Stack, alert
from tests.support.settings import app_settings
from tools.emulators.keyvault import KeyVaultEmulator
from tools.emulators.servicenow import ServiceNowEmulator

pytestmark = pytest.mark.integration
VALUE = "Kv-Secret-Value-3141"


def store(keyvault: KeyVaultEmulator, ttl: float = 60.0) -> KeyVaultSecretStore:
    return KeyVaultSecretStore.connect(keyvault.url, LocalEmulatorCredential(), keyvault.ca_pem, ttl)


def test_write_then_read_with_expiry_content_type_and_tags(tls_dir: Path) -> None:
    # A vault of its own: the SDK keeps each vault's challenge for the process, so a vault other tests
    # already used would not be challenged again.
    keyvault = KeyVaultEmulator(tls_dir=tls_dir).start()
    try:
        check_write_then_read(keyvault)
    finally:
        keyvault.stop()


def check_write_then_read(keyvault: KeyVaultEmulator) -> None:
    secrets = store(keyvault)
    expires = datetime.now(UTC).replace(microsecond=0) + timedelta(days=100)
    secrets.write(
        "servicenow-default-refresh-token",
        Secret(VALUE),
        content_type="application/vnd.servicenow.refresh-token",
        expires_on=expires,
        tags={"connection": "default"},
    )
    fresh = store(keyvault).read("servicenow-default-refresh-token")
    assert fresh.value.reveal() == VALUE
    assert fresh.expires_on == expires and fresh.tags == {"connection": "default"}
    assert keyvault.stats["challenges"] >= 1  # the SDK went through the bearer challenge


def test_missing_secret_is_named(keyvault: KeyVaultEmulator) -> None:
    with pytest.raises(SecretNotFoundError, match="secret 'nope' not found in Key Vault"):
        store(keyvault).get("nope")


def test_reads_are_cached_for_the_ttl(keyvault: KeyVaultEmulator) -> None:
    store(keyvault).write("s", Secret(VALUE), content_type="text/plain")
    secrets = store(keyvault, ttl=60)
    before = keyvault.stats["reads"]
    for _ in range(5):
        assert secrets.get("s").reveal() == VALUE
    assert keyvault.stats["reads"] - before == 1
    secrets.read("s", fresh=True)
    assert keyvault.stats["reads"] - before == 2


def test_throttling_is_retried(keyvault: KeyVaultEmulator) -> None:
    store(keyvault).write("s", Secret(VALUE), content_type="text/plain")
    keyvault.faults.configure({"fail_next": [{"status": 429, "retry_after": "0", "count": 2}]})
    assert store(keyvault).get("s").reveal() == VALUE
    assert keyvault.stats["faults"] == 2


def test_outage_is_a_transient_error_without_the_value(keyvault: KeyVaultEmulator) -> None:
    store(keyvault).write("s", Secret(VALUE), content_type="text/plain")
    keyvault.faults.configure({"outage_seconds": 60})
    started = time.monotonic()
    with pytest.raises(SecretStoreUnavailableError) as info:
        store(keyvault).get("s")
    assert "HTTP 503" in str(info.value) and VALUE not in str(info.value)
    assert time.monotonic() - started < 15


def test_emulator_credential_only_for_localhost() -> None:
    base = app_settings("UseDevelopmentStorage=true")
    with pytest.raises(SettingsError, match="KEY_VAULT_CREDENTIAL=emulator is for the local Key Vault emulator only"):
        load_settings({**base, "KEY_VAULT_URL": "https://kv.vault.azure.net", "KEY_VAULT_CREDENTIAL": "emulator"})
    with pytest.raises(SettingsError, match="KEY_VAULT_URL='http://kv' is invalid"):
        load_settings({**base, "KEY_VAULT_URL": "http://kv"})
    vault = load_settings({**base, "KEY_VAULT_URL": "https://kv.vault.azure.net/", "AZURE_CLIENT_ID": "abc"}).key_vault
    assert vault is not None and (vault.url, vault.credential, vault.client_id) == (
        "https://kv.vault.azure.net",
        "managed_identity",
        "abc",
    )


def test_forwarding_reads_its_servicenow_secret_from_key_vault(
    make_stack: Callable[..., Stack],
    keyvault: KeyVaultEmulator,
    servicenow: ServiceNowEmulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.conftest import SN_PASSWORD

    monkeypatch.delenv("SERVICENOW_DEFAULT_PASSWORD")
    store(keyvault).write("servicenow-default-password", Secret(SN_PASSWORD), content_type="text/plain")
    stack = make_stack(
        KEY_VAULT_URL=keyvault.url, KEY_VAULT_CREDENTIAL="emulator", KEY_VAULT_CA_BUNDLE=str(keyvault.ca_pem)
    )
    assert [o.operation for o in stack.handle(alert(alert_id=1)).outcomes] == ["created"]
    # A Key Vault outage before the secret was ever read defers the alert; nothing is lost.
    cold = make_stack(
        KEY_VAULT_URL=keyvault.url, KEY_VAULT_CREDENTIAL="emulator", KEY_VAULT_CA_BUNDLE=str(keyvault.ca_pem)
    )
    keyvault.faults.configure({"outage_seconds": 60})
    result = cold.handle(alert(alert_id=2))
    assert result.status == "deferred" and "Key Vault unavailable" in result.reason
    assert cold.poisoned() == []


def test_the_sdk_lists_gets_by_version_and_updates_properties(keyvault: KeyVaultEmulator) -> None:
    """What an operator script (or a later feature) calls besides get and set works here as in Azure."""
    client = store(keyvault).client
    for number in range(30):  # more than one page of 25
        client.set_secret(f"secret-{number:02d}", f"value-{number}", tags={"n": str(number)})
    first = client.set_secret("rotated", "old-value", content_type="text/plain")
    second = client.set_secret("rotated", "new-value")
    names = [p.name for p in client.list_properties_of_secrets()]
    assert names == sorted([f"secret-{n:02d}" for n in range(30)] + ["rotated"])
    versions = {p.version for p in client.list_properties_of_secret_versions("rotated")}
    assert versions == {first.properties.version, second.properties.version}
    assert client.get_secret("rotated", first.properties.version).value == "old-value"
    assert client.get_secret("rotated").value == "new-value"
    expires = datetime.now(UTC).replace(microsecond=0) + timedelta(days=30)
    updated = client.update_secret_properties(
        "rotated", first.properties.version, content_type="application/json", tags={"kind": "old"}, expires_on=expires
    )
    assert (updated.content_type, updated.tags, updated.expires_on) == ("application/json", {"kind": "old"}, expires)
    old = client.get_secret("rotated", first.properties.version)
    assert old.value == "old-value" and old.properties.tags == {"kind": "old"}  # properties changed, value kept
    assert client.get_secret("rotated").properties.tags in ({}, None)  # the latest version untouched
