"""Fetching product images by URL under strict limits (no SSRF).

- schemes: https only, http and file:// only when enabled;
- hosts: an optional allow-list; private, loopback, link-local and reserved addresses are
  refused unless allowed, IPv6 addresses that embed an IPv4 one (NAT64, 6to4, Teredo, mapped)
  judged by that IPv4 address, and the connection goes to the address that was checked (no
  DNS rebinding between check and connect);
- timeouts for connect and for each read, and a total deadline for the whole fetch (every
  redirect and every try included), so a host that trickles a byte at a time cannot hold a
  thread; a byte limit while reading; redirects followed only to the same host, at most three;
- transient failures (no answer, a reset, HTTP 408/429/5xx, a DNS lookup that failed for now)
  tried again with exponential backoff before the product is indexed from its text alone;
  refusals (policy, 4xx, too large) are final at once.
"""

import concurrent.futures
import http.client
import io
import ipaddress
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urljoin, urlsplit

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, stop_before_delay, wait_exponential

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer


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
    read_timeout: float = 5.0  # for each read: a byte within this long keeps it going …
    total_timeout: float = 30.0  # … but the whole fetch (redirects and tries included) ends here
    max_bytes: int = 2 * 1024 * 1024
    max_redirects: int = 3
    attempts: int = 3  # tries for a transient failure …
    retry_wait_s: float = 0.5  # … waiting this long before the second, doubling after


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")  # the only IPv6 space routed on the internet
# IPv6 prefixes whose last 32 bits are an IPv4 address, which is where the packets go:
_IPV4_IN_LAST_32_BITS = tuple(
    ipaddress.IPv6Network(n)
    for n in (
        "::/96",  # IPv4-compatible (deprecated)
        "::ffff:0:0/96",  # IPv4-mapped
        "::ffff:0:0:0/96",  # IPv4-translated (SIIT)
        "64:ff9b::/96",  # NAT64, well-known prefix
        "64:ff9b:1::/96",  # NAT64, the /96 at the start of the local-use prefix
    )
)
_NAT64_LOCAL_USE = ipaddress.IPv6Network("64:ff9b:1::/48")


def is_public(address: str | IPAddress) -> bool:
    """Whether an address is on the public internet: an IPv6 address that embeds an IPv4 one
    counts as that IPv4 address, since a translator or tunnel delivers it there.

    >>> is_public("93.184.216.34"), is_public("64:ff9b::5db8:d822"), is_public("2606:4700::1111")
    (True, True, True)
    >>> [is_public(a) for a in ("169.254.169.254", "64:ff9b::a9fe:a9fe", "64:ff9b:1::a9fe:a9fe",
    ...  "::ffff:a9fe:a9fe", "2002:a9fe:a9fe::1", "2001:0:4136:e378:8000:63bf:5601:5601", "::1")]
    [False, False, False, False, False, False, False]
    """
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv4Address):
        return ip.is_global and not ip.is_multicast
    embedded = _embedded_ipv4(ip)
    if embedded:
        return all(is_public(inner) for inner in embedded)
    if ip in _NAT64_LOCAL_USE:
        # A network's own NAT64 prefix may put the IPv4 address at other bits (RFC 6052), so
        # past its first /96 nothing says where the packets go: refuse.
        return False
    # is_global alone passes reserved ::/8, site-local and multicast on Python < 3.13.
    return ip in _GLOBAL_UNICAST and ip.is_global


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...]:
    """The IPv4 addresses an IPv6 address carries; for Teredo its server and its client."""
    if ip.teredo:
        return ip.teredo
    if ip.sixtofour:
        return (ip.sixtofour,)
    if any(ip in network for network in _IPV4_IN_LAST_32_BITS):
        return (ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF),)
    return ()


class _Deadline:
    """The end of one fetch: each blocking step waits its own timeout, cut to the time left."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._end = time.monotonic() + seconds

    def wait(self, step_timeout: float) -> float:
        """How long the next step may block; a transient failure once the time is up."""
        left = self._end - time.monotonic()
        if left <= 0:
            raise TransientFetchError(f"the fetch took longer than {self.seconds:g} s in all")
        return min(step_timeout, left)

    def check(self) -> None:
        """After a step timed out: say so if it was the deadline that ran out, not the step's timeout."""
        self.wait(0.0)


class _DeadlineSocket:
    """What http.client talks through. A socket timeout bounds one receive, and a host sending
    a byte just before it expires would never be cut off: here each send and receive is also
    bounded by the deadline, the status line and headers included."""

    def __init__(self, sock: socket.socket, deadline: _Deadline, read_timeout: float) -> None:
        self._sock, self._deadline, self._read_timeout = sock, deadline, read_timeout

    def sendall(self, data: bytes) -> None:
        self._sock.settimeout(self._deadline.wait(self._read_timeout))
        self._sock.sendall(data)

    def recv_into(self, buffer: "WriteableBuffer") -> int:
        self._sock.settimeout(self._deadline.wait(self._read_timeout))
        return self._sock.recv_into(buffer)

    def makefile(self, mode: str) -> io.BufferedReader:
        return io.BufferedReader(_Reader(self))

    def close(self) -> None:
        """Left to the fetch: http.client closes its connection as soon as it has the headers of
        a response that ends the connection, expecting the response to keep the socket open."""


class _Reader(io.RawIOBase):
    def __init__(self, sock: _DeadlineSocket) -> None:
        self._sock = sock

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: "WriteableBuffer") -> int:
        return self._sock.recv_into(buffer)


def _resolve(host: str, port: int) -> list[str]:
    return sorted({str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)})


# getaddrinfo takes no timeout, and a DNS server that never answers would hold the fetch past
# its deadline (the system resolver's own retries can take tens of seconds): lookups run here,
# and the fetch waits for one only as long as its deadline allows. A few threads, so lookups
# stuck on a dead server cannot pile up; past them, new lookups wait their turn and time out.
_LOOKUPS = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="image-dns")


class ImageFetcher:
    def __init__(self, policy: UrlPolicy, resolver: Callable[[str, int], list[str]] = _resolve) -> None:
        self._policy = policy
        self._resolve = resolver

    def fetch(self, url: str) -> bytes:
        if urlsplit(url).scheme == "file":
            return self._read_file(urlsplit(url).path)
        # One deadline for all tries: it bounds how long this fetch holds the caller's thread,
        # which per-try deadlines would multiply by the tries (and a trickling host is a
        # transient failure, tried again). A slow first try leaves less time to the next.
        deadline = _Deadline(self._policy.total_timeout)
        retrying = Retrying(
            retry=retry_if_exception_type(TransientFetchError),
            stop=stop_after_attempt(max(1, self._policy.attempts)) | stop_before_delay(self._policy.total_timeout),
            wait=wait_exponential(multiplier=self._policy.retry_wait_s, max=8 * self._policy.retry_wait_s),
            reraise=True,
        )
        try:
            return retrying(self._fetch_once, url, deadline)
        except TransientFetchError as exc:
            attempts = retrying.statistics.get("attempt_number", self._policy.attempts)
            raise TransientFetchError(f"{exc} (after {attempts} attempts)") from None

    def _fetch_once(self, url: str, deadline: _Deadline) -> bytes:
        for _ in range(self._policy.max_redirects + 1):
            status, location, body = self._get(url, deadline)
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

    def _get(self, url: str, deadline: _Deadline) -> tuple[int, str | None, bytes]:
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
        lookup = _LOOKUPS.submit(self._resolve, host, port)
        try:
            addresses = lookup.result(timeout=deadline.wait(self._policy.connect_timeout))
        except concurrent.futures.TimeoutError:
            lookup.cancel()
            deadline.check()
            raise TransientFetchError(f"cannot resolve {host}: no answer within {self._policy.connect_timeout:g} s") from None
        except socket.gaierror as exc:
            error = TransientFetchError if exc.errno == socket.EAI_AGAIN else FetchError
            raise error(f"cannot resolve {host}: {exc}") from None
        except OSError as exc:
            raise FetchError(f"cannot resolve {host}: {exc}") from None
        if not addresses:
            raise FetchError(f"{host} has no address")
        for address in addresses:
            if not self._policy.allow_private and not is_public(address):
                raise FetchError(f"{host} resolves to a non-public address ({address}); refused")
        address = addresses[0]
        try:
            sock = socket.create_connection((address, port), timeout=deadline.wait(self._policy.connect_timeout))
        except OSError as exc:
            deadline.check()
            raise TransientFetchError(f"cannot connect to {host}: {exc}") from None
        connection = http.client.HTTPConnection(host, port, timeout=self._policy.read_timeout)
        try:
            if scheme == "https":
                # The socket timeout bounds the whole handshake (CPython keeps one deadline across it).
                sock.settimeout(deadline.wait(self._policy.read_timeout))
                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
            # Talk to the address that was checked, whatever DNS says now.
            connection.sock = _DeadlineSocket(sock, deadline, self._policy.read_timeout)
            path = parts.path or "/"
            connection.request(
                "GET", path + (f"?{parts.query}" if parts.query else ""), headers={"Host": parts.netloc, "Accept": "image/*"}
            )
            response = connection.getresponse()
            length = response.getheader("Content-Length")
            if length and length.isdigit() and int(length) > self._policy.max_bytes:
                raise FetchError(f"image is larger than {self._policy.max_bytes} bytes")
            body = response.read(self._policy.max_bytes + 1)
            if len(body) > self._policy.max_bytes:
                raise FetchError(f"image is larger than {self._policy.max_bytes} bytes")
            return response.status, response.getheader("Location"), body
        except (OSError, http.client.HTTPException) as exc:
            deadline.check()
            raise TransientFetchError(f"fetching from {host} failed: {exc}") from None
        finally:
            connection.close()
            sock.close()  # http.client does not (see _DeadlineSocket.close)
