"""Optional bearer authentication for the photo web API: API keys and OIDC tokens.

`Authorization: Bearer <token>` carries either a configured API key or a JWT
access token from an OpenID Connect provider. A JWT must carry a valid
signature from the provider's published keys (JWKS), an unexpired `exp`, and
both the configured issuer (`iss`) and audience (`aud`): a token minted for
another application by the same provider is refused.
"""

from __future__ import annotations

import hmac
import ipaddress
import threading
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
import jwt

# Asymmetric algorithms only: with keys from a JWKS, an HMAC algorithm would let
# anyone who reads the public key sign tokens, and "none" signs nothing.
DEFAULT_ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)
DISCOVERY_PATH = "/.well-known/openid-configuration"


class AuthError(Exception):
    """The request is not authenticated: no token, or a token that is refused (HTTP 401)."""


class AuthUnavailable(Exception):
    """The identity provider's keys could not be fetched, so no token can be checked (HTTP 503)."""


def _is_loopback(host: str | None) -> bool:
    if host is None or host == "localhost":
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _require_https(url: str, what: str) -> None:
    """Keys fetched over plain HTTP could be swapped on the way; loopback is allowed (tests,
    a provider on the same machine)."""
    parts = urlsplit(url)
    if parts.scheme == "https" or (parts.scheme == "http" and _is_loopback(parts.hostname)):
        return
    raise ValueError(f"{what} must be an https:// URL (http only on loopback), got {url!r}")


@dataclass(frozen=True)
class OidcConfig:
    """Accept JWT access tokens from one OpenID Connect issuer, for one audience."""

    issuer: str
    audience: str
    jwks_url: str | None = None  # default: `jwks_uri` from the issuer's discovery document
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    leeway_seconds: float = 30.0  # clock skew allowed on exp / nbf / iat

    def __post_init__(self) -> None:
        if not self.issuer or not self.audience:
            raise ValueError("OIDC needs both an issuer and an audience")
        _require_https(self.issuer, "the OIDC issuer")
        if self.jwks_url is not None:
            _require_https(self.jwks_url, "the OIDC JWKS URL")
        unsafe = {a for a in self.algorithms if a == "none" or a.startswith("HS")}
        if unsafe:
            raise ValueError(f"algorithms {sorted(unsafe)} cannot be verified with public keys")


@dataclass(frozen=True)
class AuthConfig:
    """API keys, an OIDC issuer, or both; a request passes with either."""

    api_keys: tuple[str, ...] = ()
    oidc: OidcConfig | None = None

    def __post_init__(self) -> None:
        if not self.api_keys and self.oidc is None:
            raise ValueError("AuthConfig needs at least one API key or an OIDC issuer")
        for key in self.api_keys:
            if not key or key != key.strip() or " " in key:
                raise ValueError("an API key must be non-empty and contain no spaces")


@dataclass(frozen=True)
class Principal:
    """Who made an authenticated request."""

    kind: Literal["api_key", "oidc"]
    subject: str | None = None
    claims: dict[str, Any] = field(default_factory=dict)


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header, or AuthError saying what is wrong."""
    if not authorization:
        raise AuthError("missing bearer token: send 'Authorization: Bearer <key or token>'")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("the Authorization header must be 'Bearer <key or token>'")
    return token.strip()


class OidcVerifier:
    """Checks JWTs against an issuer's published keys; the keys are fetched on first use and
    refetched when a token names a key id not seen yet (key rotation)."""

    def __init__(self, config: OidcConfig, *, timeout: float = 10.0) -> None:
        self.config = config
        self.timeout = timeout
        self._lock = threading.Lock()
        self._jwks: jwt.PyJWKClient | None = None

    def _jwks_client(self) -> jwt.PyJWKClient:
        with self._lock:
            if self._jwks is None:
                url = self.config.jwks_url or self._discover_jwks_url()
                self._jwks = jwt.PyJWKClient(url, cache_keys=True, timeout=self.timeout)
            return self._jwks

    def _discover_jwks_url(self) -> str:
        url = self.config.issuer.rstrip("/") + DISCOVERY_PATH
        try:
            response = httpx.get(url, timeout=self.timeout)
            response.raise_for_status()
            document = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise AuthUnavailable(f"cannot read the OIDC discovery document {url}: {exc}") from exc
        if not isinstance(document, dict) or document.get("issuer") != self.config.issuer:
            raise AuthUnavailable(
                f"{url} names issuer {document.get('issuer') if isinstance(document, dict) else None!r}, "
                f"not the configured {self.config.issuer!r}"
            )
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise AuthUnavailable(f"{url} has no jwks_uri")
        try:
            _require_https(jwks_uri, "the discovered jwks_uri")
        except ValueError as exc:
            raise AuthUnavailable(str(exc)) from exc
        return jwks_uri

    def verify(self, token: str) -> Principal:
        try:
            signing_key = self._jwks_client().get_signing_key_from_jwt(token)
        except jwt.PyJWKClientConnectionError as exc:
            raise AuthUnavailable(f"cannot fetch the OIDC signing keys: {exc}") from exc
        except (jwt.PyJWKClientError, jwt.DecodeError) as exc:
            raise AuthError(f"token refused: {exc}") from exc
        try:
            claims = jwt.decode(
                token,
                key=signing_key.key,
                algorithms=list(self.config.algorithms),
                audience=self.config.audience,
                issuer=self.config.issuer,
                leeway=self.config.leeway_seconds,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthError("token refused: it has expired") from exc
        except jwt.InvalidAudienceError as exc:
            raise AuthError(f"token refused: wrong audience ({exc})") from exc
        except jwt.InvalidIssuerError as exc:
            raise AuthError(f"token refused: wrong issuer ({exc})") from exc
        except jwt.InvalidSignatureError as exc:
            raise AuthError("token refused: bad signature") from exc
        except jwt.PyJWTError as exc:
            raise AuthError(f"token refused: {exc}") from exc
        return Principal("oidc", subject=claims.get("sub"), claims=claims)


class BearerAuthenticator:
    """Decides whether an `Authorization` header is allowed in, per an AuthConfig."""

    def __init__(self, config: AuthConfig) -> None:
        self.config = config
        self._keys = [key.encode() for key in config.api_keys]
        self._oidc = OidcVerifier(config.oidc) if config.oidc else None

    def authenticate(self, authorization: str | None) -> Principal:
        """The principal, or AuthError (401) / AuthUnavailable (503) with the reason."""
        token = bearer_token(authorization)
        # Every key is compared, in constant time, so timing tells nothing about which is close.
        matches = [hmac.compare_digest(token.encode(), key) for key in self._keys]
        if any(matches):
            return Principal("api_key")
        if self._oidc is not None and token.count(".") == 2:
            return self._oidc.verify(token)
        if self._oidc is not None and not self._keys:
            raise AuthError("token refused: not a JWT")
        raise AuthError("invalid API key")
