"""Settings are validated once; every problem names the setting and the expected form."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.defender.settings import CloudSourceSettings, ConsoleSourceSettings, SensorSourceSettings
from shared.platform.settings import SettingsError, known_settings
from shared.settings import load_settings, start_up_warnings

CONNECTION = {
    "name": "default",
    "instance_url": "https://dev12345.service-now.com/",
    "auth": "basic",
    "username": "svc",
}


def env(**overrides: str | None) -> dict[str, str]:
    base = {
        "ALERTS_QUEUE": "alerts",
        "ALERTS_STORAGE": "UseDevelopmentStorage=true",
        "TOKEN_REFRESH_SCHEDULE": "0 */10 * * * *",
        "DEVICE_SYNC_SCHEDULE": "0 */5 * * * *",
        "ALERT_INTAKE_SCHEDULE": "0 */1 * * * *",
        "SERVICENOW_CONNECTIONS": json.dumps([CONNECTION]),
    }
    base.update({k: v for k, v in overrides.items() if v is not None})
    return {k: v for k, v in base.items() if overrides.get(k, "") is not None}


def problems(environ: dict[str, str]) -> list[str]:
    with pytest.raises(SettingsError) as info:
        load_settings(environ)
    return info.value.problems


def test_valid_settings_are_typed_and_normalised() -> None:
    settings = load_settings(env(SERVICENOW_READ_TIMEOUT_SECONDS="12.5", SERVICENOW_MAX_ATTEMPTS="3"))
    assert settings.alerts_queue == "alerts"
    assert settings.http.read_timeout == 12.5
    assert settings.http.max_attempts == 3
    connection = settings.connection("default")
    assert connection.instance_url == "https://dev12345.service-now.com"
    assert connection.secret_name("password") == "servicenow-default-password"


@pytest.mark.parametrize(
    "missing",
    [
        "ALERTS_QUEUE",
        "ALERTS_STORAGE",
        "TOKEN_REFRESH_SCHEDULE",
        "DEVICE_SYNC_SCHEDULE",
        "ALERT_INTAKE_SCHEDULE",
        "SERVICENOW_CONNECTIONS",
    ],
)
def test_each_required_setting_is_named_when_missing(missing: str) -> None:
    found = problems(env(**{missing: None}))
    assert len(found) == 1
    assert found[0].startswith(f"{missing} is not set; expected ")


def test_identity_based_storage_connection_is_accepted() -> None:
    environ = env(ALERTS_STORAGE=None)
    environ["ALERTS_STORAGE__queueServiceUri"] = "https://acct.queue.core.windows.net"
    assert load_settings(environ).alerts_queue == "alerts"


def test_every_problem_is_reported_at_once() -> None:
    found = problems(env(ALERTS_QUEUE="Alerts_Queue", DEVICE_SYNC_SCHEDULE="every hour", SERVICENOW_MAX_ATTEMPTS="x"))
    assert [p.split("=")[0].split(" ")[0] for p in found] == [
        "ALERTS_QUEUE",
        "DEVICE_SYNC_SCHEDULE",
        "SERVICENOW_MAX_ATTEMPTS",
    ]
    assert "expected six fields" in found[1]
    assert "expected a whole number from 1 to 20" in found[2]


def test_http_instance_url_is_refused_naming_the_connection() -> None:
    connection = {**CONNECTION, "instance_url": "http://dev12345.service-now.com"}
    (found,) = problems(env(SERVICENOW_CONNECTIONS=json.dumps([connection])))
    assert found.startswith("SERVICENOW_CONNECTIONS[default].instance_url='http://dev12345.service-now.com' is invalid")
    assert "https://" in found


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ("[{", "SERVICENOW_CONNECTIONS is not valid JSON"),
        ("[]", "must be a non-empty JSON list"),
        (
            json.dumps([{**CONNECTION, "auth": "kerberos"}]),
            "SERVICENOW_CONNECTIONS[default].auth='kerberos' is invalid",
        ),
        (json.dumps([{**CONNECTION, "username": ""}]), "SERVICENOW_CONNECTIONS[default].username is required"),
        (json.dumps([{**CONNECTION, "colour": "blue"}]), "SERVICENOW_CONNECTIONS[0] has unknown field(s) ['colour']"),
        (json.dumps([CONNECTION, CONNECTION]), "names must be unique; repeated: default"),
    ],
)
def test_malformed_connections_are_explained(document: str, expected: str) -> None:
    (found,) = problems(env(SERVICENOW_CONNECTIONS=document))
    assert expected in found


def test_proxy_credentials_never_appear_in_repr_or_errors() -> None:
    settings = load_settings(env(SERVICENOW_PROXY_URL="http://squid:Pr0xy-S3cret@10.1.2.3:3128"))
    connection = settings.connection("default")
    assert connection.proxy is not None and connection.proxy.url.endswith("@10.1.2.3:3128")
    assert "Pr0xy-S3cret" not in repr(settings)
    assert "squid:***@10.1.2.3:3128" in repr(connection)
    (found,) = problems(env(SERVICENOW_PROXY_URL="ftp://squid:Pr0xy-S3cret@10.1.2.3"))
    assert "Pr0xy-S3cret" not in found
    assert found.startswith("SERVICENOW_PROXY_URL=")


def test_ca_bundle_must_exist(tmp_path: Path) -> None:
    (found,) = problems(env(SERVICENOW_CA_BUNDLE=str(tmp_path / "missing.pem")))
    assert "expected the path of an existing PEM CA bundle file" in found
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    assert load_settings(env(SERVICENOW_CA_BUNDLE=str(bundle))).connection("default").ca_bundle == bundle


@pytest.mark.parametrize("minutes", ["4", "0", "-5", "soon"])
def test_sync_frequency_below_five_minutes_is_refused(minutes: str) -> None:
    (found,) = problems(env(DEVICE_SYNC_FREQUENCY_MINUTES=minutes))
    assert found.startswith(f"DEVICE_SYNC_FREQUENCY_MINUTES={minutes!r} is invalid; expected whole minutes, at least 5")


def test_device_sync_defaults_and_requirements() -> None:
    sync = load_settings(env()).device_sync
    assert (sync.enabled, sync.frequency_minutes, sync.connection) == (False, 60, "default")
    (found,) = problems(env(DEVICE_SYNC_ENABLED="true"))
    assert found.startswith("DEVICE_SYNC_ENABLED is true but no source reads devices; set DEFENDER_SOURCES")
    sync = load_settings(
        env(DEVICE_SYNC_ENABLED="true", CONSOLE_URL="https://console.plant/", DEVICE_SYNC_FREQUENCY_MINUTES="5")
    ).device_sync
    assert (sync.enabled, sync.console_url, sync.frequency_minutes) == (True, "https://console.plant", 5)
    (legacy,) = sync.sources  # the CONSOLE_* settings describe one console source, whose state keeps its old keys
    assert isinstance(legacy, ConsoleSourceSettings)
    assert (legacy.kind, legacy.name, legacy.url, legacy.legacy) == (
        "console",
        "console",
        "https://console.plant",
        True,
    )
    assert not legacy.alerts and load_settings(env(CONSOLE_URL="https://cm")).intake.sources == ()  # as it was


def test_a_claim_time_shorter_than_a_write_is_refused() -> None:
    from tests.support.settings import app_settings

    values = app_settings("UseDevelopmentStorage=true", FORWARDING_CLAIM_SECONDS="30")
    with pytest.raises(SettingsError, match=r"FORWARDING_CLAIM_SECONDS=30 must be longer .* = 65 s"):
        load_settings(values)
    assert load_settings({**values, "FORWARDING_CLAIM_SECONDS": "66"}).forwarding.claim_seconds == 66


def test_mistyped_settings_are_warned_at_start_up_with_the_likely_name() -> None:
    environ = env(
        SERVICENOW_REED_TIMEOUT_SECONDS="10",  # a typo of SERVICENOW_READ_TIMEOUT_SECONDS
        DEVICE_SYNC_FREQUENCY="30",  # close to DEVICE_SYNC_FREQUENCY_MINUTES
        FORWARDING_SOMETHING_ELSE="x",  # nothing like it
        SERVICENOW_DEFAULT_PASSWORD="p",  # the default connection's password kept in app settings: known
        ALERTS_STORAGE__clientId="id",  # the identity-based storage connection's own settings: known
        FUNCTIONS_WORKER_RUNTIME="python",  # not one of the product's prefixes: not its business
    )
    warnings = start_up_warnings(load_settings(environ), environ)
    unknown = [w for w in warnings if "is not one this app reads" in w]
    assert unknown == [
        "app setting DEVICE_SYNC_FREQUENCY is not one this app reads, so it has no effect; "
        "did you mean DEVICE_SYNC_FREQUENCY_MINUTES?",
        "app setting FORWARDING_SOMETHING_ELSE is not one this app reads, so it has no effect",
        "app setting SERVICENOW_REED_TIMEOUT_SECONDS is not one this app reads, so it has no effect; "
        "did you mean SERVICENOW_READ_TIMEOUT_SECONDS?",
    ]


def test_every_setting_read_is_declared() -> None:
    """The unknown-setting warning relies on the declared names; reading an undeclared name fails loudly."""
    full = env(
        SERVICENOW_PROXY_URL="http://proxy:3128",
        KEY_VAULT_URL="https://vault.vault.azure.net",
        DEVICE_SYNC_ENABLED="true",
        CONSOLE_URL="https://console",
        CONSOLE_PROXY_URL="http://proxy:3128",
    )
    assert load_settings(full).key_vault is not None
    assert "SERVICENOW_READ_TIMEOUT_SECONDS" in known_settings()


def test_a_setting_a_schema_declares_is_known_without_a_central_list(monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.platform import settings as reader_module
    from shared.platform.settings import Reader, declare
    from shared.settings import unknown_settings

    environ = env(FORWARDING_SHINY_NEW_SECONDS="5")
    settings = load_settings(environ)
    assert len(unknown_settings(settings, environ)) == 1
    with pytest.raises(AssertionError, match="declare FORWARDING_SHINY_NEW_SECONDS beside the schema"):
        Reader(environ).raw("FORWARDING_SHINY_NEW_SECONDS")
    monkeypatch.setattr(reader_module, "_declared", set(reader_module._declared))  # undone after the test
    declare("FORWARDING_SHINY_NEW_SECONDS")  # as a schema module does beside its reader
    assert Reader(environ).raw("FORWARDING_SHINY_NEW_SECONDS") == "5"
    assert unknown_settings(settings, environ) == []


def test_the_reach_back_is_read_once_for_the_intake_and_the_cloud_device_reads() -> None:
    settings = load_settings(env(ALERT_INTAKE_OVERLAP_MINUTES="90"))
    assert settings.intake.overlap_minutes == settings.device_sync.overlap_minutes == 90
    assert problems(env(ALERT_INTAKE_OVERLAP_MINUTES="-1")) == [
        "ALERT_INTAKE_OVERLAP_MINUTES='-1' is invalid; expected a number from 0 to 1440"
    ]


SUBSCRIPTION = "2f4a9838-26b7-47ee-be60-ccc1fdec5953"


def test_a_cloud_source_is_typed() -> None:
    sources = json.dumps([{"name": "cloud", "kind": "cloud", "subscriptions": [SUBSCRIPTION]}])
    settings = load_settings(env(DEFENDER_SOURCES=sources, AZURE_CLIENT_ID="client-1"))
    (source,) = settings.intake.sources
    assert isinstance(source, CloudSourceSettings)
    assert (source.name, source.subscriptions, source.resource_graph_url, source.credential, source.client_id) == (
        "cloud",
        (SUBSCRIPTION,),
        "https://management.azure.com",
        "managed_identity",
        "client-1",
    )
    assert load_settings(env()).intake.sources == ()  # none configured: the intake has nothing to do


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ({"name": "s", "kind": "plc", "subscriptions": [SUBSCRIPTION]}, "DEFENDER_SOURCES[s].kind='plc' is not"),
        ({"name": "s", "kind": "sensor", "subscriptions": [SUBSCRIPTION]}, "DEFENDER_SOURCES[s] has unknown field(s)"),
        ({"name": "s", "kind": "sensor", "url": "http://10.1.1.5"}, "DEFENDER_SOURCES[s].url='http://10.1.1.5' is"),
        ({"name": "s", "kind": "sensor", "url": "https://s", "alerts_api": "v3"}, "DEFENDER_SOURCES[s].alerts_api="),
        ({"name": "m", "kind": "console", "url": "https://cm", "alerts": 1}, "DEFENDER_SOURCES[m].alerts=1 is invalid"),
        (
            {"name": "c", "kind": "cloud", "subscriptions": [SUBSCRIPTION], "devices": "yes"},
            "DEFENDER_SOURCES[c].devic",
        ),
        ({"name": "c", "kind": "cloud", "subscriptions": ["not-a-guid"]}, "DEFENDER_SOURCES[c].subscriptions must be"),
        (
            {"name": "c", "kind": "cloud", "subscriptions": [SUBSCRIPTION], "credential": "emulator"},
            "DEFENDER_SOURCES[c].credential 'emulator' is for a localhost Resource Graph emulator only",
        ),
        ({"name": "C!", "kind": "cloud", "subscriptions": [SUBSCRIPTION]}, "DEFENDER_SOURCES[0].name='C!' is invalid"),
    ],
)
def test_malformed_sources_are_named(source: dict[str, object], expected: str) -> None:
    (problem,) = problems(env(DEFENDER_SOURCES=json.dumps([source])))
    assert problem.startswith(expected), problem


def test_the_three_kinds_of_source_are_typed() -> None:
    sources = [
        {"name": "cloud", "kind": "cloud", "subscriptions": [SUBSCRIPTION], "alerts": False},
        {"name": "line-4", "kind": "sensor", "url": "https://10.1.4.5/", "site": "Plant B", "zone": "Line 4"},
        {"name": "old-cm", "kind": "console", "url": "https://cm.plant", "data_source": "SG-MicrosoftDefenderIoT"},
    ]
    settings = load_settings(env(DEFENDER_SOURCES=json.dumps(sources), DEVICE_SYNC_ENABLED="true"))
    cloud, sensor, console = settings.device_sync.sources
    assert isinstance(sensor, SensorSourceSettings) and isinstance(console, ConsoleSourceSettings)
    assert (sensor.kind, sensor.url, sensor.token_secret, sensor.site, sensor.zone, sensor.alerts_api) == (
        "sensor",
        "https://10.1.4.5",
        "defender-sensor-line-4-token",
        "Plant B",
        "Line 4",
        "v2",
    )
    assert (console.kind, console.token_secret, console.data_source, console.legacy) == (
        "console",
        "defender-console-old-cm-token",
        "SG-MicrosoftDefenderIoT",
        False,
    )
    # The intake reads the sources with alerts: not the cloud one switched off.
    assert [s.name for s in settings.intake.sources] == ["line-4", "old-cm"]
    assert cloud.kind == "cloud" and not cloud.alerts


def test_a_console_described_twice_is_refused() -> None:
    sources = json.dumps([{"name": "console", "kind": "console", "url": "https://cm"}])
    (problem,) = problems(env(DEFENDER_SOURCES=sources, CONSOLE_URL="https://cm"))
    assert problem.startswith("CONSOLE_URL describes a source named 'console', and DEFENDER_SOURCES has one too")


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("SERVICENOW_CONNECTIONS", json.dumps([{**CONNECTION, "instance_url": "https://acme.service-now.example"}]),
         "SERVICENOW_CONNECTIONS[default].instance_url='https://acme.service-now.example' is a documentation"),
        ("CONSOLE_URL", "https://console.plant.example", "CONSOLE_URL='https://console.plant.example' is a"),
        ("DEFENDER_SOURCES", json.dumps([{"name": "s", "kind": "sensor", "url": "https://sensor.ot.example"}]),
         "DEFENDER_SOURCES[s].url='https://sensor.ot.example' is a documentation placeholder"),
    ],
)  # fmt: skip
def test_the_worked_examples_placeholder_hosts_are_refused(name: str, value: str, expected: str) -> None:
    (problem,) = problems(env(**{name: value}))
    assert problem.startswith(expected), problem


def test_the_run_time_is_host_json_function_timeout_less_twice_one_calls_longest() -> None:
    settings = load_settings(env())  # the repository's host.json: functionTimeout 00:10:00
    assert settings.run_seconds == 600 - 2 * (30 + 5 + 30)
    slower = load_settings(env(SERVICENOW_READ_TIMEOUT_SECONDS="60"))
    assert slower.run_seconds == 600 - 2 * (30 + 5 + 60)


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"functionTimeout": "01:00:00"}, 3600 - 130),
        ({"functionTimeout": "1.00:00:00"}, 86400 - 130),
        ({"functionTimeout": "-1"}, float("inf")),
        ({}, 1800 - 130),  # the host's default
    ],
)
def test_function_timeout_forms(tmp_path: Path, document: dict[str, str], expected: float) -> None:
    from shared.platform.settings import Reader
    from shared.settings import run_seconds

    host_json = tmp_path / "host.json"
    host_json.write_text(json.dumps(document))
    reader = Reader({})
    assert run_seconds(reader, host_json, 65) == expected and reader.problems == []


@pytest.mark.parametrize(
    ("value", "problem"),
    [("10 minutes", "host.json functionTimeout='10 minutes' is invalid"), ("00:02:00", "leaves -10 s of work")],
)
def test_a_function_timeout_that_cannot_bound_the_runs_is_named(tmp_path: Path, value: str, problem: str) -> None:
    from shared.platform.settings import Reader
    from shared.settings import run_seconds

    host_json = tmp_path / "host.json"
    host_json.write_text(json.dumps({"functionTimeout": value}))
    reader = Reader({})
    run_seconds(reader, host_json, 65)
    assert len(reader.problems) == 1 and problem in reader.problems[0]
