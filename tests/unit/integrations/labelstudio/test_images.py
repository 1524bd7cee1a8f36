"""The backend's image fetcher: disk reads stay under their roots; Label Studio URLs go over HTTP."""

import http.server
import threading

import pytest

from integrations.labelstudio.images import ImageFetcher, ImageFetchError, UnsafePathError, fetch_all


@pytest.fixture
def layout(tmp_path):
    root = tmp_path / "docroot"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.png").write_bytes(b"A")
    (root / "sub" / "with space.png").write_bytes(b"S")
    outside = tmp_path / "secret.txt"
    outside.write_bytes(b"SECRET")
    (root / "sub" / "escape.png").symlink_to(outside)
    (root / "sub" / "inner-link.png").symlink_to(root / "sub" / "a.png")
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "b.png").write_bytes(b"B")
    (allowed / "out-link.png").symlink_to(outside)
    return root, allowed, outside


def fetcher_for(layout, **kwargs):
    root, allowed, _ = layout
    return ImageFetcher(str(root), kwargs.pop("url", None), kwargs.pop("api_key", None), [str(allowed)], **kwargs)


def test_local_files_under_the_document_root(layout):
    f = fetcher_for(layout)
    assert f.fetch("/data/local-files/?d=sub/a.png") == b"A"
    assert f.fetch("/data/local-files/?d=sub%2Fwith%20space.png") == b"S"
    assert f.fetch("/data/local-files/?d=sub/inner-link.png") == b"A"  # a link that stays inside is fine
    assert f.fetch("data/local-files/?d=sub/a.png") == b"A"


@pytest.mark.parametrize("d", [
    "../secret.txt",
    "sub/../../secret.txt",
    "%2e%2e/secret.txt",
    "sub%2F..%2F..%2Fsecret.txt",
    "sub/escape.png",  # symlink out of the root
])
def test_local_files_traversal_is_refused(layout, d):
    with pytest.raises(UnsafePathError, match="outside"):
        fetcher_for(layout).fetch(f"/data/local-files/?d={d}")


def test_local_files_absolute_path_outside_is_refused(layout):
    _, _, outside = layout
    with pytest.raises(UnsafePathError, match="outside"):
        fetcher_for(layout).fetch(f"/data/local-files/?d={outside}")
    # an absolute d under the root is served, as Label Studio does
    root = layout[0]
    assert fetcher_for(layout).fetch(f"/data/local-files/?d={root}/sub/a.png") == b"A"


def test_nul_byte_and_missing_d(layout):
    with pytest.raises(UnsafePathError, match="NUL"):
        fetcher_for(layout).fetch("/data/local-files/?d=sub/a.png%00.jpg")
    with pytest.raises(ImageFetchError, match=r"needs \?d="):
        fetcher_for(layout).fetch("/data/local-files/")


def test_plain_paths_and_file_urls_only_under_allowed_roots(layout):
    root, allowed, outside = layout
    f = fetcher_for(layout)
    assert f.fetch(str(allowed / "b.png")) == b"B"
    assert f.fetch(f"file://{allowed / 'b.png'}") == b"B"
    assert f.fetch("b.png") == b"B"  # relative: under an allowed root
    for bad in (str(outside), f"file://{outside}", f"{allowed}/../secret.txt", f"file://{allowed}/%2e%2e/secret.txt",
                str(allowed / "out-link.png"), "../secret.txt", str(root / "sub" / "a.png")):
        with pytest.raises(ImageFetchError):
            f.fetch(bad)
    with pytest.raises(UnsafePathError, match="no allowed roots"):
        ImageFetcher(None, None, None, []).fetch(str(allowed / "b.png"))


def test_unsupported_and_foreign_urls(layout):
    f = fetcher_for(layout, url="http://127.0.0.1:1")
    with pytest.raises(ImageFetchError, match="ftp:// scheme is not supported"):
        f.fetch("ftp://bucket/key.png")
    with pytest.raises(ImageFetchError, match="s3://bucket/key.png: .*task id is not known"):
        f.fetch("s3://bucket/key.png")
    with pytest.raises(ImageFetchError, match="not on the Label Studio origin"):
        f.fetch("http://example.com/a.png")
    with pytest.raises(ImageFetchError, match="LABEL_STUDIO_URL is not set"):
        fetcher_for(layout).fetch("/data/upload/1/abc-a.png")
    with pytest.raises(ImageFetchError, match="no image URL"):
        f.fetch("")


def test_fetch_all_keeps_order_and_gives_each_failure_to_its_own_url(layout):
    urls = ["/data/local-files/?d=sub/a.png", None, "/data/local-files/?d=../secret.txt",
            "/data/local-files/?d=sub/missing.png", "/data/local-files/?d=sub/with%20space.png"]
    results = fetch_all(fetcher_for(layout), urls, image_key="img", threads=3)
    assert [content for content, _ in results] == [b"A", None, None, None, b"S"]
    errors = [error for _, error in results]
    assert errors[0] is None and errors[4] is None
    assert "'img'" in errors[1] and "outside" in errors[2] and "missing.png" in errors[3]
    assert fetch_all(fetcher_for(layout), []) == []


class _Handler(http.server.BaseHTTPRequestHandler):
    seen: list = []

    def do_GET(self):  # noqa: N802
        _Handler.seen.append((self.path, self.headers.get("Authorization")))
        if self.headers.get("Authorization") != "Token legacy-key-123":
            self.send_response(401)
            self.end_headers()
            return
        body = f"IMG:{self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_label_studio():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Handler.seen = []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_uploads_and_label_studio_urls_go_over_http_with_the_token(layout, fake_label_studio):
    f = ImageFetcher(None, fake_label_studio, "legacy-key-123", [])
    assert f.fetch("/data/upload/3/abc-a.png") == b"IMG:/data/upload/3/abc-a.png"
    assert f.fetch(f"{fake_label_studio}/data/upload/3/b.png") == b"IMG:/data/upload/3/b.png"
    # no document root: local-files URLs are fetched from the server too
    assert f.fetch("/data/local-files/?d=sub/a.png") == b"IMG:/data/local-files/?d=sub/a.png"
    assert all(auth == "Token legacy-key-123" for _, auth in _Handler.seen)


def test_a_refused_token_says_so_without_the_key(layout, fake_label_studio):
    f = ImageFetcher(None, fake_label_studio, "wrong-key-456", [])
    with pytest.raises(ImageFetchError) as info:
        f.fetch("/data/upload/3/abc-a.png")
    assert "HTTP 401" in str(info.value) and "LABEL_STUDIO_API_KEY" in str(info.value)
    assert "wrong-key-456" not in str(info.value) and "wrong-key-456" not in repr(f)
