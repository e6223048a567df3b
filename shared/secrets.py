"""Secret values and where they come from.

A :class:`Secret` never shows its value in ``repr``/``str``, so it cannot leak through a log line,
an exception message or a dataclass repr by accident; code that needs the value calls ``reveal()``.

Secret stores are looked up by *secret name* (Key Vault naming: letters, digits, dashes). The
environment store serves local development and Azure app settings that hold Key Vault references;
the Key Vault store (tokens issue) serves production.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Protocol

SECRET_NAME_PATTERN = re.compile(r"^[0-9A-Za-z-]{1,127}$")


class Secret:
    """A secret string that refuses to print itself."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


class SecretNotFoundError(LookupError):
    """The named secret does not exist in the store."""


class SecretStore(Protocol):
    def get(self, name: str) -> Secret:
        """Return the current value of secret ``name`` or raise :class:`SecretNotFoundError`."""
        ...


def environment_variable_for(secret_name: str) -> str:
    """Map a Key Vault-style secret name to an app setting name: ``sn-default-password`` → ``SN_DEFAULT_PASSWORD``."""
    return secret_name.upper().replace("-", "_")


class EnvironmentSecretStore:
    """Secrets from app settings (environment), e.g. Key Vault references resolved by App Service."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ

    def get(self, name: str) -> Secret:
        variable = environment_variable_for(name)
        value = self._environ.get(variable)
        if not value:
            raise SecretNotFoundError(f"secret {name!r} not found: app setting {variable} is not set")
        return Secret(value)
