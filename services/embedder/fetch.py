"""Fetching product images by URL under strict limits (no SSRF).

- schemes: https only, http and file:// only when enabled;
- hosts: an optional allow-list; private, loopback, link-local and reserved addresses are
  refused unless allowed, and the connection goes to the address that was checked (no DNS
  rebinding between check and connect);
- timeouts for connect and read; a byte limit while reading; redirects followed only to the
  same host, at most three;
- transient failures (no answer, a reset, HTTP 408/429/5xx, a DNS lookup that failed for now)
  tried again with exponential backoff before the product is indexed from its text alone;
  refusals (policy, 4xx, too large) are final at once.
"""

import http.client
import ipaddress
import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin, urlsplit

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential


class FetchError(ValueError):
    """Why an image URL was not fetched. One line, fit for a payload or a DLQ header."""


class TransientFetchError(FetchError):
    """A failure that may pass: worth another try."""


_TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class UrlPolicy:
    allow_http: bool = False
    allow_file: bool = False
    file_root: Path | None = None  # file:// URLs must point inside it
    allowed_hosts: frozenset[str] = field(default_factory=frozenset)  # empty: any public host
    allow_private: bool = False
    connect_timeout: float = 3.0
    read_timeout: float = 5.0
    max_bytes: int = 2 * 1024 * 1024
    max_redirects: int = 3
    attempts: int = 3  # tries for a transient failure …
    retry_wait_s: float = 0.5  # … waiting this long before the second, doubling after




def _resolve(host: str, port: int) -> list[str]:
    return sorted({info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)})


class ImageFetcher:
    def __init__(self, policy: UrlPolicy, resolver=_resolve) -> None:  # type: ignore[no-untyped-def]
        self._policy = policy
        self._resolve = resolver

    def fetch(self, url: str) -> bytes:
        if urlsplit(url).scheme == "file":
            return self._read_file(urlsplit(url).path)
        retrying = Retrying(
            retry=retry_if_exception_type(TransientFetchError),
            stop=stop_after_attempt(max(1, self._policy.attempts)),
            wait=wait_exponential(multiplier=self._policy.retry_wait_s, max=8 * self._policy.retry_wait_s),
            reraise=True,
        )
        try:
            return retrying(self._fetch_once, url)
        except TransientFetchError as exc:
            raise TransientFetchError(f"{exc} (after {self._policy.attempts} attempts)") from None

    def _fetch_once(self, url: str) -> bytes:
        for _ in range(self._policy.max_redirects + 1):
            status, location, body = self._get(url)
            if status in (301, 302, 303, 307, 308) and location:
                target = urljoin(url, location)
                if urlsplit(target).hostname != urlsplit(url).hostname:
                    raise FetchError(f"redirect to another host refused: {urlsplit(target).hostname}")
                url = target
                continue
            if status != 200:
                error = TransientFetchError if status in _TRANSIENT_STATUS else FetchError
                raise error(f"HTTP {status} from {urlsplit(url).hostname}")
            return body
        raise FetchError(f"more than {self._policy.max_redirects} redirects")

    def _read_file(self, path: str) -> bytes:
        if not self._policy.allow_file or self._policy.file_root is None:
            raise FetchError("file:// URLs are not enabled")
        target = Path(path).resolve()
        root = self._policy.file_root.resolve()
        if root not in target.parents:
            raise FetchError(f"file:// URL outside {root}")
        if not target.is_file():
            raise FetchError(f"no such file: {target}")
        if target.stat().st_size > self._policy.max_bytes:
            raise FetchError(f"image is larger than {self._policy.max_bytes} bytes")
        return target.read_bytes()

    def _get(self, url: str) -> tuple[int, str | None, bytes]:
        parts = urlsplit(url)
        scheme = parts.scheme
        if scheme not in ("https", "http") or (scheme == "http" and not self._policy.allow_http):
            raise FetchError(f"scheme {scheme!r} not allowed")
        host = parts.hostname
        if not host:
            raise FetchError("URL has no host")
        if self._policy.allowed_hosts and host not in self._policy.allowed_hosts:
            raise FetchError(f"host {host} is not on the allow-list")
        port = parts.port or (443 if scheme == "https" else 80)
        try:
            addresses = self._resolve(host, port)
        except socket.gaierror as exc:
            error = TransientFetchError if exc.errno == socket.EAI_AGAIN else FetchError
            raise error(f"cannot resolve {host}: {exc}") from None
        except OSError as exc:
            raise FetchError(f"cannot resolve {host}: {exc}") from None
        if not addresses:
            raise FetchError(f"{host} has no address")
        for address in addresses:
            ip = ipaddress.ip_address(address)
            if not self._policy.allow_private and not ip.is_global:
                raise FetchError(f"{host} resolves to a non-public address ({address}); refused")
        address = addresses[0]
        try:
            sock = socket.create_connection((address, port), timeout=self._policy.connect_timeout)
        except OSError as exc:
            raise TransientFetchError(f"cannot connect to {host}: {exc}") from None
        sock.settimeout(self._policy.read_timeout)
        if scheme == "https":
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
        connection = http.client.HTTPConnection(host, port, timeout=self._policy.read_timeout)
        connection.sock = sock  # talk to the address that was checked, whatever DNS says now
        try:
            path = parts.path or "/"
            connection.request("GET", path + (f"?{parts.query}" if parts.query else ""), headers={"Host": parts.netloc, "Accept": "image/*"})
            response = connection.getresponse()
            length = response.getheader("Content-Length")
            if length and length.isdigit() and int(length) > self._policy.max_bytes:
                raise FetchError(f"image is larger than {self._policy.max_bytes} bytes")
            body = response.read(self._policy.max_bytes + 1)
            if len(body) > self._policy.max_bytes:
                raise FetchError(f"image is larger than {self._policy.max_bytes} bytes")
            return response.status, response.getheader("Location"), body
        except (OSError, http.client.HTTPException) as exc:
            raise TransientFetchError(f"fetching from {host} failed: {exc}") from None
        finally:
            connection.close()
