"""A WLCG token issuer on loopback for the tests: its discovery document and
key set over https (a throwaway certificate), keys made per run, and
tokens signed with them (or with a key it never published)."""

from __future__ import annotations

import datetime
import http.server
import ipaddress
import json
import ssl
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

AUDIENCE = "https://tape.example.org"


def _certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (it is its own CA), and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test issuer")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "issuer-cert.pem", directory / "issuer-key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


class LoopbackIssuer:
    """Serves /.well-known/openid-configuration and /jwks until stopped."""

    def __init__(self, directory: Path) -> None:
        self.ca_file, key_file = _certificate(directory)
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kids = {"rsa": f"rsa-{uuid.uuid4().hex[:8]}", "ec": f"ec-{uuid.uuid4().hex[:8]}"}
        self.requests = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def setup(self) -> None:
                # the TLS handshake on the request's thread: one that fails
                # is closed by socketserver (in accept() it would leak)
                self.request.do_handshake()
                super().setup()

            def do_GET(self) -> None:
                outer.requests += 1
                if self.path == "/.well-known/openid-configuration":
                    body: dict[str, Any] = {"issuer": outer.url, "jwks_uri": outer.url + "/jwks"}
                elif self.path == "/jwks":
                    body = {"keys": outer.jwks()}
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = False  # stop() waits for each request, closing its socket
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.ca_file, key_file)
        self.server.socket = context.wrap_socket(
            self.server.socket, server_side=True, do_handshake_on_connect=False
        )
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def jwks(self) -> list[dict]:
        out = []
        for name, key, alg in (("rsa", self.rsa, "RS256"), ("ec", self.ec, "ES256")):
            jwk = json.loads(jwt.algorithms.get_default_algorithms()[alg].to_jwk(key.public_key()))
            out.append({**jwk, "kid": self.kids[name], "alg": alg, "use": "sig"})
        return out

    def token(
        self,
        scope: str = "storage.stage:/",
        *,
        sub: str = "alice",
        aud: str | list[str] = AUDIENCE,
        expires_in: float = 600,
        key: str = "rsa",
        iss: str | None = None,
        **claims: Any,
    ) -> str:
        """A token of this issuer; `key`: rsa, ec, or stranger (a key it never published)."""
        now = time.time()
        payload = {
            "iss": iss or self.url,
            "sub": sub,
            "aud": aud,
            "iat": int(now),
            "nbf": int(now),
            "exp": int(now + expires_in),
            "scope": scope,
            "wlcg.ver": "1.0",
            "jti": uuid.uuid4().hex,
            **claims,
        }
        signer = {"rsa": self.rsa, "ec": self.ec, "stranger": self.stranger}[key]
        alg = "ES256" if key == "ec" else "RS256"
        kid = self.kids["ec" if key == "ec" else "rsa"]
        return jwt.encode(payload, signer, algorithm=alg, headers={"kid": kid})

    def stop(self) -> None:
        """Take the issuer down (its keys, once fetched, must still verify tokens)."""
        self.server.shutdown()
        self.server.server_close()
