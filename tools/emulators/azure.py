"""What the Azure service emulators (Key Vault, Resource Graph) answer alike: the ARM error envelope, and
the bearer token every request must carry (any non-empty one: the token flow is Entra ID's)."""

from __future__ import annotations

from tools.emulators.httpserver import Reply


def azure_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Reply:
    return Reply(
        status,
        {"error": {"code": code, "message": message}},
        headers or {},
        content_type="application/json; charset=utf-8",
    )


def has_bearer_token(headers: dict[str, str]) -> bool:
    value = headers.get("authorization", "")
    return value.lower().startswith("bearer ") and bool(value[7:].strip())
