"""Before provisioning: refusals before any Azure call, who deploys, and Microsoft.App registered for VNet
integration — against the Resource Manager emulator over real sockets (azd and Entra ID cannot run here, so
the token is one shaped as Entra ID issues them)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from azure.core.credentials import AccessToken

from tests.conftest import ROOT
from tools.deploy import before_provision
from tools.emulators.resourcegraph import ResourceGraphEmulator

pytestmark = pytest.mark.integration
SUBSCRIPTION = "00000000-0000-0000-0000-00000000d1f0"


def jwt(**claims: Any) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part(claims)}.signature"


class StaticCredential:
    def __init__(self, token: str) -> None:
        self.token = token
        self.scopes: list[str] = []

    def get_token(self, *scopes: str) -> AccessToken:
        self.scopes += scopes
        return AccessToken(self.token, 2_000_000_000)


def bicepparam(tmp_path: Path, **overrides: str) -> Path:
    text = (ROOT / "infra" / "bicep" / "main.example.bicepparam").read_text()
    for name, value in overrides.items():
        text = "\n".join(line for line in text.splitlines() if not line.startswith(f"param {name} "))
        text += f"\nparam {name} = {value}\n"
    path = tmp_path / "my.bicepparam"
    path.write_text(text)
    return path


def test_a_sensor_route_without_a_next_hop_is_refused_before_any_azure_call(tmp_path: Path) -> None:
    parameters = bicepparam(tmp_path, sensorNextHopIp="''")
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "tools.deploy.before_provision", "--parameters", str(parameters)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PATH": "/usr/bin:/bin", "AZURE_SUBSCRIPTION_ID": SUBSCRIPTION},  # no az, no azd
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "sensorNetworkPrefixes" in lines[0] and "sensorNextHopIp" in lines[0]
    assert "Traceback" not in done.stderr


def test_both_or_neither_pass(tmp_path: Path) -> None:
    assert before_provision.refusals(before_provision.parameters(bicepparam(tmp_path), {})) == []
    none = before_provision.parameters(bicepparam(tmp_path, sensorNetworkPrefixes="[]", sensorNextHopIp="''"), {})
    assert before_provision.refusals(none) == []


@pytest.mark.parametrize(
    ("claims", "kind"),
    [
        ({"oid": "u-1", "idtyp": "user", "upn": "ana@contoso.com"}, "User"),
        ({"oid": "sp-1", "idtyp": "app"}, "ServicePrincipal"),
    ],
)
def test_the_principal_type_is_the_signed_in_principals(
    graph: ResourceGraphEmulator, claims: dict[str, str], kind: str
) -> None:
    values = before_provision.parameters(None, {"AZURE_ENV_NAME": "dfiot-dev"})  # azd's parameters, no VNet
    told: dict[str, str] = {}
    who = before_provision.run(
        values,
        credential=StaticCredential(jwt(**claims)),
        subscription=SUBSCRIPTION,
        arm=graph.url,
        verify=str(graph.ca_pem),
        set_environment=told.__setitem__,
        say=lambda _: None,
    )
    assert who == (claims["oid"], kind)
    assert told == {"AZURE_PRINCIPAL_TYPE": kind}
    assert graph.providers == {}  # no VNet integration: nothing registered


def test_vnet_integration_registers_microsoft_app_and_waits_until_registered(graph: ResourceGraphEmulator) -> None:
    said: list[str] = []
    values = before_provision.parameters(None, {"AZURE_ENV_NAME": "dfiot", "NETWORK_ISOLATION": "true"})

    def provision() -> None:
        before_provision.run(
            values,
            credential=StaticCredential(jwt(oid="sp-1", idtyp="app")),
            subscription=SUBSCRIPTION,
            arm=graph.url,
            verify=str(graph.ca_pem),
            say=said.append,
        )

    provision()
    assert graph.providers == {"microsoft.app": "Registered"}
    assert said[-1] == "resource provider Microsoft.App: registered"
    provision()  # again: already registered, so no second registration
    assert graph.stats["providers.post"] == 1


def test_sensor_networks_alone_turn_vnet_integration_on(tmp_path: Path) -> None:
    values = before_provision.parameters(bicepparam(tmp_path), {})
    assert values["sensorNetworkPrefixes"] and not values.get("networkIsolation")
    assert before_provision.providers_needed(values) == ["Microsoft.App"]
    assert before_provision.providers_needed(before_provision.parameters(None, {"AZURE_ENV_NAME": "x"})) == []


def test_a_refused_registration_is_one_line(graph: ResourceGraphEmulator) -> None:
    graph.faults.configure({"fail_next": [{"status": 403}]})
    with pytest.raises(before_provision.PreflightError, match="HTTP 403"):
        before_provision.register("Microsoft.App", SUBSCRIPTION, jwt(oid="x"), arm=graph.url, verify=str(graph.ca_pem))


def fake_az(tmp_path: Path, failures: int, error: str) -> Path:
    """An `az` that fails `failures` times with `error`, then succeeds, recording each call."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "az"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> "{tmp_path}/calls"\n'
        f'n=$(wc -l < "{tmp_path}/calls")\n'
        f'if [ "$n" -le {failures} ]; then echo "{error}" >&2; exit 1; fi\n'
    )
    script.chmod(0o755)
    return bin_dir


def grant(tmp_path: Path, bin_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603
        ["sh", str(ROOT / "infra" / "grant-defender-reader.sh"), SUBSCRIPTION, "westeurope", "principal-1", "true"],  # noqa: S607
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "GRANT_RETRY_SECONDS": "0", "GRANT_ATTEMPTS": "4"},
    )


def test_the_custom_role_grant_waits_for_the_definition_to_replicate(tmp_path: Path) -> None:
    replicating = (
        "ERROR: {'code': 'RoleDefinitionDoesNotExist', 'message': 'The specified role definition does not exist.'}"
    )
    done = grant(tmp_path, fake_az(tmp_path, 2, replicating))
    assert done.returncode == 0, done.stderr
    calls = (tmp_path / "calls").read_text().splitlines()
    assert len(calls) == 3 and all("deployment sub create" in c and "writeBack=true" in c for c in calls)
    assert done.stderr.count("not visible yet") == 2


def test_the_custom_role_grant_stops_at_another_error_and_after_its_tries(tmp_path: Path) -> None:
    other = grant(tmp_path, fake_az(tmp_path, 5, "ERROR: AuthorizationFailed"))
    assert other.returncode == 1 and "AuthorizationFailed" in other.stderr
    assert len((tmp_path / "calls").read_text().splitlines()) == 1
    (tmp_path / "calls").unlink()
    (tmp_path / "bin" / "az").unlink()
    (tmp_path / "bin").rmdir()
    never = grant(tmp_path, fake_az(tmp_path, 10, "RoleDefinitionDoesNotExist"))
    assert never.returncode == 1 and "run this again in a few minutes" in never.stderr
    assert len((tmp_path / "calls").read_text().splitlines()) == 4
