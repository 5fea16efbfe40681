"""Bearer authentication: API keys, and OIDC JWTs checked against keys served by a real
loopback JWKS endpoint (signature, expiry, issuer and audience all enforced)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from handspring.photos.web.auth import (
    AuthConfig,
    AuthError,
    AuthUnavailable,
    BearerAuthenticator,
    OidcConfig,
    bearer_token,
)
from tests.photos.conftest import WebLibrary, serve_library


@dataclass
class OidcProvider:
    """A minimal OpenID provider on loopback: a discovery document and a JWKS, over real HTTP."""

    issuer: str
    audience: str
    key: rsa.RSAPrivateKey
    kid: str = "k1"

    @staticmethod
    def new_key() -> rsa.RSAPrivateKey:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)

    @classmethod
    @contextlib.contextmanager
    def serve(cls, audience: str) -> Iterator[OidcProvider]:
        documents: dict[str, bytes] = {}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = documents.get(self.path)
                self.send_response(200 if body else 404)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body or b"{}")

            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        issuer = f"http://127.0.0.1:{server.server_address[1]}"
        provider = cls(issuer=issuer, audience=audience, key=cls.new_key())
        jwk = RSAAlgorithm.to_jwk(provider.key.public_key(), as_dict=True)
        jwks = {"keys": [{**jwk, "kid": provider.kid, "use": "sig", "alg": "RS256"}]}
        discovery = {"issuer": issuer, "jwks_uri": f"{issuer}/jwks.json"}
        documents["/jwks.json"] = json.dumps(jwks).encode()
        documents["/.well-known/openid-configuration"] = json.dumps(discovery).encode()
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield provider
        finally:
            server.shutdown()
            server.server_close()

    def config(self) -> OidcConfig:
        return OidcConfig(
            issuer=self.issuer, audience=self.audience, jwks_url=f"{self.issuer}/jwks.json"
        )

    def claims(self, **overrides: Any) -> dict[str, Any]:
        """Valid claims, with overrides; None removes a claim, and `exp` is relative to now."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "sub": "user-1", "iss": self.issuer, "aud": self.audience, "iat": now, "exp": 600,
        }  # fmt: skip
        claims.update(overrides)
        if claims.get("exp") is not None:
            claims["exp"] = now + claims["exp"]
        return {k: v for k, v in claims.items() if v is not None}

    def token(
        self, *, signing_key: rsa.RSAPrivateKey | None = None, kid: str | None = None, **claims: Any
    ) -> str:
        return jwt.encode(
            self.claims(**claims),
            signing_key or self.key,
            algorithm="RS256",
            headers={"kid": kid or self.kid},
        )

    def public_pem(self) -> bytes:
        return self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


@pytest.fixture(scope="module")
def provider() -> Iterator[OidcProvider]:
    with OidcProvider.serve(audience="photos") as running:
        yield running


@pytest.fixture
def oidc(provider: OidcProvider) -> BearerAuthenticator:
    return BearerAuthenticator(AuthConfig(oidc=provider.config()))


def test_api_key_is_accepted_and_others_refused() -> None:
    auth = BearerAuthenticator(AuthConfig(api_keys=("first-key-123", "second-key-456")))
    assert auth.authenticate("Bearer second-key-456").kind == "api_key"
    assert auth.authenticate("bearer first-key-123").kind == "api_key"  # scheme is case-blind
    with pytest.raises(AuthError, match="invalid API key"):
        auth.authenticate("Bearer second-key-45")
    with pytest.raises(AuthError, match="missing bearer token"):
        auth.authenticate(None)
    with pytest.raises(AuthError, match="Bearer <key or token>"):
        auth.authenticate("Basic Zmlyc3Qta2V5LTEyMw==")
    with pytest.raises(AuthError, match="Bearer <key or token>"):
        auth.authenticate("Bearer ")


def test_config_refuses_unsafe_settings() -> None:
    with pytest.raises(ValueError, match="at least one"):
        AuthConfig()
    with pytest.raises(ValueError, match="no spaces"):
        AuthConfig(api_keys=("two words",))
    with pytest.raises(ValueError, match="https"):
        OidcConfig(issuer="http://idp.example.com", audience="photos")
    with pytest.raises(ValueError, match="public keys"):
        OidcConfig(issuer="https://idp.example.com", audience="photos", algorithms=("HS256",))
    with pytest.raises(ValueError, match="issuer and an audience"):
        OidcConfig(issuer="https://idp.example.com", audience="")


def test_valid_token_is_accepted(oidc: BearerAuthenticator, provider: OidcProvider) -> None:
    principal = oidc.authenticate(f"Bearer {provider.token(sub='alice')}")
    assert principal.kind == "oidc"
    assert principal.subject == "alice"
    assert principal.claims["aud"] == "photos"


def test_jwks_url_is_discovered_from_the_issuer(provider: OidcProvider) -> None:
    config = OidcConfig(issuer=provider.issuer, audience="photos")  # no jwks_url given
    auth = BearerAuthenticator(AuthConfig(oidc=config))
    assert auth.authenticate(f"Bearer {provider.token(sub='bob')}").subject == "bob"


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"iss": "https://evil.example.com"}, "wrong issuer"),
        ({"aud": "another-app"}, "wrong audience"),
        ({"exp": -3600}, "expired"),  # relative to now
        ({"exp": None}, 'missing the "exp" claim'),
        ({"aud": None}, 'missing the "aud" claim'),
        ({"iss": None}, 'missing the "iss" claim'),
    ],
)
def test_tokens_with_wrong_claims_are_refused(
    oidc: BearerAuthenticator, provider: OidcProvider, claims: dict, reason: str
) -> None:
    with pytest.raises(AuthError, match=reason):
        oidc.authenticate(f"Bearer {provider.token(**claims)}")


def test_token_signed_by_another_key_is_refused(
    oidc: BearerAuthenticator, provider: OidcProvider
) -> None:
    forged = provider.token(signing_key=OidcProvider.new_key())  # same kid, wrong key
    with pytest.raises(AuthError, match="bad signature"):
        oidc.authenticate(f"Bearer {forged}")


def test_tampered_payload_is_refused(oidc: BearerAuthenticator, provider: OidcProvider) -> None:
    header, _, signature = provider.token(sub="alice").split(".")
    forged_claims = json.dumps(provider.claims(sub="mallory")).encode()
    payload = base64.urlsafe_b64encode(forged_claims).rstrip(b"=").decode()
    with pytest.raises(AuthError, match="bad signature"):
        oidc.authenticate(f"Bearer {header}.{payload}.{signature}")


def test_unknown_key_id_and_algorithm_tricks_are_refused(
    oidc: BearerAuthenticator, provider: OidcProvider
) -> None:
    with pytest.raises(AuthError, match="signing key"):
        oidc.authenticate(f"Bearer {provider.token(kid='unknown-kid')}")
    # alg=none: no signature at all.
    unsigned = jwt.encode(provider.claims(), key=None, algorithm="none", headers={"kid": "k1"})
    with pytest.raises(AuthError, match="token refused"):
        oidc.authenticate(f"Bearer {unsigned}")
    # HS256 keyed with the public key, the classic algorithm confusion.
    public_pem = provider.public_pem()
    confused = _hs256(provider.claims(), public_pem, kid=provider.kid)
    with pytest.raises(AuthError, match="token refused"):
        oidc.authenticate(f"Bearer {confused}")
    with pytest.raises(AuthError, match="token refused"):
        oidc.authenticate("Bearer not-a-jwt")


def test_unreachable_jwks_is_a_service_error_not_a_401(provider: OidcProvider) -> None:
    config = OidcConfig(
        issuer=provider.issuer,
        audience="photos",
        jwks_url="http://127.0.0.1:9/jwks.json",  # the discard port: nothing listens
    )
    auth = BearerAuthenticator(AuthConfig(oidc=config))
    with pytest.raises(AuthUnavailable, match="signing keys"):
        auth.authenticate(f"Bearer {provider.token()}")


def test_api_key_and_oidc_together(provider: OidcProvider) -> None:
    auth = BearerAuthenticator(AuthConfig(api_keys=("k-123456",), oidc=provider.config()))
    assert auth.authenticate("Bearer k-123456").kind == "api_key"
    assert auth.authenticate(f"Bearer {provider.token()}").kind == "oidc"
    with pytest.raises(AuthError, match="invalid API key"):
        auth.authenticate("Bearer k-654321")


def test_bearer_token_parsing() -> None:
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("BEARER   abc  ") == "abc"


def _hs256(claims: dict, secret: bytes, kid: str) -> str:
    """An HS256 token made by hand: PyJWT itself refuses to use a PEM key as an HMAC secret."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    body = b64(json.dumps(claims).encode())
    mac = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(mac)}"


# ------------------------------------------------------------------ over HTTP, on the web app

API_KEY = "test-key-0123456789"


@pytest.fixture(scope="module")
def secured(
    web_library: WebLibrary, provider: OidcProvider, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    auth = AuthConfig(api_keys=(API_KEY,), oidc=provider.config())
    with serve_library(web_library, tmp_path_factory.mktemp("thumbs"), auth=auth) as url:
        yield url


def _api_requests(photo_id: int) -> list[tuple[str, str, dict | None]]:
    return [
        ("POST", "/api/search", {"query": "a cat"}),
        ("GET", f"/api/photos/{photo_id}", None),
        ("GET", f"/api/photos/{photo_id}/similar", None),
        ("GET", f"/api/photos/{photo_id}/thumbnail", None),
        ("GET", f"/api/photos/{photo_id}/original", None),
        ("GET", "/api/status", None),
        ("GET", "/api/photos/999999", None),  # even "not found" is not told to strangers
    ]


def test_every_api_route_needs_the_key(secured: str, web_library: WebLibrary) -> None:
    photo_id = next(iter(web_library.vectors))
    with httpx.Client(base_url=secured, timeout=60) as http:
        for method, path, body in _api_requests(photo_id):
            for headers in ({}, {"Authorization": "Bearer wrong-key"}, {"Authorization": API_KEY}):
                response = http.request(method, path, json=body, headers=headers)
                assert response.status_code == 401, (method, path, headers)
                assert response.headers["www-authenticate"] == "Bearer"
                assert response.json()["message"]
            ok = http.request(
                method, path, json=body, headers={"Authorization": f"Bearer {API_KEY}"}
            )
            assert ok.status_code == (404 if "999999" in path else 200), (path, ok.text)


def test_page_health_and_schema_stay_open(secured: str) -> None:
    with httpx.Client(base_url=secured) as http:
        assert http.get("/").status_code == 200
        assert http.get("/static/app.js").status_code == 200
        assert http.get("/_health").status_code == 200
        schema = http.get("/openapi.json").json()
        assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


@pytest.mark.parametrize(
    ("claims", "status", "message"),
    [
        ({}, 200, None),
        ({"iss": "https://evil.example.com"}, 401, "wrong issuer"),
        ({"aud": "another-app"}, 401, "wrong audience"),
        ({"exp": -60}, 401, "expired"),
        ({"signing_key": "other"}, 401, "bad signature"),
    ],
)
def test_oidc_tokens_over_http(
    secured: str, provider: OidcProvider, claims: dict, status: int, message: str | None
) -> None:
    if claims.get("signing_key") == "other":
        claims = {"signing_key": OidcProvider.new_key()}
    token = provider.token(**claims)
    with httpx.Client(base_url=secured) as http:
        response = http.get("/api/status", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == status, response.text
    if message:
        assert message in response.json()["message"]


def test_unreachable_identity_provider_is_503(
    web_library: WebLibrary, provider: OidcProvider, tmp_path: Path
) -> None:
    config = OidcConfig(
        issuer=provider.issuer, audience="photos", jwks_url="http://127.0.0.1:9/jwks.json"
    )
    with (
        serve_library(web_library, tmp_path, auth=AuthConfig(oidc=config)) as url,
        httpx.Client(base_url=url) as http,
    ):
        response = http.get("/api/status", headers={"Authorization": f"Bearer {provider.token()}"})
    assert response.status_code == 503
    assert "signing keys" in response.json()["message"]
