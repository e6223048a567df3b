"""The steps after provisioning, as azd's postprovision hook and infra/deploy.sh run them: sign each
ServiceNow connection in (asking for the password; it is used once and never stored), apply a starter
rules file when none is applied yet, then ``verify``.

It reads what provisioning produced from the environment (azd exports the template's outputs; deploy.sh
exports them from ``az deployment group show``): ``KEY_VAULT_URL``, ``ALERTS_QUEUE``,
``ALERTS_STORAGE__queueServiceUri`` / ``__tableServiceUri`` / ``__blobServiceUri`` and
``SERVICENOW_CONNECTIONS``; the operator's own sign-in (``az login``) does the rest.

Run: ``.venv/bin/python -m tools.deploy.after_provision [--rules FILE] [--skip-verify]``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
STARTER_RULES = ROOT / "examples" / "forwarding-rules.yaml"
# What the operator commands need beyond the template's outputs (the app's own schedules, unused here).
DEFAULTS = {
    "KEY_VAULT_CREDENTIAL": "default",
    "TOKEN_REFRESH_SCHEDULE": "0 */10 * * * *",  # a schedule, not a secret  # nosec B105
    "DEVICE_SYNC_SCHEDULE": "0 */5 * * * *",
    "ALERT_INTAKE_SCHEDULE": "0 */1 * * * *",
}


def steps(rules: Path, verify: bool) -> list[tuple[str, list[str]]]:
    """The operator commands, in order, each with what it is for."""
    from shared.settings import load_settings  # noqa: PLC0415 - after the environment is set

    settings = load_settings()
    planned: list[tuple[str, list[str]]] = []
    for connection in settings.connections:
        if connection.auth == "oauth" and not signed_in(settings, connection):
            piped = [] if sys.stdin.isatty() else ["--password-stdin"]  # a pipeline hands the password in
            planned.append((f"sign in connection '{connection.name}'", ["connect", connection.name, *piped]))
    planned.append(("the forwarding rules", ["rules", "apply", str(rules), "--if-none"]))
    if verify:
        planned.append(("verify the deployment", ["verify"]))
    return planned


def signed_in(settings: Any, connection: Any) -> bool:
    """A refresh token in Key Vault that outlives the warning period: no need to ask for the password."""
    from datetime import UTC, datetime  # noqa: PLC0415

    from shared.app import key_vault  # noqa: PLC0415
    from shared.platform.secrets import SecretNotFoundError  # noqa: PLC0415

    try:
        token = key_vault(settings).read(connection.secret_name("refresh-token"), fresh=True)
    except SecretNotFoundError:
        return False
    if token.expires_on is None:
        return True
    return bool((token.expires_on - datetime.now(UTC)).days > settings.tokens.warn_days)


def ask(prompt: str) -> str:
    """A secret from the person at the terminal (hidden), or the next line of a pipe."""
    if sys.stdin.isatty():
        import getpass  # noqa: PLC0415

        return getpass.getpass(f"{prompt}: ")
    return sys.stdin.readline().rstrip("\n")


def ensure_client_secrets() -> None:
    """Each OAuth connection's client secret in the new vault, asked for once when it is not there yet
    (it is meant to be kept; the user's password, asked for by ``connect``, is not)."""
    from shared.app import key_vault  # noqa: PLC0415
    from shared.platform.secrets import Secret, SecretNotFoundError  # noqa: PLC0415
    from shared.servicenow.settings import OAUTH_MODES  # noqa: PLC0415
    from shared.settings import load_settings  # noqa: PLC0415

    settings = load_settings()
    oauth = [c for c in settings.connections if c.auth in OAUTH_MODES]
    store = key_vault(settings) if oauth else None
    for connection in oauth:
        assert store is not None
        name = connection.secret_name("client-secret")
        try:
            store.get(name)
        except SecretNotFoundError:
            value = ask(f"OAuth client secret of connection '{connection.name}' (kept in Key Vault as {name})")
            if not value:
                raise SystemExit(f"no client secret given for connection '{connection.name}'") from None
            store.write(name, Secret(value), content_type="text/plain")
            print(f"== stored the client secret of connection '{connection.name}' in Key Vault as {name}")


def run(
    environ: Mapping[str, str], rules: Path, *, verify: bool, command: Callable[[list[str]], int] | None = None
) -> int:
    for name, value in DEFAULTS.items():
        os.environ.setdefault(name, value)
    os.environ.update({k: v for k, v in environ.items() if v})
    if command is None:
        from shared.cli import main  # noqa: PLC0415 - the environment first

        command = main
    ensure_client_secrets()
    for what, argv in steps(rules, verify):
        print(f"== {what}: python -m shared {' '.join(argv)}", flush=True)
        code = command(argv)
        if code:
            print(f"== {what} failed (exit {code}); fix it and run this again: it repeats only what is needed")
            return code
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.deploy.after_provision", description=__doc__)
    parser.add_argument("--rules", type=Path, default=STARTER_RULES, help="applied when no rules are applied yet")
    parser.add_argument("--skip-verify", action="store_true")
    args = parser.parse_args(argv)
    return run(os.environ, args.rules, verify=not args.skip_verify)


if __name__ == "__main__":
    sys.exit(main())
