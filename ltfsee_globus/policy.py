"""Who may stage what: identities and their rights by path (docs/wlcg.md).

An identity is an API key (by its name), a WLCG token (its `sub` at its
issuer, with the token's scopes) or an X.509 proxy (its user's DN and VOMS
FQANs, as a verifying front end hands them over: auth.py). Its rights are
operations (stage, poll, cancel, release, archiveinfo) on roots: a root
covers itself and what lies below it, by path components (`/data` covers
`/data/x`, not `/data2`).

The site's policy file (POLICY_FILE, TOML) says who has what:

    [[allow]]                 # an API key, by its name in AUTH_KEY
    key = "fts"
    roots = ["/gpfs/atlas"]
    operations = ["stage", "poll", "cancel", "release", "archiveinfo"]

    [[allow]]                 # X.509 proxies with this VOMS FQAN (or: dn = "...")
    fqan = "/atlas/Role=production"
    roots = ["/gpfs/atlas"]
    operations = ["stage", "poll", "cancel", "release", "archiveinfo"]

    [issuers."https://wlcg.example.org"]  # a token issuer the site trusts
    base_path = "/gpfs/wlcg"              # its scopes' paths are under it
    audiences = ["https://tape.example.org"]

A token's rights are its scopes (the WLCG Common JWT Profile):
`storage.stage:/p` gives stage, poll, cancel, release and archiveinfo under
base_path/p, `storage.read:/p` archiveinfo. Without a policy file every key may do
everything under MANAGED_ROOTS, and no token is accepted (as before).
"""

from __future__ import annotations

import posixpath
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .paths import under

OPERATIONS = ("stage", "poll", "cancel", "release", "archiveinfo")
#: What each WLCG storage scope grants (the profile's `storage.stage`
#: authorises staging and following it; reading where a file is is a read).
SCOPES = {
    "storage.stage": ("stage", "poll", "cancel", "release", "archiveinfo"),
    "storage.read": ("archiveinfo",),
}
#: The `aud` that means any service (WLCG Common JWT Profile).
ANY_AUDIENCE = "https://wlcg.cern.ch/jwt/v1/any"


class PolicyError(Exception):
    """The policy file cannot be read or says something we cannot follow."""


@dataclass(frozen=True)
class Identity:
    """Who made a request: `kind` key, token or x509; `name` as operators see
    it and as requests are owned (a key's name, sub@issuer, a DN)."""

    kind: str
    name: str
    issuer: str = ""
    scopes: tuple[str, ...] = ()
    fqans: tuple[str, ...] = ()


@dataclass(frozen=True)
class Rights:
    """Operations an identity may use, each on its roots."""

    roots: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def may(self, operation: str) -> bool:
        """Whether the identity may use `operation` anywhere."""
        return bool(self.roots.get(operation))

    def allows(self, operation: str, path: str) -> bool:
        """Whether `path` lies under a root of `operation`, by whole components."""
        return under(path, self.roots.get(operation, ())) is not None


def combine(grants: Iterable[tuple[Iterable[str], Iterable[str]]]) -> Rights:
    """Rights from (operations, roots) pairs."""
    out: dict[str, list[str]] = {}
    for operations, roots in grants:
        for op in operations:
            out.setdefault(op, []).extend(roots)
    return Rights({op: tuple(dict.fromkeys(rs)) for op, rs in out.items()})


def scope_path(raw: str, base: str) -> str | None:
    """The absolute path a scope's path names under the issuer's `base`; None
    when it names none (empty, relative after the colon, or with `..`)."""
    if not raw.startswith("/") or ".." in raw.split("/") or "\x00" in raw:
        return None
    return posixpath.normpath(base.rstrip("/") + raw) if raw != "/" else (base.rstrip("/") or "/")


def token_rights(scopes: Iterable[str], base: str) -> Rights:
    """Rights a token's scopes give (scopes without a path, or with `..`, give none)."""
    grants = []
    for scope in scopes:
        name, sep, raw = scope.partition(":")
        if name in SCOPES and sep:
            path = scope_path(raw, base)
            if path is not None:
                grants.append((SCOPES[name], [path]))
    return combine(grants)


@dataclass(frozen=True)
class Issuer:
    """A token issuer the site trusts: its base path and the audiences it accepts."""

    url: str
    base_path: str
    audiences: tuple[str, ...]


def fqan_matches(wanted: str, held: str) -> bool:
    """Whether a proxy's FQAN `held` is what the policy's `wanted` names: the
    same, or (`wanted` naming a group, no role) a role in that group."""
    if wanted == held:
        return True
    group = held.split("/Role=")[0]
    return "/Role=" not in wanted and group == wanted.rstrip("/")


@dataclass(frozen=True)
class Policy:
    """The site's policy: grants per key name, per DN and per FQAN, and the
    trusted issuers. `None` keys (no policy file): every key everything under
    `everywhere`, and no one else anything."""

    keys: Mapping[str, Rights] | None
    issuers: Mapping[str, Issuer]
    everywhere: tuple[str, ...]
    dns: Mapping[str, Rights] = field(default_factory=dict)
    fqans: Mapping[str, Rights] = field(default_factory=dict)

    def rights(self, who: Identity) -> Rights:
        if who.kind == "key":
            if self.keys is None:
                return combine([(OPERATIONS, self.everywhere)])
            return self.keys.get(who.name, Rights())
        if who.kind == "token" and who.issuer in self.issuers:
            return token_rights(who.scopes, self.issuers[who.issuer].base_path)
        if who.kind == "x509":
            found = [self.dns[who.name]] if who.name in self.dns else []
            found += [
                r for f, r in self.fqans.items() if any(fqan_matches(f, h) for h in who.fqans)
            ]
            return combine(([op], roots) for r in found for op, roots in r.roots.items())
        return Rights()


def open_policy(path: Path | None, key_names: Iterable[str], roots: Iterable[str]) -> Policy:
    """The policy of the file at `path` (None: keys everywhere, no tokens);
    PolicyError naming every problem in it."""
    roots = tuple(roots)
    if path is None:
        return Policy(None, {}, roots)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise PolicyError(f"{path}: {exc}") from None
    problems: list[str] = []
    known = set(key_names)
    grants: dict[str, dict[str, list[tuple[Iterable[str], Iterable[str]]]]] = {
        "key": {},
        "dn": {},
        "fqan": {},
    }
    for n, entry in enumerate(data.get("allow", []), 1):
        where = f"[[allow]] #{n}"
        if not isinstance(entry, dict):
            problems.append(f"{where}: not a table")
            continue
        ops, rts = entry.get("operations"), entry.get("roots")
        who = [k for k in ("key", "dn", "fqan") if k in entry]
        if len(who) != 1 or not isinstance(entry[who[0]], str) or not entry[who[0]]:
            problems.append(f"{where}: name exactly one of key, dn or fqan (a string)")
            continue
        kind, name = who[0], entry[who[0]]
        if kind == "key" and name not in known:
            problems.append(f"{where}: key must name a key of AUTH_KEY")
        if kind != "key" and not name.startswith("/"):
            problems.append(f"{where}: a {kind} starts with '/'")
        if not _strings(ops) or not set(ops) <= set(OPERATIONS):
            problems.append(f"{where}: operations must be a list of {', '.join(OPERATIONS)}")
        if not _strings(rts) or not all(_absolute(r) for r in rts):
            problems.append(f"{where}: roots must be a list of absolute paths without '..'")
        if not problems:
            grants[kind].setdefault(name, []).append((ops, [posixpath.normpath(r) for r in rts]))
    issuers: dict[str, Issuer] = {}
    for url, conf in (data.get("issuers") or {}).items():
        where = f'[issuers."{url}"]'
        base, auds = (conf or {}).get("base_path"), (conf or {}).get("audiences")
        if not url.startswith("https://"):
            problems.append(f"{where}: an issuer is an https:// URL")
        if not isinstance(base, str) or not _absolute(base):
            problems.append(f"{where}: base_path must be an absolute path without '..'")
        if not _strings(auds) or not auds:
            problems.append(f"{where}: audiences must be a non-empty list of strings")
        if not problems:
            issuers[url] = Issuer(url, posixpath.normpath(base), tuple(auds))
    unknown = set(data) - {"allow", "issuers"}
    if unknown:
        problems.append(f"unknown section(s): {', '.join(sorted(unknown))}")
    if problems:
        raise PolicyError(f"{path}: " + "; ".join(problems))
    rights = {kind: {k: combine(g) for k, g in by.items()} for kind, by in grants.items()}
    return Policy(rights["key"], issuers, roots, rights["dn"], rights["fqan"])


def _strings(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _absolute(path: str) -> bool:
    return path.startswith("/") and ".." not in path.split("/") and "\x00" not in path
