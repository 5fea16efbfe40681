"""Fetch image bytes from http(s) URLs without letting a caller reach our own network (SSRF).

The address check runs inside the connection: a network backend resolves the host itself,
checks every address it got, and connects to a checked IP. Nothing is resolved twice, so a DNS
answer that changes between check and connect (rebinding) cannot slip through, and every
redirect hop passes the same gate. TLS still verifies and sends SNI for the hostname.

Status codes carried by `UrlFetchError.status`: 422 for anything the caller can fix by sending
another URL (refused scheme or address, too big, upstream error, unreachable host); 504 when
the whole fetch, redirects included, did not finish within `FetchLimits.timeout_s`, because the
upstream was too slow and a retry may succeed.

Ports are not restricted: the address is what guards our network, and any port on a public
host is already open to the whole internet.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import ssl
from dataclasses import dataclass
from typing import Any

import anyio
import httpcore
import httpx

from handspring.errors import HandspringError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Refused whatever the policy says: these reach the host itself or a cloud's metadata service.
_NEVER_ALLOWED: tuple[IPNetwork, ...] = (
    ipaddress.ip_network("0.0.0.0/8"),  # Linux connects 0.x to the local host
    ipaddress.ip_network("100.100.100.200/32"),  # Alibaba Cloud metadata
    ipaddress.ip_network("fd00:ec2::254/128"),  # AWS metadata over IPv6
)
# IPv6 ranges that carry an IPv4 address: packets to them end up at that IPv4 host.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052: IPv4 in the last 32 bits
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")  # RFC 4291, deprecated: ::a.b.c.d
# Where these carry their IPv4 address cannot be told from the address alone.
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215; the prefix length is local
_TEREDO = ipaddress.ip_network("2001::/32")  # RFC 4380
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#]*@")


class UrlFetchError(HandspringError):
    """A URL was refused or could not be fetched. `status` is what the server should answer."""

    def __init__(self, reason: str, url: str = "", status: int = 422) -> None:
        self.reason = reason
        self.url = url
        self.status = status
        super().__init__(f"{url}: {reason}" if url else reason)


@dataclass(frozen=True)
class AddressPolicy:
    """Which resolved addresses may be connected to. Default: only globally routable unicast.

    `allow_private` admits private, shared (CGNAT) and unique-local ranges for an internal
    image host, but not loopback. `extra_allowed` admits exact networks (e.g. "127.0.0.2/32").
    Link-local (169.254/16, fe80::/10), multicast, unspecified and cloud metadata addresses
    are refused whatever the settings.

    An IPv6 address that carries an IPv4 one is judged by that IPv4 address too: mapped
    (::ffff:a.b.c.d), NAT64 (64:ff9b::a.b.c.d), 6to4 (2002:AABB:CCDD::) and the deprecated
    IPv4-compatible form (::a.b.c.d, refused in any case). Teredo (2001::/32) and the NAT64
    local-use prefix (64:ff9b:1::/48) are refused outright, whatever the settings: a Teredo
    address reaches its client through a relay over IPv4 (the client's address is stored
    inverted in the last 32 bits), and where a local-use NAT64 address carries its IPv4
    address depends on the network's prefix length, so neither can be checked here.
    """

    allow_private: bool = False
    extra_allowed: tuple[IPNetwork, ...] = ()

    def __post_init__(self) -> None:
        networks = tuple(ipaddress.ip_network(n) for n in self.extra_allowed)
        object.__setattr__(self, "extra_allowed", networks)  # accepts strings from config

    def check(self, address: IPAddress | str) -> None:
        """Raise `UrlFetchError` naming the address and why it may not be connected to."""
        address = ipaddress.ip_address(address) if isinstance(address, str) else address
        reason = self._refusal(address)
        if reason is not None:
            raise UrlFetchError(f"address {address} is refused: {reason}")

    def _refusal(self, address: IPAddress) -> str | None:
        if (tunnel := _unchecked_tunnel(address)) is not None:
            return tunnel
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            inner = self._refusal(embedded)
            if inner is not None:
                return f"{inner} (it embeds {embedded})"
            if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
                return None  # a mapped address is its IPv4 address and nothing else
            if address in _IPV4_COMPATIBLE:
                return f"deprecated IPv4-compatible IPv6 address (it embeds {embedded})"
        if address.is_link_local:
            return "link-local, where cloud metadata services live"
        if address.is_multicast:
            return "multicast"
        if address.is_unspecified or any(address in n for n in _NEVER_ALLOWED):
            return "it reaches this host or a cloud metadata service"
        if any(address in network for network in self.extra_allowed):
            return None
        # Python 3.11 counts deprecated IPv6 site-local (fec0::/10) as global; it is not.
        if address.is_global and not getattr(address, "is_site_local", False):
            return None
        if address.is_loopback:
            return "loopback"
        if address.is_reserved:
            return "reserved range"
        if self.allow_private:
            return None
        return "private network" if address.is_private else "not globally routable"


def _unchecked_tunnel(address: IPAddress) -> str | None:
    """Why an IPv6 address whose IPv4 destination cannot be checked is refused, if it is one."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address in _TEREDO:
        client = ipaddress.IPv4Address(~int(address) & 0xFFFFFFFF)  # stored inverted
        return f"Teredo (2001::/32) reaches its client {client} through a relay, unchecked"
    if address in _NAT64_LOCAL:
        return (
            "NAT64 local-use prefix (64:ff9b:1::/48): where it carries an IPv4 address is "
            "the network's choice, so that address cannot be checked"
        )
    return None


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, NAT64, 6to4, IPv4-compatible): it is
    where packets end up."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address in _NAT64 or (address in _IPV4_COMPATIBLE and int(address) > 1):  # not ::, ::1
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.ipv4_mapped or address.sixtofour


@dataclass(frozen=True)
class FetchLimits:
    max_bytes: int = 20 * 1024 * 1024
    timeout_s: float = 10.0  # total, across redirects
    max_redirects: int = 3


class _CheckedBackend(httpcore.AsyncNetworkBackend):
    """Resolves, checks every address against the policy, then connects to a checked IP."""

    def __init__(self, policy: AddressPolicy) -> None:
        self._policy = policy
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
        for address in addresses:  # one bad answer refuses the host: it may be a rebinding probe
            self._policy.check(address)
        failure: Exception = httpcore.ConnectError(f"no address for {host}")
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    str(address), port, timeout, local_address, socket_options
                )
            except httpcore.ConnectError as exc:
                failure = exc
        raise failure

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _CheckedTransport(httpx.AsyncHTTPTransport):
    def __init__(self, policy: AddressPolicy, ssl_context: ssl.SSLContext) -> None:
        super().__init__(verify=ssl_context, trust_env=False)
        # httpx takes no network backend, so its pool is swapped for one that connects only
        # through the check; every request of this transport goes through `_pool`.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context, network_backend=_CheckedBackend(policy)
        )


_DEFAULT_POLICY = AddressPolicy()
_DEFAULT_LIMITS = FetchLimits()


class UrlFetcher:
    """Fetches http(s) URLs under an address policy and size/time limits. Share one per server."""

    def __init__(
        self,
        policy: AddressPolicy = _DEFAULT_POLICY,
        limits: FetchLimits = _DEFAULT_LIMITS,
        *,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._limits = limits
        context = ssl_context or httpx.create_ssl_context(trust_env=False)
        self._client = httpx.AsyncClient(
            transport=_CheckedTransport(policy, context),
            trust_env=False,  # an environment proxy would connect for us, past the check
            follow_redirects=False,
            timeout=limits.timeout_s,
            # Images are compressed already; identity keeps the byte cap a cap on memory.
            headers={"Accept-Encoding": "identity", "User-Agent": "handspring-url-fetch"},
        )

    async def fetch(self, url: str) -> bytes:
        """The body of `url`, or `UrlFetchError` naming the URL and the reason."""
        shown = _shown(url)
        try:
            with anyio.fail_after(self._limits.timeout_s):
                return await self._follow(url)
        except UrlFetchError as exc:
            raise UrlFetchError(exc.reason, shown, exc.status) from None
        except (TimeoutError, httpx.TimeoutException):
            reason = f"no complete answer within {self._limits.timeout_s:g} s"
            raise UrlFetchError(reason, shown, 504) from None
        except httpx.HTTPError as exc:
            raise UrlFetchError(f"fetch failed: {exc}", shown) from None

    async def _follow(self, url: str) -> bytes:
        target = _parse(url)
        hop = ""  # names the redirect a refusal happened on
        for _ in range(self._limits.max_redirects + 1):
            try:
                async with self._client.stream("GET", target) as response:
                    if not response.is_redirect:
                        return await self._read_body(response)
                    # httpx has already refused a Location that is not a URL.
                    joined = str(response.url.join(response.headers["location"]))
                    hop = f"after redirect to {_shown(joined)}: "
                    target = _parse(joined)
            except UrlFetchError as exc:
                raise UrlFetchError(hop + exc.reason, status=exc.status) from None
        raise UrlFetchError(f"more than {self._limits.max_redirects} redirects")

    async def _read_body(self, response: httpx.Response) -> bytes:
        if not response.is_success:
            raise UrlFetchError(f"server answered HTTP {response.status_code}")
        limit = self._limits.max_bytes
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise UrlFetchError(f"Content-Length {declared} is over the limit of {limit} bytes")
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise UrlFetchError(f"encoded answer (Content-Encoding: {encoding}) is refused")
        body = bytearray()
        async for chunk in response.aiter_raw():
            body += chunk
            if len(body) > limit:
                raise UrlFetchError(f"answer is over the limit of {limit} bytes")
        if not body:
            raise UrlFetchError("empty answer (0 bytes)")
        return bytes(body)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> UrlFetcher:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def _shown(url: str) -> str:
    """`url` fit for an error message: no password, and not megabytes of it."""
    url = _USERINFO.sub(r"\1***@", url)
    return url if len(url) <= 200 else url[:200] + "..."


def _parse(url: str | httpx.URL) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise UrlFetchError(f"not a valid URL ({exc})") from None
    if parsed.scheme not in ("http", "https"):
        scheme = parsed.scheme or "none"
        raise UrlFetchError(f"scheme {scheme!r} is refused: only http and https are fetched")
    if parsed.userinfo:
        raise UrlFetchError("URLs with credentials are refused")
    if not parsed.host:
        raise UrlFetchError("URL has no host")
    return parsed
