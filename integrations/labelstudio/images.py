"""Read a task's image for the ML backend, from disk where allowed, else from Label Studio over HTTP.

Sources, by the shape of the task's image URL:

* ``/data/local-files/?d=<rel>`` (relative, or absolute on the Label Studio host): read from disk
  under ``document_root`` when it is known (the server's ``LOCAL_FILES_DOCUMENT_ROOT``), else
  fetched from Label Studio like uploads.
* ``/data/upload/...`` and any other relative URL, or an http(s) URL on the Label Studio host:
  fetched from Label Studio with the backend's own credentials (a personal access token is
  exchanged for short-lived access tokens by the SDK; a legacy key is sent as ``Token <key>``).
* ``file://`` URLs and plain paths: read only under ``allowed_roots``.

Every disk read resolves symlinks and ``..`` first and refuses anything that ends up outside its
root. Other hosts are refused unless ``allow_external`` is set (then fetched with no credentials).
The API key never appears in messages or logs.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import requests

LOCAL_FILES_PREFIX = "/data/local-files"
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
FETCH_THREADS = 4  # disk and HTTP reads overlap; decoding happens later, in the model


class ImageFetchError(RuntimeError):
    """The image could not be read; the message says which and why (never a secret)."""


class UnsafePathError(ImageFetchError):
    """The path leaves the folder it must stay in."""


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or {"http": 80, "https": 443}.get(scheme)
    return scheme, (parts.hostname or "").lower(), port


def safe_join(root: str | Path, relative: str) -> Path:
    """``root/relative`` with symlinks and ``..`` resolved; :class:`UnsafePathError` if it leaves ``root``.

    An absolute ``relative`` is taken as is (as Label Studio does) and must lie under ``root`` too.
    """
    if "\x00" in relative:
        raise UnsafePathError(f"refused path {relative!r}: it contains a NUL byte")
    base = Path(root).resolve()
    candidate = (base / relative).resolve()
    if candidate != base and base not in candidate.parents:
        raise UnsafePathError(f"refused path {relative!r}: it resolves outside {base}")
    return candidate


def path_under_roots(path: str | Path, roots: list[str]) -> Path:
    """An absolute path, resolved, if it lies under one of ``roots``; else :class:`UnsafePathError`."""
    text = str(path)
    if "\x00" in text:
        raise UnsafePathError(f"refused path {text!r}: it contains a NUL byte")
    if not roots:
        raise UnsafePathError(f"refused local path {text!r}: no allowed roots are configured (ALLOOP_ALLOWED_ROOTS)")
    resolved = Path(text).resolve()
    for root in roots:
        base = Path(root).resolve()
        if resolved == base or base in resolved.parents:
            return resolved
    raise UnsafePathError(f"refused local path {text!r}: it resolves to {resolved}, outside the allowed roots "
                          f"{[str(Path(r).resolve()) for r in roots]} (ALLOOP_ALLOWED_ROOTS)")


class ImageFetcher:
    def __init__(self, document_root: str | None, label_studio_url: str | None, api_key: str | None,
                 allowed_roots: list[str], *, timeout: float = 30.0, allow_external: bool = False,
                 max_bytes: int = DEFAULT_MAX_BYTES):
        self.document_root = str(document_root) if document_root else None
        self.label_studio_url = label_studio_url.rstrip("/") if label_studio_url else None
        self._api_key = api_key or None
        self.allowed_roots = [str(r) for r in allowed_roots or []]
        self.timeout = timeout
        self.allow_external = allow_external
        self.max_bytes = max_bytes
        self._client = None
        self._client_lock = threading.Lock()
        self._session = requests.Session()

    def __repr__(self) -> str:  # no api key in reprs or logs
        return (f"ImageFetcher(document_root={self.document_root!r}, label_studio_url={self.label_studio_url!r}, "
                f"api_key={'***' if self._api_key else None}, allowed_roots={self.allowed_roots!r})")

    # -- public ------------------------------------------------------------------------------------

    def fetch(self, url_or_path: str) -> bytes:
        if not isinstance(url_or_path, str) or not url_or_path.strip():
            raise ImageFetchError(f"no image URL (got {url_or_path!r})")
        text = url_or_path.strip()
        parts = urlsplit(text)
        scheme = parts.scheme.lower()
        if scheme in ("http", "https"):
            if self.label_studio_url and _origin(text) == _origin(self.label_studio_url):
                return self._from_label_studio(parts.path, parts.query, text, absolute=text)
            if not self.allow_external:
                raise ImageFetchError(
                    f"refused {text}: not on the Label Studio host ({self.label_studio_url or 'LABEL_STUDIO_URL unset'}); "
                    "set ALLOOP_ALLOW_EXTERNAL_URLS=true to fetch other hosts (without credentials)")
            return self._get(text, headers={})
        if scheme == "file":
            if parts.netloc not in ("", "localhost"):
                raise ImageFetchError(f"refused {text}: file:// URLs on another host are not supported")
            return self._read(path_under_roots(unquote(parts.path), self.allowed_roots), text)
        if scheme and len(scheme) > 1:  # (one letter: a Windows drive)
            raise ImageFetchError(f"cannot read {text}: the {scheme}:// scheme is not supported; "
                                  "let Label Studio serve it (storage with presigned/proxied URLs)")
        if text.startswith("/data/") or text.startswith("data/"):
            return self._from_label_studio("/" + parts.path.lstrip("/"), parts.query, text)
        if Path(text).is_absolute():
            return self._read(path_under_roots(text, self.allowed_roots), text)
        return self._relative_path(text)

    # -- sources -----------------------------------------------------------------------------------

    def _from_label_studio(self, path: str, query: str, original: str, absolute: str | None = None) -> bytes:
        if path.rstrip("/") == LOCAL_FILES_PREFIX and self.document_root:
            values = parse_qs(query).get("d")
            if not values or not values[0]:
                raise ImageFetchError(f"cannot read {original}: a local-files URL needs ?d=<path under the document root>")
            return self._read(safe_join(self.document_root, values[0]), original)
        if not self.label_studio_url:
            raise ImageFetchError(f"cannot fetch {original}: LABEL_STUDIO_URL is not set"
                                  + ("" if path.startswith(LOCAL_FILES_PREFIX)
                                     else " (and only local-files URLs can be read from disk)"))
        url = absolute or self.label_studio_url + path + (f"?{query}" if query else "")
        return self._get(url, headers=self._auth_headers(), original=original)

    def _relative_path(self, text: str) -> bytes:
        for root in self.allowed_roots:
            candidate = safe_join(root, text)
            if candidate.exists():
                return self._read(candidate, text)
        raise ImageFetchError(f"cannot read {text!r}: a relative path that is not under any allowed root "
                              f"{self.allowed_roots} (ALLOOP_ALLOWED_ROOTS)")

    def _read(self, path: Path, original: str) -> bytes:
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise ImageFetchError(f"cannot read {original}: {path} does not exist") from None
        except OSError as exc:
            raise ImageFetchError(f"cannot read {original}: {exc.strerror or exc}") from None
        if not path.is_file():
            raise ImageFetchError(f"cannot read {original}: {path} is not a file")
        if size > self.max_bytes:
            raise ImageFetchError(f"cannot read {original}: {size} bytes is over the {self.max_bytes} byte limit")
        try:
            return path.read_bytes()
        except OSError as exc:
            raise ImageFetchError(f"cannot read {original}: {exc.strerror or exc}") from None

    def _get(self, url: str, headers: dict, original: str | None = None) -> bytes:
        try:
            response = self._session.get(url, headers=headers, timeout=self.timeout, stream=True)
        except requests.RequestException as exc:
            raise ImageFetchError(f"cannot fetch {original or url}: {exc.__class__.__name__}") from None
        with response:
            if response.status_code != 200:
                hint = " (check LABEL_STUDIO_API_KEY)" if response.status_code in (401, 403) else ""
                raise ImageFetchError(f"cannot fetch {original or url}: HTTP {response.status_code}{hint}")
            chunks, total = [], 0
            for chunk in response.iter_content(1 << 16):
                total += len(chunk)
                if total > self.max_bytes:
                    raise ImageFetchError(f"cannot fetch {original or url}: over the {self.max_bytes} byte limit")
                chunks.append(chunk)
        return b"".join(chunks)

    # -- credentials -------------------------------------------------------------------------------

    def _auth_headers(self) -> dict:
        """``Authorization`` for Label Studio: a fresh access token (PAT) or ``Token <legacy key>``."""
        if not self._api_key:
            return {}
        with self._client_lock:
            if self._client is None:
                from label_studio_sdk.client import LabelStudio

                try:
                    self._client = LabelStudio(base_url=self.label_studio_url, api_key=self._api_key)
                except Exception as exc:  # an expired or malformed JWT is refused at construction
                    raise ImageFetchError(f"the Label Studio API key was refused ({exc.__class__.__name__}); "
                                          "set LABEL_STUDIO_API_KEY to a valid personal access token") from None
            client = self._client
        try:
            # The SDK refreshes the access token when it expires (thread-safe on its side).
            headers = client._client_wrapper.get_headers()
        except Exception as exc:
            raise ImageFetchError(f"could not get a Label Studio access token ({exc.__class__.__name__}); "
                                  "check LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY") from None
        return {k: v for k, v in headers.items() if k.lower() == "authorization"}


def fetch_all(fetcher: "ImageFetcher", urls: list, *, image_key: str = "image",
              threads: int = FETCH_THREADS) -> list[tuple[bytes | None, str | None]]:
    """``(content, None)`` or ``(None, why)`` per URL, in order, read in parallel.

    One unreadable image never stops the others: every failure becomes that URL's error message.
    ``image_key``: the task data field the URLs come from, named when one is missing.
    """

    def one(url):
        if not url:
            return None, f"task data has no {image_key!r} field"
        try:
            return fetcher.fetch(str(url)), None
        except ImageFetchError as exc:
            return None, str(exc)
        except Exception as exc:  # noqa: BLE001 — a failure belongs to its task, not to the batch
            return None, f"{exc.__class__.__name__}: {str(exc)[:200]}"

    if not urls:
        return []
    with ThreadPoolExecutor(max_workers=min(threads, len(urls))) as pool:
        return list(pool.map(one, urls))
