"""SSRF: URL spellings of loopback, private, link-local and cloud-metadata addresses sent
through every route that fetches URLs, with fetching on, against canaries that count
every connection made to them.

Two servers run in this process (uvicorn in a thread), each with `fetch_urls` on and a
tiny random CLIP (images) and, unless --no-imagebind, a tiny random ImageBind (audio,
depth, thermal, IMU), so every modality's URL path is reached:

- "direct": the server as `handspring serve --fetch-urls` runs it (default address
  policy, the system resolver): decimal, octal, hex and short IPv4; IPv6 loopback,
  mapped, IPv4-compatible, NAT64, 6to4 and Teredo forms; zone ids; userinfo and
  fragment tricks; trailing dots; IDN look-alikes; the host's own name; metadata
  addresses of AWS, GCP, Azure, Alibaba and ECS.
- "redirect" and "dns": a public image host is simulated by 127.0.0.2 (the one address
  added to the allowed networks, as the URL fetcher's tests do) and made-up DNS answers
  (cdn.public.test -> 127.0.0.2): redirects from it (301/302/303/307/308, chained,
  scheme-relative) to private targets, names resolving to loopback, a name with a good
  and a bad address, and a name that rebinds between queries.
- "control": an image on the stand-in, which each route must fetch (200), so that the
  refusals are the policy's and not a broken route.

The canaries listen on 127.0.0.1 and ::1 at the port every spelling names. Counted per
request: canary connections (target 0), answers showing the URL got past the address
check ("fetch failed", a timeout, or a body that did not come from the stand-in), 5xx.

    python bench/reliability/ssrf_spellings.py [--no-imagebind] [--json ssrf.json]
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.reliability.common import (  # noqa: E402
    Row,
    busy_note,
    isolate_caches,
    markdown_table,
    tiny_clip,
    tiny_imagebind,
    write_results,
)
from bench.reliability.ssrf_net import STAND_IN, FakeDns, Network, alternating  # noqa: E402

PUBLIC = "cdn.public.test"  # resolves to the stand-in
URL_TIMEOUT_S = 3.0
# What the server says when its URL rules (parse_item, the fetcher's URL and address
# checks) refuse a URL before connecting.
REFUSALS = (
    "is refused",
    "not a valid url",
    "only http and https",
    "credentials are refused",
    "no host",
    "not valid base64",
    "cannot resolve",
)


@dataclass(frozen=True)
class Spelling:
    label: str
    url: str  # {p}: the canaries' port; {host}: this machine's name
    server: str  # "direct" (the server as shipped) or "simulated" (stand-in + fake DNS)
    control: bool = False  # must be fetched

    def text(self, port: int) -> str:
        return self.url.format(p=port, host=socket.gethostname())


def _direct() -> list[Spelling]:
    loopback = {
        "127.0.0.1": "http://127.0.0.1:{p}/a.png",
        "localhost": "http://localhost:{p}/a.png",
        "LOCALHOST": "http://LOCALHOST:{p}/a.png",
        "localhost. (trailing dot)": "http://localhost.:{p}/a.png",
        "127.0.0.1. (trailing dot)": "http://127.0.0.1.:{p}/a.png",
        "the host's own name": "http://{host}:{p}/a.png",
        "decimal 2130706433": "http://2130706433:{p}/a.png",
        "hex 0x7f000001": "http://0x7f000001:{p}/a.png",
        "dotted hex 0x7f.0x0.0x0.0x1": "http://0x7f.0x0.0x0.0x1:{p}/a.png",
        "hex short 0x7f.1": "http://0x7f.1:{p}/a.png",
        "octal 0177.0.0.1": "http://0177.0.0.1:{p}/a.png",
        "octal 017700000001": "http://017700000001:{p}/a.png",
        "leading zeros 127.000.000.001": "http://127.000.000.001:{p}/a.png",
        "short 127.1": "http://127.1:{p}/a.png",
        "short 127.0.1": "http://127.0.1:{p}/a.png",
        "127.127.127.127": "http://127.127.127.127:{p}/a.png",
        "0": "http://0:{p}/a.png",
        "0.0.0.0": "http://0.0.0.0:{p}/a.png",
        "[::1]": "http://[::1]:{p}/a.png",
        "[0:0:0:0:0:0:0:1]": "http://[0:0:0:0:0:0:0:1]:{p}/a.png",
        "[::1%25lo] (zone id)": "http://[::1%25lo]:{p}/a.png",
        "[::]": "http://[::]:{p}/a.png",
        "mapped [::ffff:127.0.0.1]": "http://[::ffff:127.0.0.1]:{p}/a.png",
        "mapped hex [::ffff:7f00:1]": "http://[::ffff:7f00:1]:{p}/a.png",
        "mapped long [0:0:0:0:0:ffff:127.0.0.1]": "http://[0:0:0:0:0:ffff:127.0.0.1]:{p}/a.png",
        "IPv4-compatible [::127.0.0.1]": "http://[::127.0.0.1]:{p}/a.png",
        "IPv4-compatible [::7f00:1]": "http://[::7f00:1]:{p}/a.png",
        "NAT64 [64:ff9b::127.0.0.1]": "http://[64:ff9b::127.0.0.1]:{p}/a.png",
        "NAT64 local [64:ff9b:1::7f00:1]": "http://[64:ff9b:1::7f00:1]:{p}/a.png",
        "6to4 [2002:7f00:1::]": "http://[2002:7f00:1::]:{p}/a.png",
        "Teredo (client 127.0.0.1)": "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]:{p}/a.png",
        "userinfo user:pass@": "http://user:pass@127.0.0.1:{p}/a.png",
        "userinfo example.com@": "http://example.com@127.0.0.1:{p}/a.png",
        "fragment 127.0.0.1#@example.com": "http://127.0.0.1:{p}#@example.com/a.png",
        "backslash 127.0.0.1\\@example.com": "http://127.0.0.1:{p}\\@example.com/a.png",
        "HTTP:// (upper case)": "HTTP://127.0.0.1:{p}/a.png",
        "https:// to the canary": "https://127.0.0.1:{p}/a.png",
        "IDN fullwidth localhost": "http://\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54:{p}/",
        "IDN ideographic dots 127\u30020\u30020\u30021": "http://127\u30020\u30020\u30021:{p}/",
        "IDN circled digits": "http://\u2460\u2461\u2466.0.0.1:{p}/a.png",
        "IDN roman numeral l (loca\u217chost)": "http://loca\u217chost:{p}/a.png",
        "leading space": " http://127.0.0.1:{p}/a.png",
    }
    private = {
        "10.0.0.1": "http://10.0.0.1/a.png",
        "172.16.0.1": "http://172.16.0.1/a.png",
        "192.168.0.1": "http://192.168.0.1/a.png",
        "100.64.0.1 (CGNAT)": "http://100.64.0.1/a.png",
        "198.18.0.1 (benchmarking)": "http://198.18.0.1/a.png",
        "[fc00::1] (unique local)": "http://[fc00::1]/a.png",
        "[fe80::1%25eth0] (link-local)": "http://[fe80::1%25eth0]/a.png",
        "224.0.0.1 (multicast)": "http://224.0.0.1/a.png",
        "255.255.255.255": "http://255.255.255.255/a.png",
    }
    metadata = {
        "169.254.169.254": "http://169.254.169.254/latest/meta-data/",
        "decimal 2852039166": "http://2852039166/latest/meta-data/",
        "hex 0xa9fea9fe": "http://0xa9fea9fe/latest/meta-data/",
        "octal 0251.0376.0251.0376": "http://0251.0376.0251.0376/latest/meta-data/",
        "mapped [::ffff:169.254.169.254]": "http://[::ffff:169.254.169.254]/latest/meta-data/",
        "IPv4-compatible [::a9fe:a9fe]": "http://[::a9fe:a9fe]/latest/meta-data/",
        "NAT64 [64:ff9b::a9fe:a9fe]": "http://[64:ff9b::a9fe:a9fe]/latest/meta-data/",
        "6to4 [2002:a9fe:a9fe::]": "http://[2002:a9fe:a9fe::]/latest/meta-data/",
        "AWS IPv6 [fd00:ec2::254]": "http://[fd00:ec2::254]/latest/meta-data/",
        "Alibaba 100.100.100.200": "http://100.100.100.200/latest/meta-data/",
        "ECS 169.254.170.2": "http://169.254.170.2/v2/credentials",
        "GCP metadata.google.internal": "http://metadata.google.internal/computeMetadata/v1/",
    }
    out = [Spelling(f"loopback: {k}", v, "direct") for k, v in loopback.items()]
    out += [Spelling(f"private: {k}", v, "direct") for k, v in private.items()]
    out += [Spelling(f"metadata: {k}", v, "direct") for k, v in metadata.items()]
    return out


def _simulated() -> list[Spelling]:
    def via(to: str, code: int = 302) -> str:
        return f"http://{PUBLIC}:{{p}}/redirect?code={code}&to={to}"

    redirects = {
        "302 to 127.0.0.1": via("http://127.0.0.1:{p}/a.png"),
        "301 to decimal 2130706433": via("http://2130706433:{p}/a.png", 301),
        "303 to mapped [::ffff:127.0.0.1]": via("http://[::ffff:127.0.0.1]:{p}/a.png", 303),
        "307 to [::1]": via("http://[::1]:{p}/a.png", 307),
        "308 to localhost": via("http://localhost:{p}/a.png", 308),
        "302 to 169.254.169.254": via("http://169.254.169.254/latest/meta-data/"),
        "302 to IPv4-compatible [::7f00:1]": via("http://[::7f00:1]:{p}/a.png"),
        "302 to NAT64 [64:ff9b::7f00:1]": via("http://[64:ff9b::7f00:1]:{p}/a.png"),
        "302 to 0": via("http://0:{p}/a.png"),
        "302 scheme-relative //127.0.0.1": via("//127.0.0.1:{p}/a.png"),
        "302 to a name resolving to 127.0.0.1": via("http://loop.test:{p}/a.png"),
        "302 chain: public -> public -> 127.0.0.1": via(
            f"http://{PUBLIC}:{{p}}/redirect?to=http://127.0.0.1:{{p}}/a.png"
        ),
        "302 to userinfo public@127.0.0.1": via(f"http://{PUBLIC}@127.0.0.1:{{p}}/a.png"),
    }
    names = {
        "name -> 127.0.0.1": "http://loop.test:{p}/a.png",
        "NAME. (upper case, trailing dot) -> 127.0.0.1": "http://LOOP.TEST.:{p}/a.png",
        "name -> ::1": "http://v6.test:{p}/a.png",
        "name -> ::ffff:127.0.0.1": "http://mapped.test:{p}/a.png",
        "name -> 64:ff9b::7f00:1": "http://nat64.test:{p}/a.png",
        "name -> 169.254.169.254": "http://meta.test/latest/meta-data/",
        "name -> [public, 127.0.0.1]": "http://both.test:{p}/a.png",
        "name rebinding public <-> 127.0.0.1": "http://rebind.test:{p}/a.png",
    }
    out = [Spelling(f"redirect: {k}", v, "simulated") for k, v in redirects.items()]
    out += [Spelling(f"dns: {k}", v, "simulated") for k, v in names.items()]
    out.append(Spelling("control: image on the public stand-in", f"http://{PUBLIC}:{{p}}/a.png",
                        "simulated", control=True))  # fmt: skip
    return out


def fake_zone() -> FakeDns:
    return FakeDns(
        {
            PUBLIC: [STAND_IN],
            "loop.test": ["127.0.0.1"],
            "v6.test": ["::1"],
            "mapped.test": ["::ffff:127.0.0.1"],
            "nat64.test": ["64:ff9b::7f00:1"],
            "meta.test": ["169.254.169.254"],
            "both.test": [STAND_IN, "127.0.0.1"],
            "rebind.test": alternating([STAND_IN], ["127.0.0.1"]),
        }
    )


@dataclass(frozen=True)
class Route:
    label: str
    path: str
    body: Callable[[str], dict[str, Any]]


def routes(with_imagebind: bool) -> list[Route]:
    out = [
        Route("POST /api/embed/images", "/api/embed/images",
              lambda u: {"images": [u], "model": "clip"}),
        Route("POST /api/embed (image)", "/api/embed",
              lambda u: {"modality": "image", "inputs": [u], "model": "clip"}),
        Route("POST /v1/embeddings (image)", "/v1/embeddings",
              lambda u: {"input": [u], "model": "clip", "modality": "image"}),
        Route("POST /vectorize (images)", "/vectorize", lambda u: {"images": [u]}),
    ]  # fmt: skip
    if with_imagebind:
        out.append(Route("POST /api/embed/audio", "/api/embed/audio",
                         lambda u: {"audio": [u], "model": "bind"}))  # fmt: skip
        for modality, field_name in (
            ("audio", "audio"),
            ("depth", "depth"),
            ("thermal", "thermal"),
            ("imu", "imu"),
        ):
            out += [
                Route(f"POST /api/embed ({modality})", "/api/embed",
                      lambda u, m=modality: {"modality": m, "inputs": [u], "model": "bind"}),
                Route(f"POST /v1/embeddings ({modality})", "/v1/embeddings",
                      lambda u, m=modality: {"input": [u], "model": "bind", "modality": m}),
                Route(f"POST /vectorize ({field_name})", "/vectorize",
                      lambda u, f=field_name: {f: [u]}),
            ]  # fmt: skip
    return out


@dataclass
class Tally:
    requests: int = 0
    canary_hits: int = 0
    passed_check: int = 0
    server_errors: int = 0
    controls: int = 0
    controls_fetched: int = 0
    findings: list[str] = field(default_factory=list)
    answers: dict[str, int] = field(default_factory=dict)  # status and verdict: count
    samples: dict[str, str] = field(default_factory=dict)  # spelling: one route's answer


def verdict(status: int, message: str, path: str, at_stand_in: bool) -> str:
    """refused (by the URL rules, before connecting), fetched from the stand-in, 5xx, or
    passed the check (a connection tried elsewhere: "fetch failed", a timeout, a body
    from somewhere else). `message`: the error's text, or the native routes' row errors."""
    lowered = message.lower()
    # Weaviate's contract answers bad input with 500 {"error"}: judged by its message.
    contract_500 = path == "/vectorize" and status == 500
    if "internal error" in lowered or (status >= 500 and status != 504 and not contract_500):
        return "5xx"
    if any(words in lowered for words in REFUSALS):
        return "refused"
    if at_stand_in:
        return "fetched from the stand-in"
    return "passed the check"


@contextmanager
def _server(models: tuple[Any, ...], simulated: bool, dns: FakeDns) -> Iterator[str]:
    from handspring.server.app import create_app
    from handspring.server.config import ServerConfig
    from handspring.server.inputs.url_fetch import AddressPolicy, FetchLimits, UrlFetcher
    from tests.support.live_server import running

    config = ServerConfig(models=models, fetch_urls=True, url_timeout_s=URL_TIMEOUT_S)
    app = create_app(config)
    if not simulated:
        with running(app) as url:
            yield url
        return
    from bench.reliability.ssrf_net import resolving_with

    # The stand-in is the one address the policy is told to allow, as in the fetcher's tests.
    state = app.state.handspring
    state.service._fetcher = UrlFetcher(
        AddressPolicy(extra_allowed=(f"{STAND_IN}/32",)), FetchLimits(timeout_s=URL_TIMEOUT_S)
    )
    with resolving_with(dns), running(app) as url:
        yield url


def probe(args: argparse.Namespace, work: Path) -> tuple[Tally, list[Spelling], list[Route]]:
    import httpx

    from handspring.server.config import ModelSpec

    models: tuple[Any, ...] = (ModelSpec("clip", str(tiny_clip(work)), "fp32"),)
    if args.imagebind:
        print("writing a tiny ImageBind (torch) ...", file=sys.stderr)
        models += (ModelSpec("bind", str(tiny_imagebind(work)), "fp32"),)
    spellings = _direct() + _simulated()
    route_list = routes(args.imagebind)
    network = Network()
    tally = Tally()
    dns = fake_zone()
    for host in ("127.0.0.1", "[::1]"):  # the canaries count what reaches them
        httpx.get(f"http://{host}:{network.port}/a.png", timeout=10).raise_for_status()
    if network.canary_connections != 2:
        raise RuntimeError(f"the canaries counted {network.canary_connections} of 2 connections")
    network.canary_connections = 0
    try:
        for simulated in (False, True):
            chosen = [s for s in spellings if (s.server == "simulated") == simulated]
            print(f"{'simulated' if simulated else 'direct'}: {len(chosen)} spellings x "
                  f"{len(route_list)} routes ...", file=sys.stderr)  # fmt: skip
            with (
                _server(models, simulated, dns) as base,
                httpx.Client(base_url=base, timeout=60) as client,
            ):
                for spelling in chosen:
                    for route in route_list:
                        _send(client, network, spelling, route, tally)
    finally:
        network.close()
    return tally, spellings, route_list


def _send(client: Any, network: Network, spelling: Spelling, route: Route, tally: Tally) -> None:
    # A mark of its own on every request, to tell which ones reached the stand-in.
    mark = f"probe={tally.requests}"
    url = spelling.text(network.port)
    url += ("&" if "?" in url else "?") + mark
    before, seen = network.canary_connections, len(network.stand_in_paths)
    response = client.post(route.path, json=route.body(url))
    hits = network.canary_connections - before
    # Served by the stand-in itself: a redirect it answered is not the end of the road.
    reached = any(
        p.endswith(mark) and not p.startswith("/redirect") for p in network.stand_in_paths[seen:]
    )
    text = response.text
    outcome = verdict(response.status_code, _answer_text(response), route.path, reached)
    tally.requests += 1
    where = f"{spelling.label} via {route.label}"
    key = f"{response.status_code} {outcome}"
    tally.answers[key] = tally.answers.get(key, 0) + 1
    if route.label.startswith("POST /v1/embeddings (image)"):
        tally.samples[spelling.label] = f"{response.status_code} {text[:160]}"
    if spelling.control:
        tally.controls += 1
        tally.controls_fetched += outcome == "fetched from the stand-in"
        if outcome != "fetched from the stand-in":
            tally.findings.append(f"control not fetched: {where}: {text[:200]}")
        return
    if hits:
        tally.canary_hits += hits
        tally.findings.append(f"CANARY HIT x{hits}: {where}: {response.status_code} {text[:200]}")
    if outcome == "5xx":
        tally.server_errors += 1
        tally.findings.append(f"5xx: {where}: {response.status_code} {text[:200]}")
    elif outcome == "passed the check":
        tally.passed_check += 1
        tally.findings.append(f"past the address check: {where}: {text[:200]}")


def _answer_text(response: Any) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text
    if response.status_code == 200 and isinstance(body, dict) and body.get("errors"):
        # The native routes answer per item: a refused URL is a row error in a 200.
        return " ".join(e.get("reason", "") for e in body["errors"])
    return response.text if response.status_code != 200 else ""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--no-imagebind", dest="imagebind", action="store_false",
                        help="image routes only (no torch needed)")  # fmt: skip
    parser.add_argument("--work", type=Path, help="keep the models and graphs here")
    parser.add_argument("--json", type=Path, help="write the rows and details here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ssrf-") as tmp:
        work = (args.work or Path(tmp)).resolve()
        work.mkdir(parents=True, exist_ok=True)
        isolate_caches(work)
        tally, spellings, route_list = probe(args, work)
    probes = [s for s in spellings if not s.control]
    scope = f"{tally.requests} requests: {len(probes)} spellings x {len(route_list)} routes"
    rows = [
        Row("SSRF: canary connections", f"{tally.canary_hits} ({scope})", "0",
            tally.canary_hits == 0),
        Row("SSRF: URLs past the address check", str(tally.passed_check), "0",
            tally.passed_check == 0),
        Row("SSRF: 5xx answers", str(tally.server_errors), "0", tally.server_errors == 0),
        Row("SSRF: control image fetched on every route",
            f"{tally.controls_fetched} of {tally.controls}", "all",
            tally.controls_fetched == tally.controls),
    ]  # fmt: skip
    for finding in tally.findings[:40]:
        print(f"  {finding}", file=sys.stderr)
    print(f"  answers: {tally.answers}", file=sys.stderr)
    print(f"\nSSRF spellings ({busy_note()})\n")
    print(markdown_table(rows))
    details = {
        "answers": tally.answers,
        "answer_per_spelling": tally.samples,
        "findings": tally.findings,
        "spellings": [s.label for s in spellings],
        "routes": [r.label for r in route_list],
    }
    write_results(args.json, "ssrf_spellings", rows, details)


if __name__ == "__main__":
    main()
