"""The one place that reads the Label Studio SDK's credentials for raw HTTP calls."""

from __future__ import annotations


def authorization_headers(client) -> dict:
    """Only the ``Authorization`` header of the SDK's current credentials (a personal access token's
    short-lived access token, refreshed by the SDK when it expires, or a legacy token).

    The SDK has no public accessor for them, so this reads its client wrapper; if an SDK upgrade
    moves it, this is the one function to change."""
    headers = client._client_wrapper.get_headers()
    return {k: v for k, v in headers.items() if k.lower() == "authorization"}
