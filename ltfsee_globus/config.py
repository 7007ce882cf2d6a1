"""Settings: defaults in code, the environment (and `.env`) read on demand.

`load_settings()` is called by the app factory and by the command-line tools,
never at import. It checks everything it can at start-up and raises
`ConfigError` with every problem listed, so a bad deployment fails fast with
one clear message instead of a traceback on the first request.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shlex
import shutil
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from environs import Env, EnvError

from .policy import Policy, PolicyError, open_policy

LOGLEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
STAGER_MODES = ("embedded", "off")
#: prometheus-client's multiprocess directory; set before it is imported.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: The shortest STAGER_LEASE: it is renewed every third of it, over the network.
MIN_LEASE = 3.0
#: The SQLite store's file name in STATE_DIR (STORE_URL unset).
STORE_FILE = "ltfsee-globus.db"
_BIND = re.compile(r"^(unix:/.+|(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]*):(\d{1,5}))$")


class ConfigError(Exception):
    """The configuration cannot work; the message says every reason why."""


@dataclass(frozen=True)
class Settings:
    """Every setting of the service, typed, with its default."""

    AUTH_KEY: dict[str, str] = field(default_factory=dict)
    LTFSEE_LIB: list[str] = field(default_factory=list)
    EEADM_COMMAND: list[str] = field(default_factory=lambda: ["eeadm"])
    EEADM_TIMEOUT: float = 120.0
    RECALL_TIMEOUT: float = 7 * 24 * 3600.0
    RECALL_RESIDENT: bool = False
    MANAGED_ROOTS: list[str] = field(default_factory=lambda: ["/gpfs"])
    STATE_DIR: str = "/var/lib/ltfsee-globus"
    STORE_URL: str = ""
    CACHE_TYPE: str = "flask_caching.backends.SimpleCache"
    CACHE_DEFAULT_TIMEOUT: int = 60
    LOGLEVEL: str = "INFO"
    MAX_BODY_BYTES: int = 1024 * 1024
    STAGER: str = "embedded"
    STAGER_POLL: float = 0.5
    STAGER_LEASE: float = 10.0
    NODE_NAME: str = ""
    PROGRESS_INTERVAL: float = 30.0
    BATCH_WINDOW: float = 10.0
    BATCH_QUIET: float = 2.0
    BATCH_MAX_WAIT: float = 60.0
    BATCH_MAX_FILES: int = 5000
    RECALL_CONCURRENCY: int = 2
    TAPE_DRIVES: int = 0
    DRIVE_REFRESH: float = 300.0
    RECALL_MAX_BYTES: int = 200 * 10**9
    KEY_PRIORITY: dict[str, int] = field(default_factory=dict)
    POLICY_FILE: str = ""
    FRONTEND_ADDRESSES: list[str] = field(default_factory=list)
    RECALL_MAX_ATTEMPTS: int = 3
    RECALL_RETRY_DELAY: float = 60.0
    FAILED_RETENTION: float = 3600.0
    RETENTION_DAYS: float = 14.0
    VERIFIED_TTL: float = 3600.0
    LOOKUP_MAX_FILES: int = 500
    LOOKUP_MAX_WAITING: int = 4
    LOOKUP_BREAKER: float = 30.0
    TAPE_API_ROOT: str = "/api/v1"
    SITENAME: str = "ltfsee-globus"
    SITE_DESCRIPTION: str = "IBM Spectrum Archive EE tape staging"
    STAGE_MAX_FILES: int = 10000
    ARCHIVEINFO_MAX_FILES: int = 1000
    TRUST_PROXY: int = 0
    PREFETCH: bool = True
    PREFETCH_MAX_FILES: int = 20000
    PREFETCH_MAX_BYTES: int = 20 * 10**12
    PREFETCH_SCAN_LIMIT: int = 20000
    PREFETCH_WIDEN: int = 1
    PREFETCH_EXCLUDE: list[str] = field(default_factory=list)
    # gunicorn's, read by gunicorn_conf.py
    BIND: str = "0.0.0.0:5000"
    WORKERS: int = 2
    THREADS: int = 8
    TIMEOUT: int = 60
    ACCESS_LOG: bool = True
    KEYFILE: str = ""
    CERTFILE: str = ""

    @property
    def state_dir(self) -> Path:
        return Path(self.STATE_DIR)

    def policy(self) -> Policy:
        """Who may stage what (policy.py): POLICY_FILE's, or keys everywhere."""
        path = Path(self.POLICY_FILE) if self.POLICY_FILE else None
        return open_policy(path, self.AUTH_KEY, self.MANAGED_ROOTS)

    @property
    def node(self) -> str:
        """This node's name: NODE_NAME, else the host's."""
        return self.NODE_NAME or socket.gethostname()

    @property
    def store_pool(self) -> int:
        """Database connections a process may hold (PostgreSQL): one per
        request thread, per running recall, and a few for the stager's loop."""
        return self.THREADS + self.RECALL_CONCURRENCY + 4

    @property
    def metrics_dir(self) -> Path:
        """Where each process's Prometheus counters are shared."""
        return self.state_dir / "metrics"


def share_metrics(settings: Settings) -> None:
    """Default PROMETHEUS_MULTIPROC_DIR for this process and its children, so
    gunicorn workers and a separate stager count into one place. Must run
    before prometheus-client is imported (it reads the variable then)."""
    os.environ.setdefault(MULTIPROC_ENV, str(settings.metrics_dir))


def _parse_keys(raw: str) -> dict[str, str]:
    """`key` alone, or named keys `name:key,name:key` (for rotation)."""
    raw = raw.strip()
    if not raw:
        return {}
    if ":" not in raw and "," not in raw:
        return {"default": raw}
    keys: dict[str, str] = {}
    for item in raw.split(","):
        name, sep, key = item.strip().partition(":")
        if not sep or not name or not key:
            raise ConfigError("AUTH_KEY: named keys must be written name:key,name:key")
        keys[name] = key
    return keys


def _parse_priorities(raw: str) -> dict[str, int]:
    """`name:N,name:N`: the scheduling priority of each named key (default 0)."""
    out: dict[str, int] = {}
    for item in raw.split(","):
        if not item.strip():
            continue
        name, sep, value = item.strip().partition(":")
        try:
            out[name.strip()] = int(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise ConfigError("KEY_PRIORITY: write name:N,name:N (N a whole number)")
    return out


def _read_env(env: Env) -> dict[str, Any]:
    """Typed values of the settings set in the environment or the `.env` file."""
    readers = {
        "list[str]": lambda n: env.list(n, None, subcast=str),
        "bool": lambda n: env.bool(n, None),
        "int": lambda n: env.int(n, None),
        "float": lambda n: env.float(n, None),
    }
    out: dict[str, Any] = {}
    for f in fields(Settings):
        if f.name in ("AUTH_KEY", "EEADM_COMMAND", "KEY_PRIORITY"):
            raw = env.str(f.name, None)
            value = None if raw is None else _coerce(f.name, raw)
        else:
            value = readers.get(f.type, lambda n: env.str(n, None))(f.name)
        if value is not None:
            out[f.name] = value
    return out


def _coerce(name: str, value: Any) -> Any:
    """Accept the override mapping's values as typed or as environment-style strings."""
    if name == "AUTH_KEY" and isinstance(value, str):
        return _parse_keys(value)
    if name == "KEY_PRIORITY" and isinstance(value, str):
        return _parse_priorities(value)
    if name == "EEADM_COMMAND" and isinstance(value, str):
        return shlex.split(value)
    kind = {f.name: f.type for f in fields(Settings)}[name]
    if isinstance(value, str) and kind == "list[str]":
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, str) and kind == "bool":
        return value.strip().lower() in ("1", "true", "yes", "on")
    if isinstance(value, str | int | float) and kind in ("int", "float"):
        return int(value) if kind == "int" else float(value)
    return value


def load_settings(config: Mapping[str, Any] | None = None, *, env_file: str = ".env") -> Settings:
    """Defaults, then the environment (and `.env`), then `config`; validated."""
    env = Env()
    if Path(env_file).is_file():
        env.read_env(env_file, recurse=False)
    try:
        values = _read_env(env)
    except EnvError as exc:
        raise ConfigError(f"invalid setting: {exc}") from None
    known = {f.name for f in fields(Settings)}
    for name, value in (config or {}).items():
        if name in known:
            try:
                values[name] = _coerce(name, value)
            except ValueError as exc:
                raise ConfigError(f"{name}: {exc}") from None
    settings = Settings(**values)
    validate(settings)
    return settings


def validate(s: Settings) -> None:
    """Raise ConfigError listing every setting that cannot work."""
    problems: list[str] = []
    if not s.AUTH_KEY or not all(s.AUTH_KEY.values()):
        problems.append("AUTH_KEY is missing or empty: set one key, or name:key,name:key")
    if not s.MANAGED_ROOTS:
        problems.append("MANAGED_ROOTS is empty: list the absolute paths the API may touch")
    for root in s.MANAGED_ROOTS:
        if not os.path.isabs(root) or os.path.normpath(root) != root.rstrip("/") or root == "/":
            problems.append(f"MANAGED_ROOTS entry {root!r} must be an absolute, normalised path")
    for root in s.PREFETCH_EXCLUDE:
        if not os.path.isabs(root):
            problems.append(f"PREFETCH_EXCLUDE entry {root!r} must be an absolute path")
    if not s.EEADM_COMMAND:
        problems.append("EEADM_COMMAND is empty")
    elif shutil.which(s.EEADM_COMMAND[0]) is None:
        problems.append(f"EEADM_COMMAND: {s.EEADM_COMMAND[0]!r} is not an executable file on PATH")
    problems += _state_dir_problems(s.STATE_DIR)
    if s.STORE_URL:
        from .conninfo import problem

        found = problem(s.STORE_URL)
        if found:
            problems.append(found)
    problems += _gunicorn_problems(s)
    if not s.TAPE_API_ROOT.startswith("/") or s.TAPE_API_ROOT.rstrip("/") in ("", "/api/v0.5"):
        problems.append(
            f"TAPE_API_ROOT {s.TAPE_API_ROOT!r} must be an absolute URL path of its own"
        )
    if s.TRUST_PROXY < 0:
        problems.append("TRUST_PROXY must not be negative")
    if s.LOGLEVEL.upper() not in LOGLEVELS:
        problems.append(f"LOGLEVEL {s.LOGLEVEL!r} is not one of {', '.join(LOGLEVELS)}")
    if s.STAGER not in STAGER_MODES:
        problems.append(f"STAGER {s.STAGER!r} is not one of {', '.join(STAGER_MODES)}")
    positive = (
        "EEADM_TIMEOUT",
        "RECALL_TIMEOUT",
        "BATCH_MAX_FILES",
        "RECALL_CONCURRENCY",
        "RECALL_MAX_ATTEMPTS",
        "LOOKUP_MAX_FILES",
        "LOOKUP_MAX_WAITING",
        "LOOKUP_BREAKER",
        "MAX_BODY_BYTES",
        "STAGER_POLL",
        "STAGE_MAX_FILES",
        "ARCHIVEINFO_MAX_FILES",
        "RETENTION_DAYS",
        "DRIVE_REFRESH",
        "RECALL_MAX_BYTES",
        "WORKERS",
        "THREADS",
        "TIMEOUT",
    )
    for name in positive:
        if getattr(s, name) <= 0:
            problems.append(f"{name} must be greater than 0")
    for name in (
        "BATCH_WINDOW",
        "BATCH_QUIET",
        "BATCH_MAX_WAIT",
        "RECALL_RETRY_DELAY",
        "CACHE_DEFAULT_TIMEOUT",
        "PROGRESS_INTERVAL",
    ):
        if getattr(s, name) < 0:
            problems.append(f"{name} must not be negative")
    if s.STAGER_LEASE < MIN_LEASE:
        problems.append(f"STAGER_LEASE must be at least {MIN_LEASE:g} seconds")
    if len(s.NODE_NAME) > 64 or any(not (c.isalnum() or c in "._-") for c in s.NODE_NAME):
        problems.append("NODE_NAME must be at most 64 letters, digits, '.', '_' or '-'")
    if s.TAPE_DRIVES < 0:
        problems.append("TAPE_DRIVES must not be negative (0: read them from eeadm drive list)")
    unknown = sorted(set(s.KEY_PRIORITY) - set(s.AUTH_KEY))
    if unknown:
        problems.append(f"KEY_PRIORITY names keys AUTH_KEY does not have: {', '.join(unknown)}")
    for address in s.FRONTEND_ADDRESSES:
        try:
            if address != "unix":
                ipaddress.ip_address(address)
        except ValueError:
            problems.append(f"FRONTEND_ADDRESSES entry {address!r} must be an IP address or 'unix'")
    if s.POLICY_FILE:
        try:
            s.policy()
        except PolicyError as exc:
            problems.append(f"POLICY_FILE: {exc}")
    if max(s.VERIFIED_TTL, s.FAILED_RETENTION) > s.RETENTION_DAYS * 86400:
        problems.append(
            "RETENTION_DAYS must keep records at least as long as VERIFIED_TTL and "
            "FAILED_RETENTION answer from them"
        )
    if problems:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))


def _state_dir_problems(state_dir: str) -> list[str]:
    """STATE_DIR must be a writable directory, or creatable: checked without
    creating anything (the store creates it when the service starts)."""
    if not os.path.isabs(state_dir):
        return [f"STATE_DIR {state_dir!r} must be an absolute path"]
    path = Path(state_dir)
    if path.exists():
        if not path.is_dir():
            return [f"STATE_DIR {state_dir} is not a directory"]
        if not os.access(path, os.W_OK | os.X_OK):
            return [f"STATE_DIR {state_dir} is not writable"]
        return []
    parent = next(p for p in path.parents if p.exists())
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        return [f"STATE_DIR {state_dir} cannot be created: {parent} is not a writable directory"]
    return []


def _gunicorn_problems(s: Settings) -> list[str]:
    problems = []
    m = _BIND.match(s.BIND)
    if not m or (m.group(3) and not 0 < int(m.group(3)) < 65536):
        problems.append(f"BIND {s.BIND!r} must be HOST:PORT, [IPv6]:PORT or unix:/PATH")
    if bool(s.KEYFILE) != bool(s.CERTFILE):
        problems.append("set both KEYFILE and CERTFILE for TLS, or neither")
    for name in ("KEYFILE", "CERTFILE"):
        value = getattr(s, name)
        if value and not os.access(value, os.R_OK):
            problems.append(f"{name} {value} is not a readable file")
    return problems


def findings(s: Settings) -> dict[str, str]:
    """What `check-config` reports about the paths and command the service
    depends on, found without changing anything."""
    roots = []
    for root in s.MANAGED_ROOTS:
        kind = "a directory" if os.path.isdir(root) else "MISSING"
        roots.append(f"{root} ({kind})")
    state = Path(s.STATE_DIR)
    if state.is_dir():
        state_text = f"{state} (a writable directory)"
    else:
        state_text = f"{state} (does not exist yet; the service creates it)"
    exe = shutil.which(s.EEADM_COMMAND[0]) if s.EEADM_COMMAND else None
    if s.STORE_URL:
        from .conninfo import describe

        store = describe(s.STORE_URL)
    else:
        store = f"sqlite {state / STORE_FILE}"
    return {
        "MANAGED_ROOTS": ", ".join(roots),
        "STATE_DIR": state_text,
        "STORE_URL": store,
        "EEADM_COMMAND": f"{shlex.join(s.EEADM_COMMAND)} (runs {exe})",
    }


def missing_roots(s: Settings) -> list[str]:
    """MANAGED_ROOTS entries that are not directories now (an unmounted file system)."""
    return [root for root in s.MANAGED_ROOTS if not os.path.isdir(root)]
