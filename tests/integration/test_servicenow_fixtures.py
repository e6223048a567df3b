"""The emulator's answers against ServiceNow's published examples (tests/fixtures/servicenow), over real sockets:
no key the examples do not show, the same values where they are a vocabulary."""

from __future__ import annotations

import re

import pytest
import requests
from pysnc import ServiceNowClient
from pysnc.auth import ServiceNowPasswordGrantFlow

from tests.conftest import SN_CLIENT_ID, SN_CLIENT_SECRET, SN_PASSWORD, SN_USER
from tests.support.fixtures import all_in, load, unpublished
from tools.emulators.servicenow import ServiceNowEmulator

pytestmark = pytest.mark.integration


def get(servicenow: ServiceNowEmulator, path: str, **params: str) -> requests.Response:
    return requests.get(
        servicenow.url + path,
        params=params,
        auth=(SN_USER, SN_PASSWORD),
        headers={"Accept": "application/json"},
        verify=str(servicenow.ca_pem),
        timeout=10,
    )


def test_every_fixture_names_its_source() -> None:
    assert {f.path.stem for f in all_in("servicenow")} >= {"table-list-incident", "error-envelope", "oauth-token"}


def test_a_table_answer_has_only_published_keys_and_its_paging_headers(servicenow: ServiceNowEmulator) -> None:
    for i in range(3):
        servicenow.store.insert("incident", {"short_description": f"alert {i}", "category": "network"}, "seed")
    response = get(servicenow, "/api/now/table/incident", sysparm_limit="1", sysparm_offset="1")
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("application/json")
    assert unpublished([response.json()], load("servicenow", "table-list-incident").documents) == []
    assert response.headers["X-Total-Count"] == "3"
    (published,) = load("servicenow", "table-list-headers").documents
    rels = re.findall(r'rel="(\w+)"', response.headers["Link"])
    assert sorted(rels) == sorted(re.findall(r'rel="(\w+)"', published["Link"]))  # first, prev, next, last
    for link in response.headers["Link"].split(","):
        assert re.fullmatch(r"<https://[^>]+\?[^>]*sysparm_offset=\d+[^>]*>;rel=\"\w+\"", link)


def test_the_error_envelope_is_the_published_one(servicenow: ServiceNowEmulator) -> None:
    servicenow.faults.configure({"fail_next": [{"status": 429, "retry_after": "5"}]})
    response = get(servicenow, "/api/now/table/incident")
    assert response.status_code == 429 and response.headers["Retry-After"] == "5"
    assert response.json() == load("servicenow", "error-envelope").documents[0]


def test_the_token_answer_has_the_published_keys_and_values(servicenow: ServiceNowEmulator) -> None:
    form = {"grant_type": "password", "client_id": SN_CLIENT_ID, "client_secret": SN_CLIENT_SECRET,
            "username": SN_USER, "password": SN_PASSWORD}  # fmt: skip
    response = requests.post(servicenow.url + "/oauth_token.do", data=form, verify=str(servicenow.ca_pem), timeout=10)
    published = load("servicenow", "oauth-token").documents
    assert unpublished([response.json()], published, ["scope", "token_type", "expires_in"]) == []
    # PySNC, ServiceNow's own client, signs in on the same answer.
    client = ServiceNowClient(
        servicenow.url, ServiceNowPasswordGrantFlow(SN_USER, SN_PASSWORD, SN_CLIENT_ID, SN_CLIENT_SECRET),
        verify=str(servicenow.ca_pem),
    )  # fmt: skip
    assert client.GlideRecord("incident").get("0" * 32) is False


def test_the_hibernation_page_carries_what_clients_detect(servicenow: ServiceNowEmulator) -> None:
    (published,) = load("servicenow", "hibernating-page").documents
    servicenow.hibernating = True
    for response in (
        get(servicenow, "/api/now/table/incident"),
        requests.post(
            servicenow.url + "/oauth_token.do",
            data={"grant_type": "password"},
            verify=str(servicenow.ca_pem),
            timeout=10,
        ),
    ):
        assert response.status_code == published["status"]
        assert response.headers["Content-Type"].startswith(published["content_type"])
        assert published["contains"] in response.text and "result" not in response.text
    # PySNC does not detect it: its query fails decoding the page, which is why the product detects it itself.
    client = ServiceNowClient(servicenow.url, (SN_USER, SN_PASSWORD), verify=str(servicenow.ca_pem))
    with pytest.raises(requests.exceptions.JSONDecodeError):
        client.GlideRecord("incident").query()


def test_a_record_written_with_the_published_references_reads_back_as_published(servicenow: ServiceNowEmulator) -> None:
    """Every field the published incident shows as a reference comes back as one, to the same table, with the
    link and value keys only; with sysparm_exclude_reference_link=true, as the bare sys_id."""
    (published,) = load("servicenow", "table-list-incident").documents
    record = published["result"][0]
    references = {name: value for name, value in record.items() if isinstance(value, dict)}
    created = servicenow.store.insert(
        "incident", {"parent": "", **{name: ref["value"] for name, ref in references.items()}}, "seed"
    )
    answer = get(servicenow, f"/api/now/table/incident/{created['sys_id']}").json()["result"]
    for name, ref in references.items():
        table = ref["link"].split("/api/now/table/")[1].split("/")[0]
        assert answer[name] == {"link": f"{servicenow.url}/api/now/table/{table}/{ref['value']}", "value": ref["value"]}
    assert answer["parent"] == record["parent"] == ""  # an empty reference is an empty string
    bare = get(servicenow, f"/api/now/table/incident/{created['sys_id']}", sysparm_exclude_reference_link="true")
    assert all(bare.json()["result"][name] == ref["value"] for name, ref in references.items())
