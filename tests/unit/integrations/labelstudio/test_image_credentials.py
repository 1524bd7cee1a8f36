"""The Label Studio token goes only to the configured origin, and only for its media paths.

Two real HTTP servers on free 127.0.0.1 ports: ``label_studio`` stands in for Label Studio's media
routes (a real Label Studio cannot be told to answer with redirects, so this one is scripted; the
end-to-end case against a real Label Studio is in tests/integration/mlproject/serving/test_backend_security.py) and
``listener`` records every request that reaches it: no URL trick may bring the token there.
"""

from __future__ import annotations

import http.server
import threading
from contextlib import contextmanager

import pytest

from integrations.labelstudio.images import ImageFetcher, ImageFetchError, RefusedURLError, fetch_all

TOKEN = "Token legacy-key-123"


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Answers 200 with a body naming the path; a path starting /redirect/ answers 302 to the rest."""

    routes: dict = {}

    def do_GET(self):  # noqa: N802
        self.server.seen.append((self.path, self.headers.get("Authorization")))
        location = self.server.redirects.get(self.path)
        if location:
            self.send_response(302)
            self.send_header("Location", location)
            self.end_headers()
            return
        body = f"IMG:{self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@contextmanager
def _server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    server.seen, server.redirects = [], {}
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def label_studio():
    with _server() as server:
        server.url = f"http://127.0.0.1:{server.server_address[1]}"
        yield server


@pytest.fixture
def listener():
    with _server() as server:
        server.port = server.server_address[1]
        yield server


def _fetcher(label_studio, **kwargs):
    return ImageFetcher(None, label_studio.url, "legacy-key-123", [], **kwargs)


def _tricks(ls_port: int, port: int) -> list[str]:
    """URLs that name the listener somewhere while looking like Label Studio to some parser."""
    return [
        f"http://127.0.0.1:{port}\\@127.0.0.1:{ls_port}/data/upload/1/x.png",  # backslash before the @
        f"http://127.0.0.1:{port}%5c@127.0.0.1:{ls_port}/data/upload/1/x.png",  # encoded backslash
        f"http://127.0.0.1:{ls_port}%5c@127.0.0.1:{port}/data/upload/1/x.png",
        f"http://user:pw@127.0.0.1:{port}/data/upload/1/x.png",  # userinfo
        f"http://127.0.0.1:{ls_port}@127.0.0.1:{port}/data/upload/1/x.png",
        f"http://127.0.0.1:{port}/data/upload/1/x.png",  # same host, other port
        f"http://2130706433:{port}/data/upload/1/x.png",  # integer host
        f"http://0x7f000001:{port}/data/upload/1/x.png",
        f"http://[::ffff:127.0.0.1]:{port}/data/upload/1/x.png",  # IPv6 forms
        f"http://[::1]:{port}/data/upload/1/x.png",
        f"http://localhost:{port}/data/upload/1/x.png",
        f"http://127.0.0.1:{port}\t/data/upload/1/x.png",
        f"//127.0.0.1:{port}/data/upload/1/x.png",  # scheme-relative
        f"/\\127.0.0.1:{port}/data/upload/1/x.png",
        f"http:\\\\127.0.0.1:{port}/data/upload/1/x.png",
    ]


def test_no_url_trick_brings_the_token_to_another_port(label_studio, listener):
    ls_port = label_studio.server_address[1]
    fetcher = _fetcher(label_studio)
    results = fetch_all(fetcher, _tricks(ls_port, listener.port))
    assert all(content is None for content, _ in results), results
    assert all(error for _, error in results)
    assert listener.seen == []  # not one request reached it, with or without the token
    assert all(auth is None for _, auth in label_studio.seen)  # nor was the token sent anywhere else
    # with external URLs allowed, the other hosts may be fetched, but never with the token
    external = _fetcher(label_studio, allow_external=True)
    fetch_all(external, _tricks(ls_port, listener.port))
    assert all(auth is None for _, auth in listener.seen), listener.seen


@pytest.mark.parametrize("url, why", [
    ("http://127.0.0.1:8998\\@127.0.0.1:{ls}/x.png", "backslash"),
    ("http://u:p@127.0.0.1:{ls}/data/upload/1/x.png", "userinfo"),
    ("/data/upload/1/%5c..%5capi/x", "encoded"),
    ("/data/upload/1/x.png\x00", "control"),
    ("http://127.0.0.1:99999/x.png", "port"),
])
def test_odd_urls_are_refused_with_a_reason(label_studio, url, why):
    with pytest.raises(RefusedURLError, match=why):
        _fetcher(label_studio).fetch(url.format(ls=label_studio.server_address[1]))
    assert label_studio.seen == []


@pytest.mark.parametrize("path", ["/api/current-user/whoami", "/api/projects/", "/data/../api/current-user/whoami",
                                  "/data/upload/../../api/users", "/user/account", "/", "/data/uploadx/1.png"])
def test_only_media_paths_get_the_token(label_studio, path):
    fetcher = _fetcher(label_studio)
    with pytest.raises(RefusedURLError):
        fetcher.fetch(label_studio.url + path)
    with pytest.raises(ImageFetchError):  # a plain path: only local files under allowed roots
        fetcher.fetch(path)
    assert label_studio.seen == []


def test_media_paths_get_the_token_on_a_url_rebuilt_from_the_configured_origin(label_studio):
    fetcher = _fetcher(label_studio)
    assert fetcher.fetch("/data/upload/3/a b.png") == b"IMG:/data/upload/3/a%20b.png"
    assert fetcher.fetch(f"{label_studio.url}/data/upload/3/./b.png") == b"IMG:/data/upload/3/b.png"
    assert fetcher.fetch("/tasks/12/resolve/?fileuri=czM6Ly9i") == b"IMG:/tasks/12/resolve/?fileuri=czM6Ly9i"
    # a cloud-storage URI of a known task is read through that task's resolve URL
    content = fetcher.fetch("s3://bucket/key.png", task_id=7)
    assert content.startswith(b"IMG:/tasks/7/resolve/?fileuri=")
    assert [auth for _, auth in label_studio.seen] == [TOKEN] * 4


def test_redirects_stay_on_the_origin(label_studio, listener):
    fetcher = _fetcher(label_studio)
    label_studio.redirects["/data/upload/1/inside.png"] = "/data/upload/1/moved.png"
    assert fetcher.fetch("/data/upload/1/inside.png") == b"IMG:/data/upload/1/moved.png"
    assert [auth for _, auth in label_studio.seen] == [TOKEN, TOKEN]

    away = f"http://127.0.0.1:{listener.port}/data/upload/1/x.png"
    label_studio.redirects["/data/upload/1/away.png"] = away
    label_studio.redirects["/data/upload/1/api.png"] = "/api/current-user/whoami"
    label_studio.redirects["/data/upload/1/odd.png"] = f"http://127.0.0.1:{listener.port}\\@x/x.png"
    for name, why in (("away", "another origin"), ("api", "not a Label Studio media path"), ("odd", "backslash")):
        with pytest.raises(RefusedURLError, match=why):
            fetcher.fetch(f"/data/upload/1/{name}.png")
    assert listener.seen == []
    assert "/api/current-user/whoami" not in [path for path, _ in label_studio.seen]

    # allowed external hosts: the redirect is followed, without the token
    assert _fetcher(label_studio, allow_external=True).fetch("/data/upload/1/away.png") == b"IMG:/data/upload/1/x.png"
    assert listener.seen == [("/data/upload/1/x.png", None)]


def test_redirect_loops_end(label_studio):
    label_studio.redirects["/data/upload/1/a.png"] = "/data/upload/1/b.png"
    label_studio.redirects["/data/upload/1/b.png"] = "/data/upload/1/a.png"
    with pytest.raises(ImageFetchError, match="redirects"):
        _fetcher(label_studio).fetch("/data/upload/1/a.png")
    assert len(label_studio.seen) == 4
