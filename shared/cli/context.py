"""What every operator command shares: the app settings (read on first use), storage clients that give up
quickly, input files read with clear errors, and the one-line messages for failures."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from azure.core.exceptions import AzureError, HttpResponseError
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueServiceClient

from shared.platform.storage import blob_service, queue_service
from shared.settings import Settings, load_settings, unknown_settings

# An operator waits at a terminal: a few quick retries, not the SDK's minute of back-off.
QUICK_STORAGE: dict[str, Any] = {"retry_total": 2, "initial_backoff": 1, "increment_base": 2, "connection_timeout": 5}


class CommandError(click.ClickException):
    """A failure the user can act on; shown as one line, exit code 1."""

    def format_message(self) -> str:
        return self.message


@dataclass
class Operator:
    """The commands' shared state. Settings are read when a command first needs them."""

    _settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings()
            for warning in unknown_settings(self._settings, os.environ):
                click.echo(f"warning: {warning}", err=True)
        return self._settings

    def queues(self) -> QueueServiceClient:
        return queue_service(self.settings.alerts_storage, **QUICK_STORAGE)

    def blobs(self) -> BlobServiceClient:
        return blob_service(self.settings.alerts_storage, **QUICK_STORAGE)


pass_operator = click.make_pass_decorator(Operator, ensure=True)


def load_local_settings(path: Path) -> None:
    """Put a local.settings.json's ``Values`` in the environment, as ``func start`` does."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CommandError(f"--settings {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"--settings {path}: cannot read it ({exc})") from None
    except json.JSONDecodeError as exc:
        raise CommandError(
            f"--settings {path}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from None
    values = document.get("Values") if isinstance(document, dict) else None
    if not isinstance(values, dict):
        raise CommandError(f"--settings {path}: expected an object with a 'Values' object, as local.settings.json has")
    os.environ.update({str(k): str(v) for k, v in values.items()})


def read_input(path: str, what: str) -> bytes:
    """A file the user named; one clear line when it cannot be read."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise CommandError(f"{path}: no such file ({what})") from None
    except IsADirectoryError:
        raise CommandError(f"{path}: is a folder, not a file ({what})") from None
    except OSError as exc:
        raise CommandError(f"{path}: cannot read it: {exc.strerror}") from None


def storage_problem(exc: AzureError) -> str:
    """One line for a storage failure: where it could not reach, or what it refused, and what to check."""
    if isinstance(exc, HttpResponseError) and exc.status_code is not None:
        code = getattr(exc, "error_code", None) or exc.reason or ""
        hint = ""
        if exc.status_code == 403:
            hint = "; your sign-in needs a data role on the storage account (see the README's roles)"
        return f"the storage account refused the request: HTTP {exc.status_code} {code}{hint}"
    text = str(exc.message if hasattr(exc, "message") else exc)
    found = re.search(r"host='([^']+)', port=(\d+)", text)
    where = f"{found.group(1)}:{found.group(2)}" if found else "the storage account"
    reason = "connection refused" if "refused" in text.lower() else text.splitlines()[0][:200]
    hint = (
        "; is Azurite running? (`make run` or `make emulators` starts it)"
        if found
        and found.group(1)
        in (
            "127.0.0.1",
            "localhost",
        )
        else ""
    )
    return f"cannot reach storage at {where}: {reason}{hint}"
