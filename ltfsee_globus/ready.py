"""Ask a running service's /readyz: `ltfsee-globus ready`, which the web unit
runs after start.

Given a URL it is an ordinary HTTP(S) client (`--cafile` for a private CA).
Without one it reaches this host's service the way its settings say it
listens: a unix socket (BIND=unix:/PATH), plain HTTP, or TLS, where the
certificate served must be CERTFILE's own (pinned: no CA needed, so a
private CA or a self-signed certificate works as it is).
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .config import Settings

_PEM = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


@dataclass(frozen=True)
class Target:
    """Where /readyz is and how to trust it."""

    url: str  # as messages name it
    host: str
    port: int | None = None
    unix: str | None = None  # a unix socket's path
    tls: ssl.SSLContext | None = None
    pin: bytes | None = None  # the DER certificate the server must present


def from_url(url: str, cafile: str | None = None) -> Target:
    parts = urlsplit(url.rstrip("/"))
    tls = ssl.create_default_context(cafile=cafile) if parts.scheme == "https" else None
    return Target(url, parts.hostname or "localhost", parts.port, tls=tls)


def local(settings: Settings) -> Target:
    """This host's service, from BIND and the TLS settings."""
    if settings.BIND.startswith("unix:"):
        path = settings.BIND[len("unix:") :]
        return Target(f"unix:{path}", "localhost", unix=path)
    host, _, port = settings.BIND.rpartition(":")
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "[::]": "::1"}.get(host, host)  # noqa: S104
    host = host.strip("[]")
    if not settings.CERTFILE:
        return Target(f"http://{host}:{port}", host, int(port))
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # trust comes from the pin below
    return Target(f"https://{host}:{port}", host, int(port), tls=context, pin=_der(settings))


def _der(settings: Settings) -> bytes:
    """The first certificate of CERTFILE (the service's own), DER-encoded."""
    found = _PEM.search(Path(settings.CERTFILE).read_text(encoding="ascii", errors="replace"))
    if not found:
        raise ValueError(f"CERTFILE {settings.CERTFILE} holds no PEM certificate")
    return ssl.PEM_cert_to_DER_cert(found.group(0))


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def ask(target: Target, timeout: float = 15.0) -> tuple[bool, str]:
    """(ready, why not) from one GET /readyz."""
    if target.unix:
        conn: http.client.HTTPConnection = _UnixConnection(target.unix, timeout)
    elif target.tls:
        conn = http.client.HTTPSConnection(
            target.host, target.port, timeout=timeout, context=target.tls
        )
    else:
        conn = http.client.HTTPConnection(target.host, target.port, timeout=timeout)
    try:
        conn.connect()
        if target.pin is not None and conn.sock.getpeercert(binary_form=True) != target.pin:
            return False, "the certificate served is not CERTFILE's"
        conn.request("GET", "/readyz", headers={"Host": target.host})
        resp = conn.getresponse()
        body = resp.read()
    except (OSError, http.client.HTTPException) as exc:
        return False, f"no answer ({type(exc).__name__})"
    finally:
        conn.close()
    if resp.status == 200:
        return True, ""
    try:
        return False, json.loads(body).get("detail", f"HTTP {resp.status}")
    except (ValueError, AttributeError):
        return False, f"HTTP {resp.status}, not our problem+json"
