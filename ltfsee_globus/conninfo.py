"""PostgreSQL connection strings (STORE_URL) as people may see them: never
with their password. A leaf module: config, the store and the CLI use it.

A connection string is a `postgresql://` URI or libpq's `key=value …` form;
libpq itself parses it (psycopg.conninfo), so anything psql accepts works.
"""

from __future__ import annotations

import re

#: Schemes libpq takes for a URI.
SCHEMES = ("postgresql://", "postgres://")
_URI_PASSWORD = re.compile(r"^[a-z]+://[^:/@]*:([^@/]*)@")


def _parse(url: str) -> dict[str, str]:
    """libpq's reading of a connection string (ValueError when it cannot)."""
    import psycopg
    from psycopg import conninfo

    try:
        return {k: str(v) for k, v in conninfo.conninfo_to_dict(url).items()}
    except psycopg.ProgrammingError as exc:
        raise ValueError(redact(str(exc), url).strip()) from None


def secret_of(url: str) -> str | None:
    """The password a connection string carries, if any (found even in one
    libpq cannot parse, so an error about it can still hide it)."""
    m = _URI_PASSWORD.match(url)
    if m and m.group(1):
        return m.group(1)
    m = re.search(r"(?:^|\s)password\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", url)
    if m:
        return m.group(1).strip("'") or None
    return None


def redact(text: str, url: str) -> str:
    """`text` with the password of `url` (if any) replaced by ***."""
    secret = secret_of(url)
    return text.replace(secret, "***") if secret else text


def problem(url: str) -> str | None:
    """Why STORE_URL cannot work (without its password), or None."""
    if "=" not in url and not url.startswith(SCHEMES):
        return "STORE_URL must be a postgresql:// URL or a libpq key=value connection string"
    try:
        _parse(url)
    except ValueError as exc:
        return f"STORE_URL cannot be parsed: {exc}"
    return None


def describe(url: str) -> str:
    """Which database a connection string names, without its password."""
    try:
        params = _parse(url)
    except ValueError:
        return "postgresql (a connection string libpq cannot parse)"
    shown = " ".join(
        f"{k}={params[k]}" for k in ("host", "port", "dbname", "user", "sslmode") if k in params
    )
    return f"postgresql {shown}".rstrip()


def given(url: str) -> set[str]:
    """The parameters a connection string sets."""
    return set(_parse(url))
