"""Image URLs are fetched under limits, and never from where they must not be."""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from services.embedder.fetch import FetchError, ImageFetcher, TransientFetchError, UrlPolicy

PNG = b"\x89PNG\r\n\x1a\n" + b"x" * 100


hits: dict[str, int] = {}


@pytest.fixture(scope="module")
def server():
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            if self.path == "/ok.png":
                self._send(200, PNG)
            elif self.path == "/big.png":
                self._send(200, b"x" * 5000)
            elif self.path == "/same-host":
                self._send(302, b"", {"Location": "/ok.png"})
            elif self.path == "/other-host":
                self._send(302, b"", {"Location": "http://localhost.localdomain:1/ok.png"})
            elif self.path.startswith("/flaky"):  # fails twice per path, then serves
                hits[self.path] = hits.get(self.path, 0) + 1
                self._send(503, b"") if hits[self.path] <= 2 else self._send(200, PNG)
            elif self.path == "/down":
                hits[self.path] = hits.get(self.path, 0) + 1
                self._send(503, b"")
            elif self.path == "/loop":
                self._send(302, b"", {"Location": "/loop"})
            else:
                hits[self.path] = hits.get(self.path, 0) + 1
                self._send(404, b"")

        def _send(self, status, body, headers=None):
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


LOCAL = UrlPolicy(allow_http=True, allow_private=True, max_bytes=1000)


def test_fetches_and_follows_same_host_redirects(server):
    fetcher = ImageFetcher(LOCAL)
    assert fetcher.fetch(f"{server}/ok.png") == PNG
    assert fetcher.fetch(f"{server}/same-host") == PNG


@pytest.mark.parametrize(
    ("path", "message"),
    [("/big.png", "larger than 1000 bytes"), ("/other-host", "redirect to another host"), ("/loop", "redirects"), ("/nope", "HTTP 404")],
)
def test_refusals_from_a_live_server(server, path, message):
    with pytest.raises(FetchError, match=message):
        ImageFetcher(LOCAL).fetch(server + path)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1/x.png", "scheme 'http' not allowed"),
        ("https://127.0.0.1/x.png", "non-public address"),
        ("https://10.1.2.3/x.png", "non-public address"),
        ("https://169.254.169.254/latest/meta-data", "non-public address"),
        ("https://[::1]/x.png", "non-public address"),
        ("https://localhost/x.png", "non-public address"),
        ("ftp://example.com/x.png", "scheme 'ftp' not allowed"),
        ("file:///etc/passwd", "file:// URLs are not enabled"),
    ],
)
def test_ssrf_and_scheme_refusals(url, message):
    with pytest.raises(FetchError, match=message):
        ImageFetcher(UrlPolicy()).fetch(url)


def test_dns_answers_are_checked_not_just_names():
    rebinding = ImageFetcher(UrlPolicy(), resolver=lambda host, port: ["93.184.216.34", "192.168.1.10"])
    with pytest.raises(FetchError, match="192.168.1.10"):
        rebinding.fetch("https://cdn.example.com/x.png")


def test_host_allow_list():
    fetcher = ImageFetcher(UrlPolicy(allowed_hosts=frozenset({"images.shop.example"})))
    with pytest.raises(FetchError, match="not on the allow-list"):
        fetcher.fetch("https://evil.example/x.png")


def test_file_urls_only_inside_their_root(tmp_path):
    (tmp_path / "a.png").write_bytes(PNG)
    fetcher = ImageFetcher(UrlPolicy(allow_file=True, file_root=tmp_path))
    assert fetcher.fetch(f"file://{tmp_path}/a.png") == PNG
    with pytest.raises(FetchError, match="outside"):
        fetcher.fetch(f"file://{tmp_path}/../etc/passwd")


def test_transient_failures_are_tried_again_with_backoff(server):
    fetcher = ImageFetcher(UrlPolicy(allow_http=True, allow_private=True, retry_wait_s=0.05))
    assert fetcher.fetch(f"{server}/flaky-1") == PNG
    assert hits["/flaky-1"] == 3
    with pytest.raises(TransientFetchError, match=r"HTTP 503 .* \(after 3 attempts\)"):
        fetcher.fetch(f"{server}/down")
    assert hits["/down"] == 3


def test_refusals_are_not_tried_again(server):
    fetcher = ImageFetcher(UrlPolicy(allow_http=True, allow_private=True, retry_wait_s=0.05))
    with pytest.raises(FetchError, match="HTTP 404") as refused:
        fetcher.fetch(f"{server}/missing-once")
    assert not isinstance(refused.value, TransientFetchError)
    assert hits["/missing-once"] == 1
