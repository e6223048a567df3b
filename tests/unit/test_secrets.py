"""Secret values never print themselves."""

from __future__ import annotations

import logging

import pytest

from shared.platform.secrets import EnvironmentSecretStore, Secret, SecretNotFoundError, StoredSecret


def test_secret_hides_its_value_everywhere(caplog: pytest.LogCaptureFixture) -> None:
    secret = Secret("Sup3r-Secret-Value")
    stored = StoredSecret(secret, None, {}, None)
    logging.getLogger("test").warning("value %s, %r, %s", secret, secret, stored)
    rendered = " ".join([str(secret), repr(secret), f"{secret}", repr(stored), caplog.text])
    assert "Sup3r" not in rendered and "Secret('***')" in rendered
    assert secret.reveal() == "Sup3r-Secret-Value" and secret == Secret("Sup3r-Secret-Value")


def test_environment_store_names_the_setting() -> None:
    store = EnvironmentSecretStore({"SERVICENOW_DEFAULT_PASSWORD": "x"})
    assert store.get("servicenow-default-password").reveal() == "x"
    with pytest.raises(SecretNotFoundError, match="app setting SERVICENOW_OTHER_TOKEN is not set"):
        store.get("servicenow-other-token")
