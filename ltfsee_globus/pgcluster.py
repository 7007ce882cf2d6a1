"""A throwaway PostgreSQL cluster (Debian's `postgresql`): the cluster demo's
(`ltfsee-globus demo --nodes N`), the tests' and the benchmarks'.

PostgreSQL refuses to run as root, so under root the cluster belongs to an
unprivileged user (`postgres`, which the Debian package creates, else
`nobody`) and `initdb`/`pg_ctl` run through `runuser`. It listens on loopback
only, on a free port, with password (SCRAM) authentication over TCP, so the
service connects with a `postgresql://user:password@127.0.0.1:PORT/db` URL
as a site's would; the harness itself talks to it over the unix socket.

Not for production: a site's database is its own (docs/cluster.md).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

#: The role the service connects as (the cluster's superuser is `postgres`).
ROLE = "ltfsee"
#: Settings that make a throwaway cluster fast; a test cluster loses nothing
#: to them unless the machine itself crashes. Benchmarks pass durable=True.
FAST = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")


def free_port() -> int:
    """A TCP port nothing listens on now (for a server started next)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NoPostgres(Exception):
    """PostgreSQL's server programs are not installed here."""


def find_bin(name: str) -> str:
    """A PostgreSQL server program: Debian keeps them in /usr/lib/postgresql/N/bin."""
    versions = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    found = versions[-1] if versions else shutil.which(name)
    if not found:
        raise NoPostgres(f"{name} not found (apt-get install postgresql)")
    return found


def _owner() -> str | None:
    """Who runs the server: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    for user in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(user)
            return user
    raise NoPostgres("running as root and no unprivileged user (postgres, nobody) exists")


@dataclass
class Cluster:
    """A running cluster: its directory, port, and the service role's password."""

    base: Path
    port: int
    password: str
    owner: str | None

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base / "run"

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        prefix = ["runuser", "-u", self.owner, "--"] if self.owner else []
        return subprocess.run(
            [*prefix, *argv], capture_output=True, text=True, check=check, timeout=120
        )

    def url(self, dbname: str = "postgres") -> str:
        """What a site puts in STORE_URL for this cluster's database `dbname`."""
        return f"postgresql://{ROLE}:{self.password}@127.0.0.1:{self.port}/{dbname}"

    def admin_conninfo(self, dbname: str = "postgres") -> str:
        return f"host={self.socket_dir} port={self.port} user=postgres dbname={dbname}"

    def sql(self, statement: str, dbname: str = "postgres", params: tuple | None = None) -> list:
        """Run one statement as the superuser (autocommit); its rows, if any."""
        import psycopg

        with psycopg.connect(self.admin_conninfo(dbname), autocommit=True) as conn:
            cur = conn.execute(statement, params)
            return cur.fetchall() if cur.description else []

    def create_database(self, name: str) -> str:
        """A fresh, empty database owned by the service role; its URL."""
        self.sql(f'CREATE DATABASE "{name}" OWNER {ROLE}')
        return self.url(name)

    def terminate(self, dbname: str) -> int:
        """pg_terminate_backend every client connection to `dbname`; how many."""
        rows = self.sql(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            params=(dbname,),
        )
        return int(rows[0][0])

    def pg_ctl(self, *args: str) -> None:
        self._run(find_bin("pg_ctl"), "-D", str(self.data), *args)

    def start(self) -> None:
        self.pg_ctl("-l", str(self.base / "server.log"), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self.pg_ctl("-m", mode, "-w", "stop")

    def restart(self, mode: str = "fast") -> None:
        self.pg_ctl("-m", mode, "-l", str(self.base / "server.log"), "-w", "restart")

    def destroy(self) -> None:
        self._run(find_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop", check=False)
        shutil.rmtree(self.base, ignore_errors=True)


def start(*, durable: bool = False, max_connections: int = 300) -> Cluster:
    """initdb and start a cluster in a new directory under the system's temp dir
    (readable by the unprivileged owner, unlike pytest's root-only tmp_path)."""
    owner = _owner()
    base = Path(tempfile.mkdtemp(prefix="ltfsee-pg-"))
    (base / "run").mkdir()
    if owner:
        entry = pwd.getpwnam(owner)
        for p in (base, base / "run"):
            os.chown(p, entry.pw_uid, entry.pw_gid)
    password = secrets.token_urlsafe(12)
    cluster = Cluster(base, free_port(), password, owner)
    try:
        cluster._run(
            find_bin("initdb"),
            "-D",
            str(cluster.data),
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C",
        )
        options = [
            f"port = {cluster.port}",
            "listen_addresses = '127.0.0.1'",
            f"unix_socket_directories = '{cluster.socket_dir}'",
            f"max_connections = {max_connections}",
            *([] if durable else [f"{o.replace('=', ' = ')}" for o in FAST]),
        ]
        with open(cluster.data / "postgresql.conf", "a") as conf:
            conf.write("\n".join(options) + "\n")
        cluster.start()
        cluster.sql(f"CREATE ROLE {ROLE} LOGIN CREATEDB PASSWORD '{password}'")
    except (subprocess.CalledProcessError, OSError) as exc:
        err = getattr(exc, "stderr", "") or str(exc)
        cluster.destroy()
        raise NoPostgres(f"cannot start a PostgreSQL cluster: {err.strip()}") from None
    return cluster
