"""API keys: `X-API-KEY` or `Authorization: Bearer`, compared in constant time;
WLCG tokens (a bearer JWT of an issuer the policy trusts, tokens.py); X.509
proxies, verified by a front end (Apache httpd with mod_ssl and
mod_gridsite, deploy/apache-gridsite.conf) that hands over what it verified
as X-Grst-Cred-N headers, honoured only from FRONTEND_ADDRESSES; for
browsers, a signed session cookie set by the status page's login form."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Mapping, Sequence

from flask import Request
from itsdangerous import BadSignature, URLSafeTimedSerializer

from .errors import ApiError
from .metrics import Metrics
from .policy import Identity, Policy
from .tokens import Keys, TokenRefused, looks_like_jwt, verify

log = logging.getLogger(__name__)

#: The status page's session cookie, and how long a login lasts.
SESSION_COOKIE = "ltfsee_session"
SESSION_SECONDS = 12 * 3600
_SALT = "ltfsee-globus status page"


def presented_key(request: Request) -> str | None:
    key = request.headers.get("X-API-KEY")
    if key:
        return key
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def key_name(key: str, keys: Mapping[str, str]) -> str | None:
    """The name of the configured key equal to `key`, or None.

    Every configured key is compared, so timing says nothing about which
    key, or how much of one, matched.
    """
    given = key.encode()
    matched = None
    for name, expected in keys.items():
        if hmac.compare_digest(given, expected.encode()) and matched is None:
            matched = name
    return matched


def reject(request: Request) -> None:
    """Log a rejected key: who tried what, never the key."""
    log.warning(
        "rejected an API key from %s for %s %s", request.remote_addr, request.method, request.path
    )


def authenticate(request: Request, keys: Mapping[str, str]) -> str:
    """The name of the key the request carries; 401 when none matches."""
    key = presented_key(request)
    if key is None:
        raise ApiError(401, "Unauthorized", "an API key is required (X-API-KEY header)")
    matched = key_name(key, keys)
    if matched is None:
        reject(request)
        raise ApiError(401, "Unauthorized", "the API key is not valid")
    return matched


#: What the front end verified: GRST_CRED_0, _1, ... of mod_gridsite, each
#: "KIND NOTBEFORE NOTAFTER DELEGATION VALUE" (X509USER: the user's DN;
#: GSIPROXY: a proxy's DN; VOMS: an FQAN).
CRED_HEADER = "X-Grst-Cred-"


def peer(request: Request) -> str:
    """The address the request came from on the wire (not what X-Forwarded-For
    says); `unix` for a unix socket."""
    orig = request.environ.get("werkzeug.proxy_fix.orig") or {}
    return orig.get("REMOTE_ADDR") or request.environ.get("REMOTE_ADDR") or "unix"


def x509_identity(creds: list[str]) -> Identity | None:
    """The user's DN and VOMS FQANs from the front end's credential lines."""
    dn, fqans = None, []
    for line in creds:
        parts = line.split(" ", 4)
        if len(parts) < 5:
            continue
        kind, value = parts[0], parts[4]
        if kind == "X509USER" and dn is None:
            dn = value
        elif kind == "VOMS":
            fqans.append(value)
    return None if dn is None else Identity("x509", dn, fqans=tuple(fqans))


def front_end(request: Request, frontends: Sequence[str], metrics: Metrics) -> Identity | None:
    """The X.509 identity a trusted front end verified, if it sent one.
    The same headers from anyone else are ignored, logged and counted."""
    creds = [
        (k, v)
        for k, v in request.headers.items()
        if k.lower().startswith(CRED_HEADER.lower()) and v and v != "(null)"
    ]
    if not creds:
        return None
    sender = peer(request)
    if sender not in frontends:
        metrics.refusal("frontend")
        log.warning(
            "identity headers from %s, which is not a trusted front end (FRONTEND_ADDRESSES): "
            "ignored",
            sender,
        )
        return None
    ordered = sorted(creds, key=lambda kv: kv[0][len(CRED_HEADER) :].zfill(4))
    return x509_identity([v for _, v in ordered])


def identify(
    request: Request,
    keys: Mapping[str, str],
    policy: Policy,
    token_keys: Keys,
    metrics: Metrics,
    frontends: Sequence[str] = (),
) -> Identity:
    """Who made the request: an X.509 proxy a trusted front end verified; a
    WLCG token of an issuer the policy trusts (a bearer JWT, when the policy
    lists issuers); else an API key; 401 when none holds. A refusal is
    logged and counted by reason, naming no secret."""
    found = front_end(request, frontends, metrics)
    if found is not None:
        return found
    presented = presented_key(request)
    if presented is None:
        metrics.refusal("missing")
        raise ApiError(401, "Unauthorized", "an API key or a bearer token is required")
    if policy.issuers and not request.headers.get("X-API-KEY") and looks_like_jwt(presented):
        token_keys.start()
        try:
            v = verify(presented, policy.issuers, token_keys)
        except TokenRefused as exc:
            metrics.refusal(exc.reason)
            log.warning(
                "refused a token from %s for %s %s: %s",
                request.remote_addr,
                request.method,
                request.path,
                exc,
            )
            raise ApiError(401, "Unauthorized", str(exc)) from None
        return Identity("token", f"{v.subject}@{v.issuer}", v.issuer, v.scopes)
    try:
        return Identity("key", authenticate(request, keys))
    except ApiError:
        metrics.refusal("key")
        raise


def _signer(key: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(key, salt=_SALT)


def session_token(name: str, keys: Mapping[str, str]) -> str:
    """A cookie value proving a login with key `name`, signed with that key,
    so rotating the key ends its sessions. The key itself is never in it."""
    return _signer(keys[name]).dumps(name)


def session_name(token: str, keys: Mapping[str, str]) -> str | None:
    """The key name a session cookie was signed for, if valid and fresh."""
    found = None
    for name, key in keys.items():
        try:
            signed = _signer(key).loads(token, max_age=SESSION_SECONDS)
        except BadSignature:
            continue
        if signed == name and found is None:
            found = name
    return found


def page_user(request: Request, keys: Mapping[str, str]) -> str | None:
    """Who may see the status page: a valid API key header (scripts, curl)
    or a valid session cookie (browsers). None otherwise."""
    key = presented_key(request)
    if key is not None:
        matched = key_name(key, keys)
        if matched is None:
            reject(request)
        return matched
    token = request.cookies.get(SESSION_COOKIE)
    return session_name(token, keys) if token else None
