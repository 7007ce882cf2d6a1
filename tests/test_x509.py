"""X.509 proxies with VOMS, as FTS sends them, through the shipped front end
(deploy/apache-gridsite.conf: Apache httpd, mod_ssl, mod_gridsite) to the
real service, with gfal2: a throwaway CA, user, VOMS host and proxies made by
voms-proxy-fake for each test.

mod_gridsite reads the CAs from /etc/grid-security/certificates and the VOMS
servers from /etc/grid-security/vomsdir, nowhere else: the test adds its CA
and a VO of its own there (unique names) and removes them after. Skips where
Apache, gridsite, voms-clients or gfal2 are missing or /etc/grid-security
cannot be written, unless REQUIRE_X509 is set (as .ci/run does).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
GRID = Path("/etc/grid-security")
MODULES = Path("/usr/lib/apache2/modules")
API = "/api/v1"


def _missing() -> str | None:
    for tool in ("apache2", "voms-proxy-fake", "gfal-bringonline", "openssl"):
        if not shutil.which(tool):
            return f"{tool} is not installed"
    if not (MODULES / "mod_gridsite.so").exists():
        return "mod_gridsite is not installed (apt-get install gridsite)"
    if os.geteuid() != 0:
        return "mod_gridsite reads /etc/grid-security only: the test must run as root"
    return None


if _missing() and not os.environ.get("REQUIRE_X509"):
    pytest.skip(
        f"{_missing()} (apt-get install apache2 gridsite voms-clients gfal2-util-scripts "
        "gfal2-plugin-http)",
        allow_module_level=True,
    )


def openssl(*args: str, cwd: Path) -> str:
    res = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return res.stdout


def certificate(cwd: Path, name: str, subject: str, ca: str, ext: str) -> None:
    """name.pem and name.key, signed by ca.pem (a CA's own: ca='')."""
    (cwd / f"{name}.ext").write_text(ext)
    if not ca:
        openssl(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
            "-out", f"{name}.pem", "-days", "2", "-subj", subject,
            "-addext", "basicConstraints=critical,CA:true",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=cwd,
        )  # fmt: skip
        return
    openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
        "-subj", subject, cwd=cwd,
    )  # fmt: skip
    openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext",
        cwd=cwd,
    )  # fmt: skip
    (cwd / f"{name}.key").chmod(0o600)


@dataclass
class Grid:
    """A throwaway CA (installed where mod_gridsite looks), a user, a VOMS
    host of a VO of its own, and proxies of the user."""

    dir: Path
    vo: str
    cadir: Path  # the CA, hashed, for clients checking the front end's certificate

    def proxy(self, fqan: str, name: str, *, user: str = "user", past: int = 0) -> Path:
        out = self.dir / f"{name}.proxy"
        args = ["-hours", "1", "-pastproxy", str(past)] if past else ["-hours", "2"]
        res = subprocess.run(
            ["voms-proxy-fake", "-rfc", "-q", "-cert", f"{user}.pem", "-key", f"{user}.key",
             "-hostcert", "voms.pem", "-hostkey", "voms.key", "-voms", self.vo, "-fqan", fqan,
             "-certdir", str(self.cadir), "-out", str(out), *args],
            cwd=self.dir, capture_output=True, text=True,
        )  # fmt: skip
        assert out.exists(), res.stdout + res.stderr
        return out


@pytest.fixture
def grid(tmp_path: Path):
    d = tmp_path / "grid"
    d.mkdir()
    certificate(d, "ca", "/DC=org/DC=ltfsee-test/CN=Test CA", "", "")
    user_ext = "basicConstraints=CA:false\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
    certificate(d, "user", "/DC=org/DC=ltfsee-test/CN=Alice Tester", "ca", user_ext)
    certificate(d, "voms", "/DC=org/DC=ltfsee-test/CN=voms.ltfsee-test", "ca", user_ext)
    host_ext = "basicConstraints=CA:false\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n"
    certificate(d, "host", "/DC=org/DC=ltfsee-test/CN=localhost", "ca", host_ext)
    # a CA the front end does not know, and a user of it
    certificate(d, "rogue", "/DC=org/DC=elsewhere/CN=Rogue CA", "", "")
    certificate(d, "mallory", "/DC=org/DC=elsewhere/CN=Mallory", "rogue", user_ext)
    digest = openssl("x509", "-hash", "-noout", "-in", "ca.pem", cwd=d).strip()
    cadir = d / "certs"
    cadir.mkdir()
    (cadir / f"{digest}.0").symlink_to(d / "ca.pem")
    (GRID / "certificates").mkdir(parents=True, exist_ok=True)
    installed = next(
        GRID / "certificates" / f"{digest}.{n}"
        for n in range(10)
        if not (GRID / "certificates" / f"{digest}.{n}").exists()
    )
    shutil.copy(d / "ca.pem", installed)
    vo = f"ltfsee{uuid.uuid4().hex[:8]}"
    vomsdir = GRID / "vomsdir" / vo
    vomsdir.mkdir(parents=True)
    (vomsdir / "voms.ltfsee-test.lsc").write_text(
        "/DC=org/DC=ltfsee-test/CN=voms.ltfsee-test\n/DC=org/DC=ltfsee-test/CN=Test CA\n"
    )
    try:
        yield Grid(d, vo, cadir)
    finally:
        installed.unlink()
        shutil.rmtree(vomsdir)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def front_end_conf(backend: str, port: int, grid: Grid) -> str:
    """The shipped vhost with its Define lines set for this test."""
    text = (ROOT / "deploy" / "apache-gridsite.conf").read_text()
    values = {
        "LTFSEE_PORT": str(port),
        "LTFSEE_HOSTCERT": str(grid.dir / "host.pem"),
        "LTFSEE_HOSTKEY": str(grid.dir / "host.key"),
        "LTFSEE_CADIR": str(grid.cadir),
        "LTFSEE_BACKEND": backend,
    }
    for name, value in values.items():
        text, n = re.subn(rf"^Define {name} .*$", f"Define {name} {value}", text, flags=re.M)
        assert n == 1, name
    return text


@pytest.fixture
def front_end(grid: Grid):
    """start(backend URL) -> https URL of Apache in front of it, as shipped."""
    run = Path(tempfile.mkdtemp(prefix="ltfsee-apache-"))  # www-data must reach it
    run.chmod(0o755)
    started: list[Path] = []

    def start(backend: str) -> str:
        port = free_port()
        (run / "site.conf").write_text(front_end_conf(backend, port, grid))
        modules = ["mpm_event", "authz_core", "socache_shmcb", "ssl", "headers", "proxy",
                   "proxy_http", "gridsite"]  # fmt: skip
        (run / "httpd.conf").write_text(
            f"ServerRoot {run}\nServerName localhost\nPidFile {run}/httpd.pid\n"
            f"ErrorLog {run}/error.log\nLogLevel info\nUser www-data\nGroup www-data\n"
            + "".join(f"LoadModule {m}_module {MODULES}/mod_{m}.so\n" for m in modules)
            + f"GridSiteSessionsDir {run}\nGridSiteDNlists {run}\n"
            f"SSLSessionCache shmcb:{run}/ssl_scache(512000)\nMutex file:{run} default\n"
            f"Include {run}/site.conf\n"
        )
        res = subprocess.run(
            ["apache2", "-f", str(run / "httpd.conf"), "-k", "start"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert res.returncode == 0, res.stderr
        started.append(run / "httpd.pid")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return f"https://localhost:{port}"
            time.sleep(0.05)
        raise AssertionError((run / "error.log").read_text())

    yield start
    for pid in started:
        if pid.exists():
            os.kill(int(pid.read_text()), signal.SIGTERM)
    time.sleep(0.5)
    shutil.rmtree(run, ignore_errors=True)


def gfal(*args: str, proxy: Path, cadir: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k != "BEARER_TOKEN"}
    env.update(
        GFAL_PYTHONBIN="/usr/bin/python3", X509_USER_PROXY=str(proxy), X509_CERT_DIR=str(cadir)
    )
    res = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    return res.stdout + res.stderr


@pytest.fixture
def site(start_server, front_end, grid, sim, tmp_path):
    """The service behind the front end, its policy naming our VO's production role."""
    policy = tmp_path / "policy.toml"
    policy.write_text(
        f'[[allow]]\nfqan = "/{grid.vo}/Role=production"\nroots = ["{sim.fs}"]\n'
        'operations = ["stage", "poll", "cancel", "release", "archiveinfo"]\n'
    )
    server = start_server(
        BATCH_WINDOW=1, POLICY_FILE=str(policy), FRONTEND_ADDRESSES="127.0.0.1", TRUST_PROXY=1
    )
    return server, front_end(server.url + "/")


def test_gfal2_stages_with_a_voms_proxy_through_the_front_end(site, grid, sim):
    server, url = site
    a = sim.files("M")[0]
    proxy = grid.proxy(f"/{grid.vo}/Role=production", "alice")
    out = gfal(
        "gfal-bringonline", "--polling-timeout", "60", url + a, proxy=proxy, cadir=grid.cadir
    )
    assert f"{url + a} READY" in out, out
    assert sim.state_of(a) == "P"
    report = requests.get(
        server.url + "/api/status", headers={"X-API-KEY": "test-key-0123456789"}, timeout=30
    ).json()
    [request] = report["stage_requests"]
    assert request["owner"] == "/DC=org/DC=ltfsee-test/CN=Alice Tester"
    assert (request["files"], request["completed"]) == (1, 1)  # the request COMPLETED


@pytest.mark.parametrize(
    ("case", "make", "says"),
    [
        (
            "an FQAN the policy does not name",
            lambda g: g.proxy(f"/{g.vo}/Role=student", "s"),
            "403",
        ),
        ("an expired proxy", lambda g: g.proxy(f"/{g.vo}/Role=production", "old", past=7200), ""),
        (
            "a proxy from an unknown CA",
            lambda g: g.proxy(f"/{g.vo}/Role=production", "m", user="mallory"),
            "unknown ca",
        ),
    ],
)
def test_refused_proxies(site, grid, sim, case, make, says):
    _server, url = site
    a = sim.files("M")[0]
    out = gfal(
        "gfal-bringonline", "--polling-timeout", "20", url + a, proxy=make(grid), cadir=grid.cadir
    )
    assert "READY" not in out and says in out, (case, out)
    assert sim.state_of(a) == "M"


def test_identity_headers_sent_straight_to_the_service_are_ignored(start_server, sim):
    """The front end is elsewhere (192.0.2.10): the same headers from here count for nothing."""
    server = start_server(FRONTEND_ADDRESSES="192.0.2.10")
    forged = {"X-Grst-Cred-0": "X509USER 0 9999999999 1 /DC=org/CN=Anyone", "X-Grst-Cred-2": ""}
    r = requests.post(
        server.url + f"{API}/stage", json={"files": [{"path": sim.files("M")[0]}]}, headers=forged,
        timeout=30,
    )  # fmt: skip
    assert r.status_code == 401
    metrics = requests.get(
        server.url + "/metrics", headers={"X-API-KEY": "test-key-0123456789"}, timeout=30
    ).text
    assert 'ltfsee_auth_refusals_total{reason="frontend"} 1.0' in metrics
