"""The image URL fetcher against real loopback servers: what it refuses, and that it still fetches.

The servers on 127.0.0.1 and ::1 stand for "our own host": they are up, so a refusal proves the
policy held, not that nothing was listening, and their request logs prove nothing reached them.
127.0.0.2 stands for an allowed image host.
"""

from __future__ import annotations

import asyncio
import io
import ipaddress
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from handspring.server.inputs.url_fetch import AddressPolicy, FetchLimits, UrlFetcher, UrlFetchError
from tests.server.http_fixtures import IMAGE, LoopbackServer, make_certificates, serve

ALLOW_TEST_HOST = AddressPolicy(extra_allowed=("127.0.0.2/32",))
QUICK = FetchLimits(timeout_s=5.0)


def fetch(
    url: str,
    policy: AddressPolicy = ALLOW_TEST_HOST,
    limits: FetchLimits = QUICK,
    **options: Any,
) -> bytes:
    async def run() -> bytes:
        async with UrlFetcher(policy, limits, **options) as fetcher:
            return await fetcher.fetch(url)

    return asyncio.run(run())


def refusal(url: str, reason: str, status: int = 422, **options: Any) -> UrlFetchError:
    """Fetch `url`, expect an error that names it and gives `reason`, and return the error."""
    with pytest.raises(UrlFetchError) as caught:
        fetch(url, **options)
    error = caught.value
    assert str(error).startswith(f"{url}: "), str(error)
    assert reason in error.reason, str(error)
    assert error.status == status
    return error


@pytest.fixture(scope="module")
def _servers() -> Iterator[dict[str, LoopbackServer]]:
    with serve("127.0.0.2") as allowed, serve("127.0.0.1") as own, serve("::1") as own6:
        yield {"allowed": allowed, "own": own, "own6": own6}


@pytest.fixture
def allowed(_servers: dict[str, LoopbackServer]) -> LoopbackServer:
    _servers["allowed"].paths.clear()
    return _servers["allowed"]


@pytest.fixture
def own(_servers: dict[str, LoopbackServer]) -> Iterator[LoopbackServer]:
    """Our own host's servers; the test fails if any request reached them."""
    for server in (_servers["own"], _servers["own6"]):
        server.paths.clear()
    yield _servers["own"]
    assert _servers["own"].paths == [] and _servers["own6"].paths == []


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("http://127.0.0.1:{port}/image.png", "loopback"),
        ("http://localhost:{port}/image.png", "loopback"),
        ("http://[::1]:{port6}/image.png", "loopback"),
        ("http://[::ffff:127.0.0.1]:{port}/image.png", "loopback (it embeds 127.0.0.1)"),
        ("http://0.0.0.0:{port}/image.png", "reaches this host"),
        ("http://[::]:{port6}/image.png", "reaches this host"),
        ("http://2130706433:{port}/image.png", "loopback"),  # decimal 127.0.0.1
        ("http://0x7f.1:{port}/image.png", "loopback"),
        ("http://127.1:{port}/image.png", "loopback"),
        ("http://0177.0.0.1:{port}/image.png", "not a valid URL"),  # octal
        ("http://10.1.2.3/image.png", "private network"),
        ("http://172.16.0.1/image.png", "private network"),
        ("http://192.168.1.1/image.png", "private network"),
        ("http://100.64.0.1/image.png", "not globally routable"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://[fe80::1]/image.png", "link-local"),
        ("http://[fd00:ec2::254]/latest/meta-data/", "cloud metadata"),
        # IPv6 forms that carry an IPv4 address: judged by where the packets end up.
        ("http://[::7f00:1]:{port}/image.png", "loopback (it embeds 127.0.0.1)"),
        ("http://[::a9fe:a9fe]/latest/meta-data/", "link-local, where cloud metadata"),
        ("http://[64:ff9b::7f00:1]:{port}/image.png", "loopback (it embeds 127.0.0.1)"),
        ("http://[64:ff9b:1::7f00:1]:{port}/image.png", "NAT64 local-use prefix"),
        ("http://[2002:7f00:1::1]:{port}/image.png", "loopback (it embeds 127.0.0.1)"),
        ("http://[2002:a9fe:a9fe::]/latest/meta-data/", "link-local"),
        (
            "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]:{port}/image.png",
            "Teredo (2001::/32) reaches its client 127.0.0.1",
        ),
    ],
)
def test_default_policy_refuses_own_host_and_private_networks(
    own: LoopbackServer, _servers: dict[str, LoopbackServer], template: str, reason: str
) -> None:
    url = template.format(port=own.port, port6=_servers["own6"].port)
    refusal(url, reason, policy=AddressPolicy())


def test_allowed_network_fetches_the_image(allowed: LoopbackServer) -> None:
    body = fetch(allowed.url())
    assert body == IMAGE
    assert Image.open(io.BytesIO(body)).size == (8, 8)
    assert allowed.paths == ["/image.png"]


def test_allowing_one_address_does_not_allow_its_neighbours(own: LoopbackServer) -> None:
    refusal(own.url(), "address 127.0.0.1 is refused: loopback")


def test_allow_private_still_refuses_metadata_and_loopback(own: LoopbackServer) -> None:
    private = AddressPolicy(allow_private=True)
    refusal("http://169.254.169.254/latest/meta-data/", "link-local", policy=private)
    refusal(own.url(), "loopback", policy=private)


def test_redirect_target_is_checked(allowed: LoopbackServer, own: LoopbackServer) -> None:
    url = allowed.url(f"/redirect?to={own.url()}")
    error = refusal(url, f"after redirect to {own.url()}: address 127.0.0.1 is refused")
    assert "loopback" in error.reason
    assert allowed.paths == [f"/redirect?to={own.url()}"]


@pytest.mark.parametrize(
    ("location", "reason"),
    [
        ("file:///etc/passwd", "after redirect to file:/etc/passwd: scheme 'file' is refused"),
        ("http://user:pw@127.0.0.2/a.png", "to http://***@127.0.0.2/a.png: URLs with credentials"),
        ("http://169.254.169.254/latest/", "to http://169.254.169.254/latest/: address 169.254."),
        ("http://[::1", "Invalid URL in location header"),
    ],
)
def test_redirect_to_refused_url(allowed: LoopbackServer, location: str, reason: str) -> None:
    error = refusal(allowed.url(f"/redirect?to={location}"), reason)
    assert ":pw@" not in error.reason


def test_relative_redirect_is_named_in_full(allowed: LoopbackServer) -> None:
    hop = allowed.url("/missing.png")
    refusal(allowed.url("/redirect?to=/missing.png"), f"after redirect to {hop}: server answered")


def test_relative_redirect_is_followed(allowed: LoopbackServer) -> None:
    assert fetch(allowed.url("/redirect?to=/image.png")) == IMAGE
    assert allowed.paths == ["/redirect?to=/image.png", "/image.png"]


def test_redirects_are_capped(allowed: LoopbackServer) -> None:
    three = FetchLimits(max_redirects=3, timeout_s=5.0)
    assert fetch(allowed.url("/chain/3"), limits=three) == IMAGE
    refusal(allowed.url("/chain/4"), "more than 3 redirects", limits=three)
    none = FetchLimits(max_redirects=0, timeout_s=5.0)
    refusal(allowed.url("/redirect?to=/image.png"), "more than 0 redirects", limits=none)


def test_body_over_the_limit_is_refused(allowed: LoopbackServer) -> None:
    limits = FetchLimits(max_bytes=10_000, timeout_s=5.0)
    assert len(fetch(allowed.url("/sized?n=10000"), limits=limits)) == 10_000
    refusal(allowed.url("/sized?n=10001"), "Content-Length 10001 is over the limit", limits=limits)
    assert len(fetch(allowed.url("/chunked?n=10000"), limits=limits)) == 10_000
    refusal(allowed.url("/chunked?n=50000"), "over the limit of 10000 bytes", limits=limits)


def test_slow_server_hits_the_total_timeout(allowed: LoopbackServer) -> None:
    limits = FetchLimits(timeout_s=0.5)
    refusal(allowed.url("/slow"), "no complete answer within 0.5 s", status=504, limits=limits)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("file:///etc/passwd", "scheme 'file' is refused"),
        ("ftp://127.0.0.2/image.png", "scheme 'ftp' is refused"),
        ("data:image/png;base64,iVBORw0KGgo=", "scheme 'data' is refused"),
        ("gopher://127.0.0.2:70/_stats", "scheme 'gopher' is refused"),
        ("image.png", "scheme 'none' is refused"),
        ("http:///image.png", "no host"),
    ],
)
def test_only_http_and_https(url: str, reason: str) -> None:
    refusal(url, reason)


def test_credentials_are_refused_and_not_echoed(allowed: LoopbackServer) -> None:
    url = allowed.url().replace("://", "://user:hunter2@")
    with pytest.raises(UrlFetchError) as caught:
        fetch(url)
    assert "credentials are refused" in str(caught.value)
    assert "hunter2" not in str(caught.value)
    assert str(caught.value).startswith("http://***@127.0.0.2")
    assert allowed.paths == []


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/missing.png", "server answered HTTP 404"),
        ("/gzip", "Content-Encoding: gzip"),
        ("/empty", "empty answer (0 bytes)"),
    ],
)
def test_unusable_answers(allowed: LoopbackServer, path: str, reason: str) -> None:
    refusal(allowed.url(path), reason)


def test_unreachable_hosts() -> None:
    with serve("127.0.0.2") as gone:
        closed = gone.url()
    refusal(closed, "fetch failed")
    refusal("http://no-such-host.invalid/image.png", "cannot resolve no-such-host.invalid")


def test_one_bad_url_does_not_sink_the_others(allowed: LoopbackServer, own: LoopbackServer) -> None:
    urls = [allowed.url(), own.url(), allowed.url("/slow"), allowed.url("/chain/1")]

    async def run() -> list[bytes | BaseException]:
        async with UrlFetcher(ALLOW_TEST_HOST, FetchLimits(timeout_s=0.5)) as fetcher:
            results = await asyncio.gather(*map(fetcher.fetch, urls), return_exceptions=True)
            results.append(await fetcher.fetch(allowed.url()))  # still usable afterwards
            return results

    good, refused, slow, redirected, again = asyncio.run(run())
    assert good == redirected == again == IMAGE
    assert isinstance(refused, UrlFetchError) and "loopback" in refused.reason
    assert isinstance(slow, UrlFetchError) and slow.status == 504


def test_environment_proxy_is_ignored(
    allowed: LoopbackServer, own: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, own.url("/"))  # `own` fails the test if the proxy is used
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert fetch(allowed.url()) == IMAGE


def test_https_connects_to_the_checked_ip_but_verifies_the_hostname(tmp_path: Path) -> None:
    certificates = make_certificates(tmp_path, hostname="localhost")
    policy = AddressPolicy(extra_allowed=("127.0.0.1/32", "::1/128"))
    with serve("127.0.0.1", tls=certificates.server) as server:
        url = server.url(host="localhost")
        assert fetch(url, policy, ssl_context=certificates.client_context()) == IMAGE
        assert server.server_names == ["localhost"]
        # The default trust store does not know the test CA: verification is on.
        refusal(url, "CERTIFICATE_VERIFY_FAILED", policy=policy)


@pytest.mark.parametrize(
    ("address", "default", "private"),
    [
        ("8.8.8.8", None, None),
        ("2606:4700::1111", None, None),
        ("::ffff:8.8.8.8", None, None),
        ("10.0.0.1", "private network", None),
        ("192.168.0.10", "private network", None),
        ("fd12:3456::1", "private network", None),
        ("100.64.0.1", "not globally routable", None),
        ("fec0::1", "not globally routable", None),
        ("127.0.0.1", "loopback", "loopback"),
        ("::1", "loopback", "loopback"),
        ("::ffff:127.0.0.1", "loopback", "loopback"),
        ("169.254.169.254", "link-local", "link-local"),
        ("::ffff:169.254.169.254", "link-local", "link-local"),
        ("64:ff9b::a9fe:a9fe", "link-local", "link-local"),  # NAT64 of 169.254.169.254
        ("2002:a9fe:a9fe::1", "link-local", "link-local"),  # 6to4 of 169.254.169.254
        ("64:ff9b::a00:1", "private network", None),  # NAT64 of 10.0.0.1
        ("fe80::1", "link-local", "link-local"),
        ("224.0.0.1", "multicast", "multicast"),
        ("ff02::1", "multicast", "multicast"),
        ("0.0.0.0", "reaches this host", "reaches this host"),
        ("0.1.2.3", "reaches this host", "reaches this host"),
        ("::", "reaches this host", "reaches this host"),
        ("100.100.100.200", "cloud metadata", "cloud metadata"),
        ("fd00:ec2::254", "cloud metadata", "cloud metadata"),
        ("255.255.255.255", "reserved", "reserved"),
        # IPv4-compatible (::a.b.c.d, deprecated): the embedded address, then refused anyway.
        ("::7f00:1", "loopback (it embeds 127.0.0.1)", "loopback (it embeds 127.0.0.1)"),
        ("::a9fe:a9fe", "link-local", "link-local"),
        ("::a00:1", "private network (it embeds 10.0.0.1)", "deprecated IPv4-compatible"),
        ("::808:808", "deprecated IPv4-compatible", "deprecated IPv4-compatible"),
        ("::2", "reaches this host", "reaches this host"),
        # NAT64: the well-known prefix is checked; the local-use one cannot be.
        ("64:ff9b::808:808", None, None),
        ("64:ff9b:1::a9fe:a9fe", "NAT64 local-use prefix", "NAT64 local-use prefix"),
        ("64:ff9b:1:808:8:800::", "NAT64 local-use prefix", "NAT64 local-use prefix"),  # /56
        ("64:ff9b:1::808:808", "NAT64 local-use prefix", "NAT64 local-use prefix"),
        # 6to4: the IPv4 address in bits 16-47.
        ("2002:7f00:1::1", "loopback (it embeds 127.0.0.1)", "loopback"),
        ("2002:a00:1::1", "private network (it embeds 10.0.0.1)", None),
        ("2002:6464:64c8::1", "cloud metadata", "cloud metadata"),  # 100.100.100.200
        ("2002:808:808::1", None, None),
        # Teredo: refused outright; the client (last 32 bits, inverted) is named.
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", "its client 127.0.0.1", "its client 127.0.0.1"),
        ("2001:0:4136:e378:8000:63bf:f7f7:f7f7", "its client 8.8.8.8", "its client 8.8.8.8"),
    ],
)
def test_policy_table(address: str, default: str | None, private: str | None) -> None:
    for policy, reason in (
        (AddressPolicy(), default),
        (AddressPolicy(allow_private=True), private),
    ):
        if reason is None:
            policy.check(address)
            continue
        with pytest.raises(UrlFetchError) as caught:
            policy.check(ipaddress.ip_address(address))
        assert str(caught.value).startswith(f"address {ipaddress.ip_address(address)} is refused")
        assert reason in str(caught.value)


def test_extra_allowed_never_reopens_metadata() -> None:
    policy = AddressPolicy(extra_allowed=("169.254.0.0/16", "0.0.0.0/0"))
    policy.check("203.0.113.7")  # documentation range, allowed only by the explicit network
    with pytest.raises(UrlFetchError, match="link-local"):
        policy.check("169.254.169.254")
    with pytest.raises(UrlFetchError, match="cloud metadata"):
        policy.check("100.100.100.200")


def test_extra_allowed_never_reopens_unchecked_tunnels() -> None:
    policy = AddressPolicy(
        allow_private=True, extra_allowed=("2001::/32", "64:ff9b:1::/48", "::/96", "2002::/16")
    )
    for address, reason in [
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", "Teredo"),
        ("64:ff9b:1::808:808", "NAT64 local-use"),
        ("::a9fe:a9fe", "link-local"),
        ("2002:a9fe:a9fe::1", "link-local"),
    ]:
        with pytest.raises(UrlFetchError, match=reason):
            policy.check(address)
