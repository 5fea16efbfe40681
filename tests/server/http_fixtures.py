"""A real HTTP(S) server on a loopback address, in a thread, for tests that fetch URLs.

Routes:
  /image.png              a small PNG with Content-Length
  /redirect?to=URL        302 to URL (absolute or relative)
  /chain/N                302 to /chain/N-1; /chain/0 is the image
  /sized?n=N              N bytes with Content-Length
  /chunked?n=N            N bytes, chunked, no Content-Length
  /slow                   a Content-Length of 1000, then one byte every 0.1 s
  /gzip                   the image with Content-Encoding: gzip
  /empty                  200 with no body
  anything else           404

Every request path is recorded in `LoopbackServer.paths`, so a test can prove a refused
target was never reached.
"""

from __future__ import annotations

import datetime
import gzip
import io
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from PIL import Image


def png_bytes(size: int = 8) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (200, 40, 90)).save(buffer, format="PNG")
    return buffer.getvalue()


IMAGE = png_bytes()


@dataclass
class LoopbackServer:
    host: str
    port: int
    scheme: str
    paths: list[str] = field(default_factory=list)
    server_names: list[str | None] = field(default_factory=list)  # TLS SNI seen

    def url(self, path: str = "/image.png", host: str | None = None) -> str:
        host = host or self.host
        netloc = f"[{host}]" if ":" in host else host
        return f"{self.scheme}://{netloc}:{self.port}{path}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        self.server.record.paths.append(self.path)
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        route = parts.path
        if route == "/image.png" or route == "/chain/0":
            self._send(200, IMAGE, {"Content-Type": "image/png"})
        elif route == "/redirect":
            self._send(302, b"", {"Location": query["to"]})
        elif route.startswith("/chain/"):
            self._send(302, b"", {"Location": f"/chain/{int(route[7:]) - 1}"})
        elif route == "/sized":
            self._send(200, b"x" * int(query["n"]))
        elif route == "/chunked":
            self._send_chunked(b"x" * int(query["n"]))
        elif route == "/slow":
            self._trickle(1000)
        elif route == "/gzip":
            self._send(200, gzip.compress(IMAGE), {"Content-Encoding": "gzip"})
        elif route == "/empty":
            self._send(200, b"")
        else:
            self._send(404, b"not found")

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_chunked(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for start in range(0, len(body), 4096):
            piece = body[start : start + 4096]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        self.wfile.write(b"0\r\n\r\n")

    def _trickle(self, length: int) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        try:
            for _ in range(length):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.1)
        except OSError:  # the client gave up, which is what the test wants
            self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str, record: LoopbackServer) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.record = record
        super().__init__((host, 0), _Handler)


@contextmanager
def serve(host: str = "127.0.0.2", tls: ssl.SSLContext | None = None) -> Iterator[LoopbackServer]:
    """Run the routes above on `host` (a loopback address) and a free port until the block ends."""
    record = LoopbackServer(host=host, port=0, scheme="https" if tls else "http")
    server = _Server(host, record)
    if tls is not None:
        tls.sni_callback = lambda _sock, name, _ctx: record.server_names.append(name)
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    record.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield record
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@dataclass(frozen=True)
class Certificates:
    """A throwaway CA and a server certificate it signed for one hostname."""

    ca_pem: Path
    server: ssl.SSLContext

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_pem))


def make_certificates(folder: Path, hostname: str = "localhost") -> Certificates:
    now = datetime.datetime.now(datetime.UTC)
    valid = {"not_valid_before": now - datetime.timedelta(hours=1)}
    valid["not_valid_after"] = now + datetime.timedelta(days=1)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "handspring test CA")])
    ca_cert = (
        x509.CertificateBuilder(subject_name=ca_name, issuer_name=ca_name, **valid)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    cert = (
        x509.CertificateBuilder(subject_name=name, issuer_name=ca_name, **valid)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem = folder / "ca.pem"
    ca_pem.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    chain = folder / "server.pem"
    chain.write_bytes(
        cert.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(chain)
    return Certificates(ca_pem=ca_pem, server=server)
