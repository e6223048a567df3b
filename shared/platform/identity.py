"""Which Azure credential the app signs in to storage and Key Vault with.

In Azure: the user-assigned managed identity (its client id named by a setting). On a developer's
machine: ``DefaultAzureCredential`` (``az login`` and the like). For the local Key Vault emulator only:
a fixed token, which the settings refuse for any other vault.
"""

from __future__ import annotations

import time
from typing import Any

from shared.platform.imports import late_imports


class LocalEmulatorCredential:
    """A token for the local Key Vault emulator only (settings refuse it for any other vault URL)."""

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        with late_imports:
            from azure.core.credentials import AccessToken  # noqa: PLC0415 - only used locally

        return AccessToken("local-key-vault-emulator", int(time.time()) + 3600)


def azure_credential(client_id: str | None, *, managed_identity: bool | None = None) -> Any:
    """The managed identity ``client_id`` names (or, with ``managed_identity`` False, the developer's sign-in).

    ``managed_identity`` None: the managed identity when a client id is given, else the developer's sign-in.
    """
    # azure.identity is heavy: imported when a credential is first needed, never at start-up. Its credentials
    # import their transports when built, so they are built under the lock too.
    with late_imports:
        from azure.identity import DefaultAzureCredential, ManagedIdentityCredential  # noqa: PLC0415

        if managed_identity if managed_identity is not None else bool(client_id):
            return ManagedIdentityCredential(client_id=client_id)
        return DefaultAzureCredential()


def credential_named(kind: str, client_id: str | None) -> Any:
    """The credential a ``*_CREDENTIAL`` setting names: ``managed_identity``, ``default`` (the developer's
    sign-in) or ``emulator`` (a local emulator's fixed token; the settings allow it for localhost only)."""
    if kind == "emulator":
        return LocalEmulatorCredential()
    return azure_credential(client_id, managed_identity=kind == "managed_identity")
