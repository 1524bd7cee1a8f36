"""Read a task's image for the ML backend and the loop, from disk where allowed, else from Label Studio.

Sources, by the shape of the task's image URL:

* ``/data/local-files/?d=<rel>`` (relative, or absolute on the Label Studio host): read from disk
  under ``document_root`` when it is known (the server's ``LOCAL_FILES_DOCUMENT_ROOT``), else
  fetched from Label Studio like uploads.
* Label Studio's media paths (``/data/upload/...``, ``/data/local-files/?d=...``, the storage
  resolve URLs ``/tasks/<id>/resolve/?fileuri=...`` and ``/projects/<id>/resolve/?fileuri=...``),
  relative or absolute on the configured Label Studio origin: fetched from Label Studio with the
  backend's own credentials. ``s3://``, ``gs://`` and ``azure-blob://`` URIs of a known task are
  fetched through that task's resolve URL.
* ``file://`` URLs and plain paths: read only under ``allowed_roots``.

Credentials go only to the configured origin and only for media paths. The URL that is fetched is
rebuilt from the configured base URL and the checked path and query, never taken from the task;
URLs with backslashes, userinfo, percent-encoded separators or control characters are refused, and
a redirect is followed only within the origin (off it, only with ``allow_external`` and without
credentials). Every disk read resolves symlinks and ``..`` first and refuses anything that ends up
outside its root. The API key never appears in messages or logs.
"""

from __future__ import annotations

import base64
import posixpath
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import parse_qs, parse_qsl, quote, unquote, urlencode, urljoin, urlsplit

import requests

from integrations.labelstudio.auth import authorization_headers

LOCAL_FILES_PREFIX = "/data/local-files"
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
FETCH_THREADS = 4  # disk and HTTP reads overlap; decoding happens later, in the model
MAX_REDIRECTS = 3
#: Paths under which Label Studio serves task media; nothing else of the server is fetched with its token.
MEDIA_PATHS = (re.compile(r"^/data/upload/[^?#]+$"), re.compile(r"^/data/local-files/?$"),
               re.compile(r"^/(tasks|projects)/\d+/resolve/?$"))
CLOUD_SCHEMES = ("s3", "gs", "azure-blob")
_NETLOC = re.compile(r"^([a-z0-9.-]+|\[[0-9a-f:.]+\])(:\d{1,5})?$")
_ENCODED_SEPARATORS = re.compile(r"%(5c|2f|00)", re.IGNORECASE)


class ImageFetchError(RuntimeError):
    """The image could not be read; the message says which and why (never a secret)."""


class UnsafePathError(ImageFetchError):
    """The path leaves the folder it must stay in."""


class RefusedURLError(ImageFetchError):
    """The URL is malformed or points somewhere credentials must not go."""


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or {"http": 80, "https": 443}.get(scheme)
    return scheme, (parts.hostname or "").lower(), port


def check_url_text(text: str) -> None:
    """:class:`RefusedURLError` for what parsers disagree on: the Python and ``requests`` parsers (and
    servers) read backslashes, userinfo, control characters and encoded separators differently."""
    if "\\" in text:
        raise RefusedURLError(f"refused {text!r}: it contains a backslash")
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise RefusedURLError(f"refused {text!r}: it contains control characters")
    if _ENCODED_SEPARATORS.search(text.split("?", 1)[0]):
        raise RefusedURLError(f"refused {text!r}: its path holds an encoded backslash, slash or NUL")
    parts = urlsplit(text)
    if parts.scheme.lower() in ("http", "https"):
        if not _NETLOC.match(parts.netloc.lower()):
            raise RefusedURLError(f"refused {text!r}: the host part {parts.netloc!r} is not a plain host[:port] "
                                  "(userinfo and other characters are not accepted)")
        try:
            parts.port
        except ValueError:
            raise RefusedURLError(f"refused {text!r}: the port is not a number from 0 to 65535") from None


def _clean_path(path: str, original: str) -> str:
    """The path with ``.``/``..`` resolved and re-quoted; refused if it climbs or doubles slashes."""
    raw = unquote(path or "/")
    segments = raw.split("/")
    if ".." in segments or "//" in raw:
        raise RefusedURLError(f"refused {original!r}: '..' or '//' in its path")
    return quote(posixpath.normpath(raw) + ("/" if raw.endswith("/") and raw != "/" else ""), safe="/@:+,;=-._~")


def _is_media_path(path: str) -> bool:
    return any(pattern.match(path) for pattern in MEDIA_PATHS)


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
        if self.label_studio_url:
            check_url_text(self.label_studio_url)
        self._api_key = api_key or None
        self.allowed_roots = [str(r) for r in allowed_roots or []]
        self.timeout = timeout
        self.allow_external = allow_external
        self.max_bytes = max_bytes
        self._client = None
        self._client_lock = threading.Lock()
        self._session = requests.Session()
        self._session.trust_env = False  # no ~/.netrc credentials or proxies picked up for any host

    def __repr__(self) -> str:  # no api key in reprs or logs
        return (f"ImageFetcher(document_root={self.document_root!r}, label_studio_url={self.label_studio_url!r}, "
                f"api_key={'***' if self._api_key else None}, allowed_roots={self.allowed_roots!r})")

    # -- public ------------------------------------------------------------------------------------

    def fetch(self, url_or_path: str, *, task_id: int | None = None) -> bytes:
        """The image's bytes. ``task_id``: the task the URL belongs to (for cloud-storage URIs)."""
        if not isinstance(url_or_path, str) or not url_or_path.strip():
            raise ImageFetchError(f"no image URL (got {url_or_path!r})")
        text = url_or_path.strip()
        parts = urlsplit(text)
        scheme = parts.scheme.lower()
        if scheme in CLOUD_SCHEMES:
            return self._from_cloud_storage(text, task_id)
        check_url_text(text)
        if scheme in ("http", "https"):
            if self.label_studio_url and _origin(text) == _origin(self.label_studio_url):
                return self._from_label_studio(parts.path, parts.query, text)
            if not self.allow_external:
                raise RefusedURLError(
                    f"refused {text}: not on the Label Studio origin ({self.label_studio_url or 'LABEL_STUDIO_URL unset'}); "
                    "set ALLOOP_ALLOW_EXTERNAL_URLS=true to fetch other hosts (without credentials)")
            return self._get(text, original=text, credentials=False)
        if scheme == "file":
            if parts.netloc not in ("", "localhost"):
                raise ImageFetchError(f"refused {text}: file:// URLs on another host are not supported")
            return self._read(path_under_roots(unquote(parts.path), self.allowed_roots), text)
        if scheme:
            raise ImageFetchError(f"cannot read {text}: the {scheme}:// scheme is not supported; "
                                  "let Label Studio serve it (a storage with proxied or presigned URLs)")
        if text.startswith("/data/") or text.startswith("data/") or re.match(r"^/?(tasks|projects)/\d+/resolve", text):
            return self._from_label_studio("/" + parts.path.lstrip("/"), parts.query, text)
        if Path(text).is_absolute():
            return self._read(path_under_roots(text, self.allowed_roots), text)
        return self._relative_path(text)

    # -- sources -----------------------------------------------------------------------------------

    def _from_label_studio(self, path: str, query: str, original: str) -> bytes:
        if path.rstrip("/") == LOCAL_FILES_PREFIX and self.document_root:
            values = parse_qs(query).get("d")
            if not values or not values[0]:
                raise ImageFetchError(f"cannot read {original}: a local-files URL needs ?d=<path under the document root>")
            return self._read(safe_join(self.document_root, values[0]), original)
        if not self.label_studio_url:
            raise ImageFetchError(f"cannot fetch {original}: LABEL_STUDIO_URL is not set"
                                  + ("" if path.startswith(LOCAL_FILES_PREFIX)
                                     else " (and only local-files URLs can be read from disk)"))
        return self._get(self._media_url(path, query, original), original=original, credentials=True)

    def _media_url(self, path: str, query: str, original: str) -> str:
        """The configured base URL + the checked media path and query (a Label Studio under a sub-path
        sends absolute paths that start with it)."""
        base_path = urlsplit(self.label_studio_url).path.rstrip("/")
        clean = _clean_path(path, original)
        if base_path and clean.startswith(base_path + "/"):
            clean = clean[len(base_path):]
        if not _is_media_path(clean):
            raise RefusedURLError(f"refused {original!r}: {clean} is not a Label Studio media path "
                                  "(/data/upload/..., /data/local-files/?d=..., /tasks/<id>/resolve/?fileuri=...)")
        fields = parse_qsl(query, keep_blank_values=True)
        return self.label_studio_url + clean + (f"?{urlencode(fields, safe='/')}" if fields else "")

    def _from_cloud_storage(self, uri: str, task_id) -> bytes:
        if task_id is None or not str(task_id).isdigit():
            raise ImageFetchError(f"cannot read {uri}: a cloud-storage URI is read through its task's resolve URL, "
                                  "and the task id is not known")
        fileuri = base64.b64encode(uri.encode()).decode()
        return self._from_label_studio(f"/tasks/{int(task_id)}/resolve/", urlencode({"fileuri": fileuri}), uri)

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

    def _get(self, url: str, *, original: str, credentials: bool) -> bytes:
        """GET ``url``; redirects are followed by hand, so that each hop is checked before it is asked."""
        for _ in range(MAX_REDIRECTS + 1):
            headers = self._auth_headers() if credentials else {}
            try:
                response = self._session.get(url, headers=headers, timeout=self.timeout, stream=True,
                                             allow_redirects=False)
            except requests.RequestException as exc:
                raise ImageFetchError(f"cannot fetch {original}: {exc.__class__.__name__}") from None
            with response:
                if response.is_redirect:
                    url, credentials = self._next_hop(url, response.headers.get("location") or "", original)
                    continue
                if response.status_code != 200:
                    hint = " (check LABEL_STUDIO_API_KEY)" if response.status_code in (401, 403) else ""
                    raise ImageFetchError(f"cannot fetch {original}: HTTP {response.status_code}{hint}")
                chunks, total = [], 0
                for chunk in response.iter_content(1 << 16):
                    total += len(chunk)
                    if total > self.max_bytes:
                        raise ImageFetchError(f"cannot fetch {original}: over the {self.max_bytes} byte limit")
                    chunks.append(chunk)
            return b"".join(chunks)
        raise ImageFetchError(f"cannot fetch {original}: more than {MAX_REDIRECTS} redirects")

    def _next_hop(self, current: str, location: str, original: str) -> tuple[str, bool]:
        """Where a redirect may go, and with or without credentials."""
        target = urljoin(current, location)
        try:
            check_url_text(target)
        except RefusedURLError as exc:
            raise RefusedURLError(f"refused the redirect of {original} to {target!r}: {exc}") from None
        if self.label_studio_url and _origin(target) == _origin(self.label_studio_url):
            parts = urlsplit(target)
            return self._media_url(parts.path, parts.query, original), True
        if self.allow_external and urlsplit(target).scheme.lower() in ("http", "https"):
            return target, False  # e.g. a storage's presigned URL: it carries its own authorisation
        raise RefusedURLError(f"refused the redirect of {original} to another origin ({_origin(target)[1]}); "
                              "set ALLOOP_ALLOW_EXTERNAL_URLS=true to follow such redirects (without credentials), "
                              "or switch the storage to proxied URLs")

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
            return authorization_headers(client)
        except Exception as exc:
            raise ImageFetchError(f"could not get a Label Studio access token ({exc.__class__.__name__}); "
                                  "check LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY") from None


def fetch_all(fetcher: "ImageFetcher", urls: list, *, image_key: str = "image", task_ids: list | None = None,
              threads: int = FETCH_THREADS) -> list[tuple[bytes | None, str | None]]:
    """``(content, None)`` or ``(None, why)`` per URL, in order, read in parallel.

    One unreadable image never stops the others: every failure becomes that URL's error message.
    ``image_key``: the task data field the URLs come from, named when one is missing; ``task_ids``:
    the tasks they belong to (cloud-storage URIs are read through them).
    """
    ids = list(task_ids) if task_ids is not None else [None] * len(urls)

    def one(item):
        url, task_id = item
        if not url:
            return None, f"task data has no {image_key!r} field"
        try:
            return fetcher.fetch(str(url), task_id=task_id), None
        except ImageFetchError as exc:
            return None, str(exc)
        except Exception as exc:  # noqa: BLE001 — a failure belongs to its task, not to the batch
            return None, f"{exc.__class__.__name__}: {str(exc)[:200]}"

    if not urls:
        return []
    with ThreadPoolExecutor(max_workers=min(threads, len(urls))) as pool:
        return list(pool.map(one, zip(urls, ids)))
