"""An API token for the admin of a running Label Studio, obtained without a person at the browser.

Personal access tokens (the default kind) are created once per user and shown once, so a working
saved token is always reused; legacy `Token <key>` tokens are switched on for the organisation first.
"""

from __future__ import annotations

from typing import Callable, Optional

import requests

from integrations.labelstudio.settings import LabelStudioError, TokenKind


def _login(url: str, username: str, password: str) -> requests.Session:
    """A browser-like session: CSRF cookie from the login page, then the login form."""
    session = requests.Session()
    login_url = f"{url}/user/login/"
    session.get(login_url, timeout=30).raise_for_status()
    csrf = session.cookies.get("csrftoken", "")
    session.post(
        login_url,
        data={"email": username, "password": password, "csrfmiddlewaretoken": csrf},
        headers={"Referer": login_url},
        timeout=30,
    )
    if session.get(f"{url}/api/current-user/whoami", timeout=30).status_code != 200:
        raise LabelStudioError(
            f"Could not log in to {url} as {username}. The data dir was probably created with another "
            "password: pass the right one with --password, or stop the server and delete the data dir."
        )
    # DRF's session auth checks CSRF on unsafe methods.
    session.headers.update({"X-CSRFToken": session.cookies.get("csrftoken", csrf), "Referer": login_url})
    return session


def _create_personal_access_token(session: requests.Session, url: str, *, replace: bool) -> Optional[str]:
    """A new PAT, or None when the user already has one (the server keeps only one, shown once)."""
    response = session.post(f"{url}/api/token/", timeout=30)
    if response.status_code == 409 and replace:
        # The listing shows each token without its signature, which is enough to revoke it.
        for token in session.get(f"{url}/api/token/", timeout=30).json():
            session.post(f"{url}/api/token/blacklist/", json={"refresh": token["token"]}, timeout=30)
        response = session.post(f"{url}/api/token/", timeout=30)
    if response.status_code == 409:
        return None
    response.raise_for_status()
    return response.json()["token"]


def _legacy_token(session: requests.Session, url: str, say: Callable[[str], None]) -> str:
    # The env switch only applies to a new organisation; an existing one is switched over the API.
    jwt_settings = session.get(f"{url}/api/jwt/settings", timeout=30)
    jwt_settings.raise_for_status()
    if not jwt_settings.json().get("legacy_api_tokens_enabled"):
        say("Enabling legacy API tokens for the organisation")
        session.post(
            f"{url}/api/jwt/settings",
            json={**jwt_settings.json(), "legacy_api_tokens_enabled": True},
            timeout=30,
        ).raise_for_status()
    response = session.get(f"{url}/api/current-user/token", timeout=30)
    response.raise_for_status()
    return response.json()["token"]


def whoami(url: str, api_key: str):
    """The SDK's view of the token's user; raises if the token does not work."""
    from label_studio_sdk.client import LabelStudio  # project venv; the SDK exchanges PATs itself

    return LabelStudio(base_url=url, api_key=api_key).users.whoami()


def token_works(url: str, api_key: str) -> bool:
    if not api_key:
        return False
    try:
        whoami(url, api_key)
        return True
    except Exception:  # the SDK raises its own ApiError subclasses; any failure means "not usable"
        return False


def obtain_token(
    url: str,
    username: str,
    password: str,
    *,
    kind: TokenKind,
    saved_key: str = "",
    replace: bool = False,
    say: Callable[[str], None] = lambda message: None,
) -> str:
    """An API token of `kind` for the admin, reusing `saved_key` when it still works."""
    if saved_key and not replace and token_works(url, saved_key):
        return saved_key
    session = _login(url, username, password)
    if kind == "legacy":
        return _legacy_token(session, url, say)
    token = _create_personal_access_token(session, url, replace=replace)
    if token is None:
        raise LabelStudioError(
            f"{username} already has a personal access token and it is not in the saved settings "
            "(the server shows a token only once). To recover: run `start --replace-token` (revokes the "
            "old token and creates a new one), or create one in the UI (Account & Settings > Personal "
            "Access Token) and put it in the settings file, or use `--legacy-token`, or stop the server "
            "and delete the data dir."
        )
    return token
