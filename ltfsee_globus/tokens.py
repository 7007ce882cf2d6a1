"""WLCG tokens (JWTs): the issuers' keys, kept fresh off the request path,
and the checks the WLCG Common JWT Profile asks for. PyJWT does the
cryptography.

Each issuer the policy lists has its discovery document
(`/.well-known/openid-configuration`) and key set (`jwks_uri`) fetched over
https with a timeout, on a thread of this process, at start and every
KEYS_REFRESH; the last good keys stay in force through an issuer outage. A
token signed with a key we do not know asks for a fetch (at most one per
issuer every REFETCH_GAP) and waits briefly for it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import jwt
import requests

from .policy import ANY_AUDIENCE, Issuer

log = logging.getLogger(__name__)

ALGORITHMS = ["RS256", "ES256"]
LEEWAY = 60.0
#: Seconds between fetches of an issuer's keys, and at least between two
#: fetches asked for by unknown key ids; how long a request waits for one.
KEYS_REFRESH = 6 * 3600.0
REFETCH_GAP = 300.0
KEY_WAIT = 3.0
FETCH_TIMEOUT = 10.0


#: What fetching an issuer's keys raises when the issuer cannot give them.
FETCH_ERRORS = (requests.RequestException, ValueError, KeyError, jwt.PyJWTError)


class TokenRefused(Exception):
    """A token we do not accept; `reason` is a short label (metrics, logs)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class Verified:
    issuer: str
    subject: str
    scopes: tuple[str, ...]


def looks_like_jwt(value: str) -> bool:
    """Three dot-separated parts, the first a JSON header: a token, not a key."""
    parts = value.split(".")
    if len(parts) != 3:
        return False
    try:
        return isinstance(jwt.get_unverified_header(value), dict)
    except jwt.InvalidTokenError:
        return False


def fetch_keys(url: str, timeout: float = FETCH_TIMEOUT) -> dict[str, jwt.PyJWK]:
    """An issuer's signing keys by key id, from its discovery document."""
    conf = requests.get(url.rstrip("/") + "/.well-known/openid-configuration", timeout=timeout)
    conf.raise_for_status()
    jwks_uri = conf.json()["jwks_uri"]
    if not isinstance(jwks_uri, str) or not jwks_uri.startswith("https://"):
        raise ValueError("jwks_uri is not an https:// URL")
    got = requests.get(jwks_uri, timeout=timeout)
    got.raise_for_status()
    keys = {}
    for k in jwt.PyJWKSet.from_dict(got.json()).keys:
        if k.key_id and k.algorithm_name in ALGORITHMS:
            keys[k.key_id] = k
    return keys


class Keys:
    """Each trusted issuer's keys, fetched on a thread of their own."""

    def __init__(
        self,
        issuers: Mapping[str, Issuer],
        fetch: Callable[[str], dict[str, jwt.PyJWK]] = fetch_keys,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.issuers = issuers
        self.fetch = fetch
        self.clock = clock
        self._keys: dict[str, dict[str, jwt.PyJWK]] = {}
        self._fetched_at: dict[str, float] = {}
        self._asked: set[str] = set()
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing: set[str] = set()

    def start(self) -> None:
        if self.issuers and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="token-keys", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._changed:
            self._changed.notify_all()
        if self._thread is not None:
            self._thread.join(FETCH_TIMEOUT * 2 + 1)

    def key(self, issuer: str, kid: str) -> jwt.PyJWK | None:
        """The issuer's key `kid`; an unknown one asks for a fetch (not more
        often than REFETCH_GAP) and waits up to KEY_WAIT for it."""
        found = self._keys.get(issuer, {}).get(kid)
        if found is not None or self._thread is None:
            return found
        with self._changed:
            last = self._fetched_at.get(issuer)
            if last is None or self.clock() - last >= REFETCH_GAP:
                self._asked.add(issuer)
                self._changed.notify_all()
            self._changed.wait_for(
                lambda: kid in self._keys.get(issuer, {}) or issuer not in self._asked, KEY_WAIT
            )
        return self._keys.get(issuer, {}).get(kid)

    def refresh(self, issuer: str) -> None:
        """Fetch one issuer's keys now; on failure keep the last good ones."""
        try:
            keys = self.fetch(issuer)
        except FETCH_ERRORS as exc:
            if issuer not in self._failing:
                self._failing.add(issuer)
                kept = "keeping the keys fetched before" if issuer in self._keys else "no keys yet"
                log.warning("token issuer %s: keys not fetched (%s); %s", issuer, exc, kept)
            keys = None
        with self._changed:
            self._fetched_at[issuer] = self.clock()
            self._asked.discard(issuer)
            if keys is not None:
                if issuer in self._failing:
                    log.info("token issuer %s: keys fetched again", issuer)
                self._failing.discard(issuer)
                self._keys[issuer] = keys
            self._changed.notify_all()

    def _run(self) -> None:
        while not self._stop.is_set():
            now = self.clock()
            for url in self.issuers:
                last = self._fetched_at.get(url)
                if url in self._asked or last is None or now - last >= KEYS_REFRESH:
                    self.refresh(url)
            with self._changed:
                self._changed.wait_for(lambda: bool(self._asked) or self._stop.is_set(), 60.0)


def verify(token: str, issuers: Mapping[str, Issuer], keys: Keys) -> Verified:
    """The token's issuer, subject and scopes, once its signature, issuer,
    audience and times check out; TokenRefused otherwise."""
    try:
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError as exc:
        raise TokenRefused("malformed", f"not a readable token: {exc}") from None
    issuer = claims.get("iss")
    if not isinstance(issuer, str) or issuer not in issuers:
        raise TokenRefused("issuer", f"tokens of issuer {str(issuer)[:200]!r} are not accepted")
    if header.get("alg") not in ALGORITHMS:
        raise TokenRefused("algorithm", f"algorithm {header.get('alg')!r}: RS256 or ES256 only")
    kid = header.get("kid")
    key = keys.key(issuer, kid) if isinstance(kid, str) else None
    if key is None:
        raise TokenRefused("key_id", f"issuer {issuer} has no signing key {str(kid)[:100]!r}")
    try:
        checked = jwt.decode(
            token,
            key,
            algorithms=ALGORITHMS,
            audience=[*issuers[issuer].audiences, ANY_AUDIENCE],
            issuer=issuer,
            leeway=LEEWAY,
            options={"require": ["exp", "iss", "aud", "sub"]},
        )
    except jwt.ExpiredSignatureError:
        raise TokenRefused("expired", "the token has expired") from None
    except jwt.InvalidAudienceError as exc:
        raise TokenRefused("audience", f"the token is not for this service: {exc}") from None
    except jwt.MissingRequiredClaimError as exc:
        reason = "audience" if exc.claim == "aud" else "claims"
        raise TokenRefused(reason, f"the token lacks a claim: {exc}") from None
    except jwt.InvalidSignatureError:
        raise TokenRefused("signature", "the token's signature does not verify") from None
    except jwt.InvalidTokenError as exc:
        raise TokenRefused("claims", f"the token is not valid: {exc}") from None
    scope = checked.get("scope", "")
    scopes = tuple(scope.split()) if isinstance(scope, str) else ()
    return Verified(issuer, str(checked["sub"]), scopes)
