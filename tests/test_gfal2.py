"""Interop with the real WLCG client: gfal2 (what FTS uses) over TLS.

Skips where gfal2 is not installed, unless REQUIRE_GFAL2 is set (as .ci/run
does), where a missing gfal2 fails the run instead.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import requests

from support.issuer import AUDIENCE

ROOT = Path(__file__).resolve().parent.parent
KEY = "test-key-0123456789"

if not shutil.which("gfal-bringonline") and not os.environ.get("REQUIRE_GFAL2"):
    pytest.skip(
        "gfal2 is not installed (apt-get install gfal2-util-scripts "
        "gfal2-plugin-http python3-gfal2-util)",
        allow_module_level=True,
    )


@pytest.fixture
def tls(tmp_path):
    """A development certificate, and a CA directory that trusts it."""
    subprocess.run(
        ["sh", str(ROOT / "ssl" / "make-dev-cert.sh"), str(tmp_path)],
        check=True,
        capture_output=True,
    )
    cadir = tmp_path / "ca"
    cadir.mkdir()
    cert = tmp_path / "dev-cert.pem"
    digest = subprocess.run(
        ["openssl", "x509", "-hash", "-noout", "-in", str(cert)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (cadir / f"{digest}.0").symlink_to(cert)
    return {"KEYFILE": str(tmp_path / "dev-key.pem"), "CERTFILE": str(cert)}, cadir


def gfal(*args, cadir, token=KEY):
    env = {
        **os.environ,
        "GFAL_PYTHONBIN": "/usr/bin/python3",
        "BEARER_TOKEN": token,
        "X509_CERT_DIR": str(cadir),
    }
    res = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


def test_bringonline_and_status_with_gfal2(start_server, sim, tls):
    assert shutil.which("gfal-bringonline"), "gfal2 is required here (REQUIRE_GFAL2)"
    certs, cadir = tls
    server = start_server(BATCH_WINDOW=1, **certs)
    a, b = sim.files("M")[:2]
    url_a, url_b = server.url + a, server.url + b
    assert gfal("gfal-xattr", url_a, "user.status", cadir=cadir).strip() == "NEARLINE"
    out = gfal("gfal-bringonline", "--polling-timeout", "60", url_a, cadir=cadir)
    assert f"{url_a} READY" in out
    assert gfal("gfal-xattr", url_a, "user.status", cadir=cadir).strip() == ("ONLINE_AND_NEARLINE")
    assert sim.state_of(a) == "P"
    assert gfal("gfal-xattr", url_b, "user.status", cadir=cadir).strip() == "NEARLINE"


def test_bringonline_with_a_wlcg_token_from_a_trusted_issuer(
    start_server, sim, tls, issuer, tmp_path
):
    """gfal2 with BEARER_TOKEN set to a JWT our loopback issuer signed: the
    service fetches the issuer's keys over https and stages what the token's
    scope covers; a token for another path gets the file FAILED."""
    certs, cadir = tls
    a, b = sim.files("M")[:2]
    policy = tmp_path / "policy.toml"
    policy.write_text(
        f'[issuers."{issuer.url}"]\nbase_path = "{sim.fs}"\naudiences = ["{AUDIENCE}"]\n'
    )
    server = start_server(
        BATCH_WINDOW=1, POLICY_FILE=str(policy), REQUESTS_CA_BUNDLE=str(issuer.ca_file), **certs
    )
    token = issuer.token(f"storage.stage:{a[len(str(sim.fs)) :]}", sub="fts-user")
    out = gfal(
        "gfal-bringonline", "--polling-timeout", "60", server.url + a, cadir=cadir, token=token
    )
    assert f"{server.url + a} READY" in out
    assert sim.state_of(a) == "P"
    [request] = requests.get(
        server.url + "/api/status",
        headers={"X-API-KEY": KEY},
        verify=certs["CERTFILE"],  # the service's own development certificate
        timeout=30,
    ).json()["stage_requests"]
    assert request["owner"] == f"fts-user@{issuer.url}"
    assert (request["files"], request["completed"]) == (1, 1)  # the request COMPLETED
    # gfal-bringonline reports a failed file and exits 0
    refused = gfal(
        "gfal-bringonline", "--polling-timeout", "30", server.url + b, cadir=cadir, token=token
    )
    assert "FAILED" in refused and "forbidden" in refused and sim.state_of(b) == "M"
    expired = issuer.token("storage.stage:/", expires_in=-300)
    out = gfal("gfal-bringonline", server.url + b, cadir=cadir, token=expired)
    assert "HTTP 401" in out and sim.state_of(b) == "M"
