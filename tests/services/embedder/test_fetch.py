"""Image URLs are fetched under limits, and never from where they must not be."""

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from services.embedder.fetch import FetchError, ImageFetcher, TransientFetchError, UrlPolicy

PNG = b"\x89PNG\r\n\x1a\n" + b"x" * 100


hits: dict[str, int] = {}


@pytest.fixture(scope="module")
def server():
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
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
    with pytest.raises(FetchError, match=r"192.168.1.10"):
        rebinding.fetch("https://cdn.example.com/x.png")


@pytest.mark.parametrize(
    "address",
    [
        "64:ff9b::a9fe:a9fe",  # NAT64 (well-known prefix) to the cloud metadata address
        "64:ff9b:1::a9fe:a9fe",  # NAT64, local-use prefix
        "64:ff9b:1:ab:cd::5db8:d822",  # local-use, past its first /96: the IPv4 bits could be anywhere
        "::ffff:169.254.169.254",  # IPv4-mapped
        "::ffff:0:a9fe:a9fe",  # IPv4-translated
        "::a9fe:a9fe",  # IPv4-compatible
        "2002:a9fe:a9fe::1",  # 6to4
        "2001:0:4136:e378:8000:63bf:5601:5601",  # Teredo, client 169.254.169.254
        "fec0::1",  # site-local
    ],
)
def test_ipv6_addresses_are_judged_by_the_ipv4_address_they_carry(address):
    fetcher = ImageFetcher(UrlPolicy(connect_timeout=0.2), resolver=lambda host, port: [address])
    with pytest.raises(FetchError, match="non-public address"):
        fetcher.fetch("https://cdn.example.com/x.png")


def test_a_dns_server_that_never_answers_cannot_hold_a_fetch_past_its_deadline():
    released = threading.Event()

    def silent(host: str, port: int) -> list[str]:
        released.wait(10.0)
        return ["93.184.216.34"]

    try:
        fetcher = ImageFetcher(UrlPolicy(connect_timeout=5.0, total_timeout=0.5, retry_wait_s=0.01), resolver=silent)
        started = time.monotonic()
        with pytest.raises(TransientFetchError, match=r"longer than 0\.5 s in all"):
            fetcher.fetch("https://cdn.example.com/x.png")
        assert time.monotonic() - started < 2.0
        quick = ImageFetcher(UrlPolicy(connect_timeout=0.2, attempts=1), resolver=silent)
        with pytest.raises(TransientFetchError, match=r"no answer within 0\.2 s"):
            quick.fetch("https://cdn.example.com/x.png")
    finally:
        released.set()


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


# A host that sends a byte just before each read would time out: per-read timeouts never fire.
TRICKLE_STEP_S = 0.05
DEADLINE = UrlPolicy(allow_http=True, allow_private=True, read_timeout=0.5, total_timeout=0.8, retry_wait_s=0.05)


@pytest.fixture(scope="module")
def trickling_server():
    """Answers each request with its first bytes at once and the rest a byte at a time; it gives
    up after a few seconds, so that a fetch without a deadline fails the test, not hangs it."""
    hello = b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\n"
    answers = {  # path: (sent at once, trickled)
        "/trickle-headers": (b"", hello + b"Content-Length: 3\r\n\r\nPNG"),
        "/trickle-body": (hello + b"Content-Length: 60\r\n\r\n", b"x" * 60),
        # each hop and each try alone is well within the deadline; together they are not
        "/redirect": (b"HTTP/1.1 302 Found\r\nLocation: /redirect\r\nContent-Length: 0", b"\r\nX: ..\r\n\r\n"),
        "/unavailable": (b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0", b"\r\nX: ..\r\n\r\n"),
    }

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            at_once, trickled = answers[self.path]
            try:
                self.wfile.write(at_once)
                for byte in trickled:
                    time.sleep(TRICKLE_STEP_S)
                    self.wfile.write(bytes([byte]))
            except OSError:  # the fetcher hung up: what it should do
                pass
            self.close_connection = True

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.mark.parametrize("path", ["/trickle-headers", "/trickle-body", "/redirect", "/unavailable"])
def test_a_trickling_host_is_cut_off_at_the_total_deadline(trickling_server, path):
    started = time.monotonic()
    with pytest.raises(TransientFetchError, match=r"longer than 0\.8 s in all"):
        ImageFetcher(DEADLINE).fetch(trickling_server + path)
    assert time.monotonic() - started < DEADLINE.total_timeout + 0.4


@pytest.fixture(scope="module")
def trickling_tls_server():
    """Answers a TLS handshake with the start of a ServerHello record, a byte at a time."""
    listener = socket.create_server(("127.0.0.1", 0))

    def trickle(conn):
        with conn:
            try:
                for byte in b"\x16\x03\x03\x00\x40" + b"\x02" * 60:
                    conn.sendall(bytes([byte]))
                    time.sleep(TRICKLE_STEP_S)
            except OSError:
                pass

    def serve():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:  # closed at the end of the module
                return
            threading.Thread(target=trickle, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield f"https://127.0.0.1:{listener.getsockname()[1]}"
    listener.close()


def test_a_trickled_tls_handshake_is_cut_off_too(trickling_tls_server):
    started = time.monotonic()
    with pytest.raises(TransientFetchError, match=r"longer than 0\.8 s in all"):
        ImageFetcher(DEADLINE).fetch(f"{trickling_tls_server}/x.png")
    assert time.monotonic() - started < DEADLINE.total_timeout + 0.4


def test_the_deadline_comes_from_the_image_timeout_setting():
    from services.embedder.service import url_policy
    from services.settings import load_settings

    short, long = (url_policy(load_settings(image_timeout_s=t)) for t in (2.0, 4.0))
    assert short.read_timeout < short.total_timeout < long.total_timeout
