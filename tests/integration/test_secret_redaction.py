"""No credential value reaches a log record or an exception, on success or on failure."""

from __future__ import annotations

import base64
import logging

import pytest

from shared.http.errors import AuthError, HttpError
from tests.conftest import SN_PASSWORD, SN_USER, ClientFactory
from tools.emulators.servicenow import ServiceNowEmulator

pytestmark = pytest.mark.integration


def test_client_logs_and_errors_carry_no_credentials(
    servicenow: ServiceNowEmulator, make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client, _ = make_client()
    servicenow.faults.configure({"fail_next": [{"status": 503}, {"status": 429, "retry_after": "0"}]})
    list(client.query("incident"))
    client.create_record("incident", {"short_description": "ok"})
    errors: list[HttpError] = []
    bad, _ = make_client(password="Wrong-Passw0rd-For-Test")
    with pytest.raises(AuthError) as info:
        bad.create_record("incident", {"short_description": "refused"})
    errors.append(info.value)

    secrets = [
        SN_PASSWORD,
        "Wrong-Passw0rd-For-Test",
        base64.b64encode(f"{SN_USER}:{SN_PASSWORD}".encode()).decode(),
        base64.b64encode(f"{SN_USER}:Wrong-Passw0rd-For-Test".encode()).decode(),
    ]
    text = "\n".join(r.getMessage() for r in caplog.records) + "\n".join(f"{e!s} {e!r}" for e in errors)
    text += repr(client) + repr(bad)
    assert "ServiceNow POST /api/now/table/incident" in text  # the logging did happen
    for secret in secrets:
        assert secret not in text
