"""The ServiceNow client over real sockets against the emulator: Table API, retries, auth, errors."""

from __future__ import annotations

import time

import pytest

from shared.http.errors import (
    AuthError,
    ConnectionFailedError,
    NotFoundError,
    PermanentError,
    RateLimitedError,
    TransientError,
)
from shared.http.settings import HttpSettings
from shared.servicenow import EncodedQuery
from shared.servicenow.client import BatchItem
from shared.servicenow.errors import InstanceHibernatingError
from tests.conftest import SN_PASSWORD, ClientFactory
from tools.emulators.servicenow import ServiceNowEmulator
from tools.stack.azurite import free_port

pytestmark = pytest.mark.integration


def test_table_api_create_get_update_delete(servicenow: ServiceNowEmulator, make_client: ClientFactory) -> None:
    client, _ = make_client()
    created = client.create_record(
        "incident", {"short_description": "Illegal MODBUS Operation", "impact": 1, "urgency": 2}
    )
    assert created["number"].startswith("INC") and created["priority"] == "2"
    sys_id = created["sys_id"]
    assert client.get_record("incident", sys_id, fields=["number"]) == {"number": created["number"]}
    assert client.update_record("incident", sys_id, {"urgency": 1})["priority"] == "1"
    client.delete_record("incident", sys_id)
    with pytest.raises(NotFoundError) as info:
        client.get_record("incident", sys_id)
    assert info.value.status == 404 and info.value.message == "No Record found"
    assert info.value.transaction_id


def test_query_pages_through_every_record_once(servicenow: ServiceNowEmulator, make_client: ClientFactory) -> None:
    client, _ = make_client()
    for i in range(25):
        servicenow.store.insert("incident", {"short_description": f"alert {i:02d}", "category": "ot"}, "seed")
    servicenow.store.insert("incident", {"short_description": "other", "category": "it"}, "seed")
    found = list(
        client.query("incident", EncodedQuery().eq("category", "ot"), page_size=10, fields=["short_description"])
    )
    assert sorted(r["short_description"] for r in found) == [f"alert {i:02d}" for i in range(25)]
    pages = [q for q in servicenow.queries if q["table"] == "incident"]
    assert len(pages) == 3  # 10 + 10 + 5: the Link header has no rel="next" after the last, no extra empty call
    assert all(q["sysparm_query"] == "category=ot^ORDERBYsys_id" for q in pages)
    assert len(list(client.query("incident", limit=7, page_size=5))) == 7


def test_a_page_an_acl_shortened_is_not_the_end(servicenow: ServiceNowEmulator, make_client: ClientFactory) -> None:
    """ServiceNow applies sysparm_limit before ACL evaluation: a short (even empty) page mid-way, more after it."""
    client, _ = make_client()
    ids = sorted(
        servicenow.store.insert("incident", {"short_description": str(i)}, "seed")["sys_id"] for i in range(12)
    )
    servicenow.acl_hidden |= set(ids[1:4]) | set(ids[4:8])  # the first page keeps one row, the second none
    found = [r["sys_id"] for r in client.query("incident", page_size=4, fields=["sys_id"])]
    assert found == [ids[0], *ids[8:]]
    assert [int(q["offset"]) for q in servicenow.queries if q["table"] == "incident"] == [0, 4, 8]
    assert [r["sys_id"] for r in client.query("incident", page_size=4, limit=2, fields=["sys_id"])] == ids[:1] + ids[
        8:9
    ]


def test_query_stops_at_total_count(servicenow: ServiceNowEmulator, make_client: ClientFactory) -> None:
    client, _ = make_client()
    for i in range(20):
        servicenow.store.insert("incident", {"short_description": str(i)}, "seed")
    assert len(list(client.query("incident", page_size=10))) == 20
    assert servicenow.stats["table:GET"] == 2  # X-Total-Count says 20: no third request for an empty page


@pytest.mark.parametrize(
    "hostile",
    ["x^NQactive=true", "x^ORactive=true", "^NQsys_idISNOTEMPTY", "a^^b^", "x^ORDERBYnumber"],
)
def test_hostile_values_cannot_change_the_executed_query(
    servicenow: ServiceNowEmulator, make_client: ClientFactory, hostile: str
) -> None:
    client, _ = make_client()
    servicenow.store.insert("incident", {"correlation_id": "other", "active": "true"}, "seed")
    target = servicenow.store.insert("incident", {"correlation_id": hostile, "active": "true"}, "seed")
    found = list(client.query("incident", EncodedQuery().eq("correlation_id", hostile)))
    assert [r["sys_id"] for r in found] == [target["sys_id"]]
    executed = servicenow.queries[-1]["parsed"]
    assert executed == {"groups": [[[["correlation_id", "=", hostile]]]], "order": [["sys_id", "asc"]]}


def test_an_unescaped_value_would_have_matched_everything(servicenow: ServiceNowEmulator) -> None:
    """The control for the test above: the emulator does execute injected syntax when it is not escaped."""
    from tools.emulators.servicenow.query import matches, parse

    records = [{"correlation_id": "a", "active": "true"}, {"correlation_id": "b", "active": "true"}]
    assert all(matches(r, parse("correlation_id=x^NQactive=true")) for r in records)


def test_retries_503_then_succeeds(servicenow: ServiceNowEmulator, make_client: ClientFactory) -> None:
    client, _ = make_client()
    servicenow.faults.configure({"fail_next": [{"status": 503, "count": 2}]})
    assert list(client.query("incident")) == []
    assert (client.stats.calls, client.stats.attempts, client.stats.retries) == (1, 3, 2)


def test_retry_after_is_honoured(servicenow: ServiceNowEmulator, make_client: ClientFactory) -> None:
    client, _ = make_client()
    servicenow.faults.configure({"fail_next": [{"status": 429, "count": 1, "retry_after": "1"}]})
    started = time.monotonic()
    client.create_record("incident", {"short_description": "after 429"})
    assert time.monotonic() - started >= 1.0
    assert len(servicenow.store.all("incident")) == 1  # a 429 refusal is safe to repeat even for POST


def test_wait_beyond_budget_returns_rate_limited_at_once(
    servicenow: ServiceNowEmulator, make_client: ClientFactory
) -> None:
    client, _ = make_client(http=HttpSettings(connect_timeout=2, read_timeout=5, retry_budget_seconds=5))
    servicenow.faults.configure({"fail_next": [{"status": 429, "count": 1, "retry_after": "3600"}]})
    started = time.monotonic()
    with pytest.raises(RateLimitedError) as info:
        client.get_record("incident", "0" * 32)
    assert time.monotonic() - started < 2
    assert info.value.retry_after == 3600.0 and info.value.retryable
    assert info.value.message == "Rate limit exceeded"


def test_retry_budget_caps_total_time(servicenow: ServiceNowEmulator, make_client: ClientFactory) -> None:
    client, _ = make_client(
        http=HttpSettings(connect_timeout=2, read_timeout=5, retry_budget_seconds=2, max_attempts=20)
    )
    servicenow.faults.configure({"outage_seconds": 30})
    started = time.monotonic()
    with pytest.raises(TransientError) as info:
        list(client.query("incident"))
    assert time.monotonic() - started < 3.5
    assert info.value.status == 503 and info.value.message.endswith("(HTML page)")
    assert 2 <= client.stats.attempts < 20


def test_post_not_repeated_after_an_ambiguous_reset(servicenow: ServiceNowEmulator, make_client: ClientFactory) -> None:
    client, _ = make_client()
    servicenow.faults.configure({"fail_next": [{"kind": "reset", "count": 1}]})
    with pytest.raises(ConnectionFailedError) as info:
        client.create_record("incident", {"short_description": "maybe sent"})
    assert info.value.request_sent and info.value.retryable
    assert client.stats.attempts == 1


def test_post_marked_safe_is_repeated_after_a_reset(servicenow: ServiceNowEmulator, make_client: ClientFactory) -> None:
    client, _ = make_client()
    servicenow.faults.configure({"fail_next": [{"kind": "reset", "count": 1}]})
    client.create_record("incident", {"short_description": "idempotent by design"}, retry_safe=True)
    assert client.stats.attempts == 2 and len(servicenow.store.all("incident")) == 1


def test_post_repeated_when_the_connection_never_opened(make_client: ClientFactory) -> None:
    client, _ = make_client(
        http=HttpSettings(connect_timeout=1, read_timeout=2, retry_budget_seconds=3, max_attempts=3)
    )
    port = free_port()
    client.instance_url = f"https://localhost:{port}"  # nothing listens there
    with pytest.raises(ConnectionFailedError) as info:
        client.create_record("incident", {"short_description": "never sent"})
    assert not info.value.request_sent
    assert client.stats.attempts == 3
    # The message names where it could not connect.
    assert str(info.value).startswith(f"POST https://localhost:{port}/api/now/table/incident: connection failed")


def test_read_timeout_is_retried_for_get(servicenow: ServiceNowEmulator, make_client: ClientFactory) -> None:
    client, _ = make_client(http=HttpSettings(connect_timeout=1, read_timeout=0.5, retry_budget_seconds=5))
    servicenow.faults.configure({"fail_next": [{"kind": "hang", "seconds": 1.5, "count": 1}]})
    assert list(client.query("incident")) == []
    assert client.stats.attempts == 2


def test_401_gets_one_fresh_credential_then_succeeds(
    servicenow: ServiceNowEmulator, make_client: ClientFactory
) -> None:
    client, secrets = make_client()
    client.create_record("incident", {"short_description": "first"})
    # The password is rotated in ServiceNow and in the secret store; the client still holds the old one.
    servicenow.oauth.users["svc_defender"] = secrets["SERVICENOW_TEST_PASSWORD"] = "Rotated-Passw0rd-1"
    client.create_record("incident", {"short_description": "second"})
    assert client.stats.attempts == 3
    assert len(servicenow.store.all("incident")) == 2


def test_401_with_no_fresher_credential_is_an_auth_error(
    servicenow: ServiceNowEmulator, make_client: ClientFactory
) -> None:
    client, _ = make_client(password="wrong-password")
    with pytest.raises(AuthError) as info:
        list(client.query("incident"))
    assert info.value.status == 401 and info.value.message == "User Not Authenticated"
    assert not info.value.retryable
    assert client.stats.attempts == 1  # the secret was re-read, unchanged: no pointless repeat


def test_static_bearer_token(servicenow: ServiceNowEmulator, make_client: ClientFactory) -> None:
    token = servicenow.oauth.grant(
        {
            "grant_type": "password",
            "client_id": "defender-iot-tests",
            "client_secret": "Test-Client-Secret-5521",
            "username": "svc_defender",
            "password": SN_PASSWORD,
        }
    )["access_token"]
    client, _ = make_client(auth="bearer", token=str(token))
    assert list(client.query("incident")) == []


def test_permanent_refusal_is_not_retried(servicenow: ServiceNowEmulator, make_client: ClientFactory) -> None:
    client, _ = make_client()
    created = client.create_record("incident", {"short_description": "to resolve"})
    with pytest.raises(PermanentError) as info:
        client.update_record("incident", created["sys_id"], {"state": "6"})
    assert info.value.status == 403 and "Data Policy Exception" in (info.value.detail or "")
    assert client.stats.attempts == 2


def test_invalid_table_is_a_permanent_error(servicenow: ServiceNowEmulator, make_client: ClientFactory) -> None:
    client, _ = make_client()
    with pytest.raises(PermanentError, match="Invalid table no_such_table"):
        client.create_record("no_such_table", {"a": "b"})


def test_a_hibernating_instance_is_named_on_every_json_call(
    servicenow: ServiceNowEmulator, make_client: ClientFactory
) -> None:
    """A hibernating developer instance answers 200 with an HTML page: the Table, Batch and IRE calls say so."""
    client, _ = make_client(
        http=HttpSettings(connect_timeout=2, read_timeout=5, retry_budget_seconds=1, max_attempts=1)
    )
    servicenow.hibernating = True
    calls = [
        lambda: client.get_record("incident", "0" * 32),
        lambda: list(client.query("incident")),
        lambda: client.create_record("incident", {"short_description": "x"}, retry_safe=True),
        lambda: client.batch([BatchItem("1", "GET", "/api/now/table/incident")]),
        lambda: client.identify_reconcile({"items": []}, data_source="MicrosoftDefenderForIoT"),
    ]
    for call in calls:
        with pytest.raises(InstanceHibernatingError, match="the instance is hibernating"):
            call()
    servicenow.hibernating = False
    assert list(client.query("incident")) == []


def test_another_html_200_page_is_a_typed_transient_error(
    servicenow: ServiceNowEmulator, make_client: ClientFactory
) -> None:
    """A proxy's or login page answering 200 is not JSON either: a transient error with an excerpt, no traceback."""
    client, _ = make_client()
    client.instance_url = servicenow.url + "/_emulator/login-page"
    with pytest.raises(TransientError, match="expected JSON") as info:
        client.get_record("incident", "0" * 32)
    assert not isinstance(info.value, InstanceHibernatingError)
    assert info.value.detail and "Sign in" in info.value.detail


def test_session_cookie_is_never_sent_back(servicenow: ServiceNowEmulator, make_client: ClientFactory) -> None:
    client, _ = make_client()
    for _ in range(5):
        list(client.query("incident"))
    assert servicenow.stats["requests"] == 5
    assert servicenow.stats["requests_with_session_cookie"] == 0


def test_a_field_the_table_does_not_have_is_dropped_without_a_word(
    servicenow: ServiceNowEmulator, make_client: ClientFactory
) -> None:
    """As on an instance: the write succeeds, the unknown field is gone, so only a dictionary check can find it."""
    client, _ = make_client()
    created = client.create_record("incident", {"short_description": "x", "short_descriptoin": "typo"})
    assert "short_descriptoin" not in created and created["short_description"] == "x"
    updated = client.update_record("incident", created["sys_id"], {"assignment_grop": "OT", "category": "network"})
    assert "assignment_grop" not in updated and updated["category"] == "network"
    elements = {r["element"] for r in client.query("sys_dictionary", EncodedQuery().in_("name", ["incident", "task"]))}
    assert {"short_description", "correlation_display", "work_notes", "category"} <= elements
    assert "short_descriptoin" not in elements
