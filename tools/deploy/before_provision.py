"""Before provisioning, as azd's preprovision hook and infra/deploy.sh run it: refuse what Azure would refuse
late (or deploy broken), tell the template who is deploying, and register what the deployment needs.

- **Parameters** (read as the deployment will see them: a ``.bicepparam`` file, or azd's
  ``main.parameters.json`` with its environment): ``sensorNetworkPrefixes`` without ``sensorNextHopIp``
  would be a route to the sensors without a next hop, which Azure refuses mid-deployment. Refused here,
  before any Azure call, naming both.
- **Who deploys**: the signed-in principal's object id and type (``User`` or ``ServicePrincipal``, from its
  token's ``idtyp`` claim), so that a pipeline's service principal gets its deployer roles rather than a
  "principal type mismatch". Under azd: ``azd env set AZURE_PRINCIPAL_TYPE``; with ``--print-principal``
  the two words are printed for infra/deploy.sh.
- **Resource providers**: VNet integration (``networkIsolation`` or ``sensorNetworkPrefixes``) needs
  ``Microsoft.App`` registered in the subscription (learn: flex-consumption-plan, Considerations), which a
  template that declares no ``Microsoft.App`` resource never does. Registering is idempotent; this waits
  until Azure says ``Registered``.

Run: ``.venv/bin/python -m tools.deploy.before_provision [--parameters FILE] [--print-principal]``
(``AZURE_SUBSCRIPTION_ID`` names the subscription; azd sets it).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess  # nosec B404 - runs azd, by name, with fixed arguments
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import requests
from azure.core.exceptions import ClientAuthenticationError

from tools.bicep import BicepError, Deployment, azd_parameter_values, bicepparam_values

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "infra" / "bicep" / "main.bicep"
AZD_PARAMETERS = ROOT / "infra" / "bicep" / "main.parameters.json"
ARM = "https://management.azure.com"
PROVIDERS_API = "2021-04-01"


class Credential(Protocol):
    def get_token(self, *scopes: str) -> Any: ...


class PreflightError(Exception):
    """What stops the deployment before it starts; the message says what to change."""


def parameters(path: Path | None, environment: Mapping[str, str]) -> dict[str, Any]:
    """The parameter values the deployment will get: from a .bicepparam file, else as azd passes them."""
    try:
        if path is not None:
            if not path.exists():
                raise PreflightError(f"{path} not found")
            return bicepparam_values(path)
        return azd_parameter_values(AZD_PARAMETERS, TEMPLATE, environment)
    except (BicepError, ValueError, KeyError) as exc:
        raise PreflightError(f"{path or AZD_PARAMETERS}: cannot read the parameters: {exc}") from None


def refusals(values: Mapping[str, Any]) -> list[str]:
    """Every parameter combination Azure would refuse or deploy broken, each as one line."""
    problems = []
    if values.get("sensorNetworkPrefixes") and not values.get("sensorNextHopIp"):
        problems.append(
            "sensorNetworkPrefixes is set but sensorNextHopIp is empty: the route to the sensors' networks "
            "needs a next hop (the private IP of the hub's firewall or VPN appliance); set sensorNextHopIp, "
            "or leave sensorNetworkPrefixes empty"
        )
    return problems


def providers_needed(values: Mapping[str, Any]) -> list[str]:
    """The resource providers the deployment needs registered beforehand, as the template decides it."""
    deployment = Deployment(TEMPLATE, dict(values), missing="unknown")
    return ["Microsoft.App"] if deployment.variable("vnetIntegration") is True else []


def token_claims(token: str) -> dict[str, Any]:
    """The claims of an access token (read, not verified: it is the caller's own, fresh from Entra ID)."""
    try:
        payload = token.split(".")[1]
        claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError) as exc:
        raise PreflightError(f"the sign-in's token is not a JWT ({type(exc).__name__})") from None
    return claims


def principal(claims: Mapping[str, Any]) -> tuple[str, str]:
    """(object id, principal type) of whoever the token is for: ``idtyp`` is ``app`` for a service principal
    (learn: entra identity-platform access-token-claims-reference)."""
    kind = "ServicePrincipal" if claims.get("idtyp") == "app" else "User"
    return str(claims.get("oid", "")), kind


def register(
    namespace: str,
    subscription: str,
    token: str,
    *,
    arm: str = ARM,
    verify: str | bool = True,
    timeout: float = 600.0,
    poll: float = 5.0,
    say: Callable[[str], None] = print,
) -> None:
    """Register a resource provider and wait until it is (registering again is harmless)."""
    session = requests.Session()
    session.trust_env = False
    session.headers["Authorization"] = f"Bearer {token}"
    url = f"{arm.rstrip('/')}/subscriptions/{subscription}/providers/{namespace}"
    answer = session.get(url, params={"api-version": PROVIDERS_API}, verify=verify, timeout=30)
    _check(answer, f"reading resource provider {namespace}")
    if answer.json().get("registrationState") == "Registered":
        say(f"resource provider {namespace}: registered")
        return
    _check(
        session.post(f"{url}/register", params={"api-version": PROVIDERS_API}, verify=verify, timeout=30),
        f"registering resource provider {namespace}",
    )
    say(f"resource provider {namespace}: registering (VNet integration needs it)…")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = session.get(url, params={"api-version": PROVIDERS_API}, verify=verify, timeout=30)
        _check(answer, f"reading resource provider {namespace}")
        if answer.json().get("registrationState") == "Registered":
            say(f"resource provider {namespace}: registered")
            return
        time.sleep(poll)
    raise PreflightError(
        f"resource provider {namespace} is still not registered after {timeout:.0f} s; check "
        f"`az provider show -n {namespace}` and run this again"
    )


def _check(answer: requests.Response, doing: str) -> None:
    if answer.status_code >= 400:
        try:
            error = answer.json()["error"]
            detail = f"{error['code']}: {error['message']}"
        except (ValueError, KeyError, TypeError):
            detail = answer.reason
        raise PreflightError(f"{doing} failed: HTTP {answer.status_code} {detail}")


def default_credential() -> Credential:
    """Whoever azd or the Azure CLI is signed in as."""
    from azure.identity import AzureCliCredential, AzureDeveloperCliCredential, ChainedTokenCredential  # noqa: PLC0415

    credential: Credential = ChainedTokenCredential(AzureDeveloperCliCredential(), AzureCliCredential())
    return credential


def azd_env_set(name: str, value: str) -> None:
    subprocess.run(["azd", "env", "set", name, value], check=True)  # noqa: S603, S607  # nosec B603 B607


def run(
    values: Mapping[str, Any],
    *,
    credential: Credential,
    subscription: str,
    arm: str = ARM,
    verify: str | bool = True,
    set_environment: Callable[[str, str], None] | None = None,
    say: Callable[[str], None] = print,
) -> tuple[str, str]:
    """The checks and steps above, once the parameters pass; returns the deployer's (object id, type)."""
    token = credential.get_token(f"{arm.rstrip('/')}/.default").token
    object_id, kind = principal(token_claims(token))
    if set_environment is not None:
        set_environment("AZURE_PRINCIPAL_TYPE", kind)
        say(f"deploying as a {kind} ({object_id}): AZURE_PRINCIPAL_TYPE={kind}")
    needed = providers_needed(values)
    if needed and not subscription:
        raise PreflightError("AZURE_SUBSCRIPTION_ID is not set: the subscription to register providers in")
    for namespace in needed:
        register(namespace, subscription, token, arm=arm, verify=verify, say=say)
    return object_id, kind


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.deploy.before_provision", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--parameters", type=Path, help="a .bicepparam file (default: azd's main.parameters.json)")
    parser.add_argument("--print-principal", action="store_true", help="print '<object id> <type>' for scripts")
    args = parser.parse_args(argv)
    say: Callable[[str], None] = (lambda line: print(line, file=sys.stderr)) if args.print_principal else print
    try:
        values = parameters(args.parameters, os.environ)
        problems = refusals(values)
        if problems:
            for problem in problems:
                print(f"{args.parameters or AZD_PARAMETERS}: {problem}", file=sys.stderr)
            return 2
        object_id, kind = run(
            values,
            credential=default_credential(),
            subscription=os.environ.get("AZURE_SUBSCRIPTION_ID", ""),
            set_environment=None if args.parameters else azd_env_set,
            say=say,
        )
    except PreflightError as exc:
        print(f"before provisioning: {exc}", file=sys.stderr)
        return 2
    except requests.RequestException as exc:
        print(f"before provisioning: Azure Resource Manager unreachable ({type(exc).__name__})", file=sys.stderr)
        return 2
    except ClientAuthenticationError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(
            f"before provisioning: cannot sign in to Azure ({first}); run `azd auth login` or `az login`",
            file=sys.stderr,
        )
        return 2
    except subprocess.CalledProcessError as exc:
        print(f"before provisioning: `{' '.join(exc.cmd)}` failed (exit {exc.returncode})", file=sys.stderr)
        return 2
    if args.print_principal:
        print(object_id, kind)
    return 0


if __name__ == "__main__":
    sys.exit(main())
