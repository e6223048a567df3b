"""ServiceNow OAuth tokens kept fresh in Key Vault (tokens issue)."""


def refresh_all_connections() -> None:
    """Renew the access tokens of every OAuth connection before they expire.

    Not built yet: the tokens issue implements OAuth connections, Key Vault storage and refresh.
    """
    raise NotImplementedError("token refresh is not implemented yet; no token was renewed")
