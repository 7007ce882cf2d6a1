"""Shared fixtures: simulated libraries, fake eeadm scripts, stores on either
engine, apps, live servers.

A module marked `pytestmark = pytest.mark.both_engines` runs each test that
uses a store (directly, or through an app, a server or a stager) on SQLite
and on a real PostgreSQL: a throwaway cluster per test session, a fresh
database per test. Without PostgreSQL those runs skip, unless
REQUIRE_POSTGRES is set (as .ci/run does): there they fail.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from ltfsee_globus import create_app, pgcluster
from ltfsee_globus.api.context import services
from ltfsee_globus.config import Settings
from ltfsee_globus.parse import parse_recall_output
from ltfsee_globus.sim.library import Layout, Library, Timing, init_library, store_path
from ltfsee_globus.store import open_store
from support import devserver
from support.issuer import LoopbackIssuer

KEY = "test-key-0123456789"
HEADERS = {"X-API-KEY": KEY}
ENGINES = ("sqlite", "postgresql")
_databases = itertools.count()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "both_engines: run the module's store-using tests on SQLite and PostgreSQL"
    )
    config.addinivalue_line("markers", "sqlite_only: a test of SQLite's own in such a module")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marked = metafunc.definition.get_closest_marker
    if "engine" in metafunc.fixturenames and marked("both_engines") and not marked("sqlite_only"):
        metafunc.parametrize("engine", ENGINES, indirect=True)


@pytest.fixture
def engine(request: pytest.FixtureRequest) -> str:
    """The store engine a test runs on (SQLite unless its module runs both)."""
    return getattr(request, "param", "sqlite")


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[pgcluster.Cluster]:
    """One throwaway PostgreSQL cluster for the whole session."""
    try:
        cluster = pgcluster.start()
    except pgcluster.NoPostgres as exc:
        if os.environ.get("REQUIRE_POSTGRES"):
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    yield cluster
    cluster.destroy()


@pytest.fixture
def store_url(engine: str, request: pytest.FixtureRequest) -> str:
    """STORE_URL for this test: "" (SQLite under STATE_DIR) or a fresh database."""
    if engine == "sqlite":
        return ""
    cluster = request.getfixturevalue("pg_cluster")
    return cluster.create_database(f"test{next(_databases)}")


@pytest.fixture
def make_store(store_url: str, tmp_path: Path, clock) -> Iterator[Callable[..., object]]:
    """Open stores on this test's engine and database (closed afterwards)."""
    stores = []

    def make(clock=clock):
        settings = Settings(STATE_DIR=str(tmp_path / "store"), STORE_URL=store_url)
        stores.append(open_store(settings, clock))
        return stores[-1]

    yield make
    for store in stores:
        store.close()


@pytest.fixture
def store(make_store):
    return make_store()


@dataclass
class SimLib:
    """A simulated library on disk and the command that runs eeadm over it."""

    root: Path
    fs: Path
    calls: Path  # one line per eeadm invocation: "<subcommand> <args...>"
    command: list[str]

    def _query(self, sql: str, params: tuple = ()) -> list[tuple]:
        """Rows of one query on the simulator's store (read-only use)."""
        conn = sqlite3.connect(store_path(self.root))
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def files(self, state: str | None = None) -> list[str]:
        return Library.list_paths(self.root, state)

    def state_of(self, path: str) -> str:
        return self._query("SELECT state FROM files WHERE path = ?", (path,))[0][0]

    def tapes(self) -> dict[str, str]:
        """Each file on tape and its tape as `eeadm file state` names it (VOLSER@POOL@LIB)."""
        return dict(
            self._query(
                "SELECT f.path, t.volser || '@' || t.pool || '@' || t.library "
                "FROM files f JOIN tapes t ON t.volser = f.tape"
            )
        )

    def invocations(self, sub: str | None = None) -> list[str]:
        if not self.calls.exists():
            return []
        lines = self.calls.read_text().splitlines()
        return [line for line in lines if sub is None or line.startswith(sub)]

    def recall_then_kill(self, paths: list[str]) -> str:
        """Start `eeadm recall` of `paths`, kill -9 it once it has named its
        task (as a node's crash would), and return the task ID: the task goes
        on in the library without its client, as an EE task does."""
        proc = subprocess.Popen(
            [*self.command, "recall"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        proc.stdin.write("\n".join(paths) + "\n")
        proc.stdin.close()
        task = None
        while task is None:
            line = proc.stdout.readline()
            assert line, "the recall ended before it named its task"
            task = parse_recall_output(line).task_id
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        return task

    def reads_per_file(self) -> dict[str, int]:
        """How often each file was read from tape by a successful recall."""
        return dict(
            self._query(
                "SELECT path, count(*) FROM task_files WHERE tape IS NOT NULL AND ok = 1 "
                "GROUP BY path"
            )
        )


def write_script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return path


@pytest.fixture
def make_sim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., SimLib]:
    """Build a simulated library; eeadm calls go through a wrapper that logs them."""

    def make(name: str = "lib", **layout) -> SimLib:
        defaults = dict(
            files=60, dirs=3, tapes=3, drives=2, time_scale=5000.0, min_size=10**6, max_size=10**7
        )
        defaults.update(layout)
        root = tmp_path / name
        fs = init_library(root, Layout(**defaults), Timing())
        calls = tmp_path / f"{name}-calls.log"
        command = devserver.eeadm_wrapper(tmp_path / f"{name}-eeadm", root, calls)
        monkeypatch.setenv("EEADM_SIM_DIR", str(root))
        return SimLib(root, fs, calls, command)

    return make


@pytest.fixture
def sim(make_sim) -> SimLib:
    return make_sim()


@pytest.fixture
def fake_eeadm(tmp_path: Path) -> Callable[[str], list[str]]:
    """A fake `eeadm` script with the given shell body; returns its command."""
    n = iter(range(1000))

    def make(body: str) -> list[str]:
        return [str(write_script(tmp_path / f"fake-eeadm-{next(n)}", body))]

    return make


class FakeClock:
    """A clock tests move by hand instead of sleeping."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def issuer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LoopbackIssuer]:
    """A WLCG token issuer on loopback (https, keys made for this test);
    requests in this process trust its certificate (REQUESTS_CA_BUNDLE)."""
    found = LoopbackIssuer(tmp_path)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(found.ca_file))
    yield found
    found.stop()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def base_config(tmp_path: Path, sim: SimLib, store_url: str) -> dict:
    return {
        "AUTH_KEY": KEY,
        "STORE_URL": store_url,
        "EEADM_COMMAND": sim.command,
        "MANAGED_ROOTS": [str(sim.fs)],
        "STATE_DIR": str(tmp_path / "state"),
        "EEADM_TIMEOUT": 30,
        "BATCH_WINDOW": 0,
        "BATCH_QUIET": 0,
        "RECALL_RETRY_DELAY": 0,
        "STAGER_POLL": 0.05,
        "CACHE_TYPE": "SimpleCache",
    }


@pytest.fixture
def make_app(base_config: dict):
    """create_app with the test config plus overrides; stops any stager it started."""
    apps = []

    def make(**overrides):
        app = create_app({**base_config, **overrides})
        app.testing = True
        apps.append(app)
        return app

    yield make
    for app in apps:
        services(app).stop_stager()
        services(app).token_keys.stop()
        services(app).store.close()


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


@dataclass
class Server:
    """A real gunicorn serving the app, started from the repository's config."""

    url: str
    gunicorn: devserver.Gunicorn

    @property
    def env(self) -> dict:
        return self.gunicorn.env

    def post(self, endpoint: str, body: dict, **kw) -> requests.Response:
        return requests.post(self.url + endpoint, json=body, headers=HEADERS, timeout=30, **kw)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal gunicorn's whole process group (master and workers)."""
        self.gunicorn.stop(sig)


@pytest.fixture
def server_env(base_config: dict, sim: SimLib) -> dict:
    env = {k: v if isinstance(v, str) else str(v) for k, v in base_config.items()}
    env.update(
        EEADM_COMMAND=" ".join(sim.command),
        MANAGED_ROOTS=str(sim.fs),
        EEADM_SIM_DIR=str(sim.root),
        CACHE_TYPE="SimpleCache",
    )
    return env


@pytest.fixture
def start_server(server_env: dict, tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start real gunicorn servers with env overrides; all are stopped afterwards."""
    servers: list[Server] = []

    def start(**overrides) -> Server:
        env = {**server_env, **{k: str(v) for k, v in overrides.items()}}
        g = devserver.start(env, tmp_path / f"gunicorn-{len(servers)}.log")
        servers.append(Server(g.url, g))
        return servers[-1]

    yield start
    for server in servers:
        server.kill(signal.SIGTERM)


@pytest.fixture
def start_stager(tmp_path: Path) -> Iterator[Callable[[dict], subprocess.Popen]]:
    """Start `ltfsee-globus stager` processes (STAGER=off servers); all are killed afterwards."""
    procs: list[subprocess.Popen] = []

    def start(env: dict) -> subprocess.Popen:
        with open(tmp_path / f"stager-{len(procs)}.log", "ab") as out:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "ltfsee_globus.cli", "stager"],
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        return procs[-1]

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


@pytest.fixture
def run_cli(base_config: dict, sim: SimLib) -> Callable[..., subprocess.CompletedProcess]:
    """Run `ltfsee-globus ARGS` with this test's settings (and `env` on top),
    in an environment that has nothing else."""
    settings = {
        "PATH": "/usr/bin:/bin",
        "AUTH_KEY": base_config["AUTH_KEY"],
        "EEADM_COMMAND": " ".join(sim.command),
        "MANAGED_ROOTS": str(sim.fs),
        "STATE_DIR": base_config["STATE_DIR"],
        "STORE_URL": base_config["STORE_URL"],
        "EEADM_SIM_DIR": str(sim.root),
    }

    def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "ltfsee_globus.cli", *args],
            env={**settings, **(env or {})},
            capture_output=True,
            text=True,
            timeout=60,
        )

    return run


@pytest.fixture
def live_server(start_server) -> Server:
    return start_server()


@pytest.fixture
def headers() -> dict:
    return dict(HEADERS)


@pytest.fixture
def wait_for() -> Callable[..., object]:
    """Poll `predicate` until it returns something true, or fail after `timeout` s."""

    def wait(predicate: Callable[[], object], timeout: float = 30, what: str = "condition"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}")

    return wait


@pytest.fixture
def browser(tmp_path: Path):
    """Headless Chromium (Debian's chromium + chromium-driver) under selenium.

    Skips where Chromium is absent, unless REQUIRE_BROWSER is set (as .ci/run
    does): there a missing browser fails the run.
    """
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        why = "Chromium is not installed (apt-get install chromium chromium-driver)"
        if os.environ.get("REQUIRE_BROWSER"):
            pytest.fail(why)
        pytest.skip(why)
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.add_argument("--window-size=1400,1100")
    service = webdriver.ChromeService(driver, log_output=str(tmp_path / "chromedriver.log"))
    drv = webdriver.Chrome(options=options, service=service)
    try:
        yield drv
    finally:
        drv.quit()


@pytest.fixture
def artifacts() -> Path:
    """Where tests leave files for people to look at (screenshots): TEST_ARTIFACTS
    or ./test-artifacts."""
    path = Path(os.environ.get("TEST_ARTIFACTS", "test-artifacts")).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


CLIENTS = Path(__file__).resolve().parent.parent / "clients"


@pytest.fixture
def run_client() -> Callable[..., subprocess.CompletedProcess]:
    """Run a stage app as Globus does: a subprocess with the GLOBUS_STAGE_* environment."""

    def run(url, path, *, key=KEY, name="simple_client.py", **env):
        full = {
            "PATH": os.environ["PATH"],
            "LTFSEE_URL": url,
            "AUTH_KEY": key,
            "GLOBUS_STAGE_PATH": path,
            "GLOBUS_STAGE_TASKID": "task-1",
            **env,
        }
        return subprocess.run(
            [sys.executable, str(CLIENTS / name)],
            env=full,
            capture_output=True,
            text=True,
            timeout=60,
        )

    return run
