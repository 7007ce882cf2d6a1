"""Configuration: defaults, environment, .env, and failing fast with clear messages."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ltfsee_globus import create_app
from ltfsee_globus.config import ConfigError, load_settings


@pytest.fixture
def good(tmp_path) -> dict:
    return {
        "AUTH_KEY": "k",
        "EEADM_COMMAND": "true",
        "MANAGED_ROOTS": "/gpfs",
        "STATE_DIR": str(tmp_path / "state"),
    }


def test_environment_is_read_inside_the_factory(monkeypatch, good, tmp_path):
    for k, v in good.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("LTFSEE_LIB", "lib1,lib2")
    monkeypatch.setenv("PREFETCH", "False")
    monkeypatch.setenv("EEADM_COMMAND", "env -u HOME /opt/ibm/ltfsee/bin/eeadm")
    monkeypatch.chdir(tmp_path)
    s = load_settings()
    assert s.LTFSEE_LIB == ["lib1", "lib2"]
    assert s.PREFETCH is False
    assert s.EEADM_COMMAND == ["env", "-u", "HOME", "/opt/ibm/ltfsee/bin/eeadm"]
    assert s.AUTH_KEY == {"default": "k"}


def test_dotenv_file_is_read(monkeypatch, tmp_path, good):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("".join(f"{k}={v}\n" for k, v in good.items()))
    for k in good:
        monkeypatch.delenv(k, raising=False)
    assert load_settings().MANAGED_ROOTS == ["/gpfs"]


def test_config_mapping_overrides_environment(monkeypatch, good):
    monkeypatch.setenv("BATCH_WINDOW", "99")
    assert load_settings({**good, "BATCH_WINDOW": "3"}).BATCH_WINDOW == 3.0


def test_named_keys_for_rotation(good):
    s = load_settings({**good, "AUTH_KEY": "old:abc,new:def"})
    assert s.AUTH_KEY == {"old": "abc", "new": "def"}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"AUTH_KEY": ""}, "AUTH_KEY is missing"),
        ({"AUTH_KEY": "name:"}, "named keys"),
        ({"MANAGED_ROOTS": "gpfs"}, "must be an absolute"),
        ({"MANAGED_ROOTS": "/"}, "must be an absolute"),
        ({"MANAGED_ROOTS": "/gpfs/../etc"}, "normalised"),
        ({"EEADM_COMMAND": "/nonexistent/eeadm"}, "not an executable"),
        ({"STATE_DIR": "relative"}, "STATE_DIR"),
        ({"LOGLEVEL": "chatty"}, "LOGLEVEL"),
        ({"STAGER": "sometimes"}, "STAGER"),
        ({"BATCH_MAX_FILES": 0}, "BATCH_MAX_FILES must be greater than 0"),
        ({"TAPE_DRIVES": -1}, "TAPE_DRIVES must not be negative"),
    ],
)
def test_bad_settings_fail_fast_with_a_clear_message(good, override, message):
    with pytest.raises(ConfigError, match=message):
        create_app({**good, **override})


def test_unparseable_environment_value(monkeypatch, good):
    monkeypatch.setenv("BATCH_WINDOW", "soon")
    with pytest.raises(ConfigError, match="BATCH_WINDOW"):
        load_settings(good)


def test_every_problem_is_listed_at_once(good):
    with pytest.raises(ConfigError) as info:
        load_settings({**good, "AUTH_KEY": "", "MANAGED_ROOTS": "x"})
    assert "AUTH_KEY" in str(info.value) and "MANAGED_ROOTS" in str(info.value)


def check_config(tmp_path, env: dict) -> subprocess.CompletedProcess:
    """`ltfsee-globus check-config` in a clean environment."""
    return subprocess.run(
        [sys.executable, "-m", "ltfsee_globus.cli", "check-config"],
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **env},
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"AUTH_KEY": ""}, "AUTH_KEY is missing"),
        ({"WORKERS": "abc"}, "WORKERS"),
        ({"WORKERS": "0"}, "WORKERS must be greater than 0"),
        ({"THREADS": "-1"}, "THREADS must be greater than 0"),
        ({"TIMEOUT": "1.5"}, "TIMEOUT"),
        ({"BIND": "localhost"}, "BIND 'localhost' must be HOST:PORT"),
        ({"BIND": "localhost:99999"}, "BIND"),
        ({"KEYFILE": "/etc/hostname"}, "set both KEYFILE and CERTFILE"),
        ({"KEYFILE": "/no/key", "CERTFILE": "/no/cert"}, "KEYFILE /no/key is not a readable"),
        ({"ACCESS_LOG": "perhaps"}, "ACCESS_LOG"),
        ({"MANAGED_ROOTS": "/no/such/mount"}, "MANAGED_ROOTS not mounted"),
        ({"STATE_DIR": "/etc/hostname/x"}, "/etc/hostname is not a writable directory"),
        ({"STATE_DIR": "/etc/hostname"}, "STATE_DIR /etc/hostname is not a directory"),
    ],
)
def test_check_config_names_the_bad_setting_without_a_traceback(tmp_path, good, change, says):
    res = check_config(tmp_path, {**good, "MANAGED_ROOTS": str(tmp_path), **change})
    assert res.returncode == 3, res.stdout
    assert says in res.stderr and "Traceback" not in res.stderr


def test_check_config_reports_what_it_found_and_changes_nothing(tmp_path, good):
    state = tmp_path / "not" / "yet"
    env = {**good, "AUTH_KEY": "s3cret-value", "MANAGED_ROOTS": str(tmp_path)}
    res = check_config(tmp_path, {**env, "STATE_DIR": str(state)})
    assert res.returncode == 0, res.stderr
    assert "s3cret-value" not in res.stdout + res.stderr and '"default"' in res.stdout
    assert f"MANAGED_ROOTS: {tmp_path} (a directory)" in res.stderr
    assert f"STATE_DIR: {state} (does not exist yet; the service creates it)" in res.stderr
    assert "EEADM_COMMAND: true (runs /usr/bin/true)" in res.stderr
    assert not (tmp_path / "not").exists()  # no side effects


@pytest.mark.parametrize(("auth_key", "code"), [("", 3), ("k", 0)])
def test_gunicorn_check_config(tmp_path, good, auth_key, code):
    root = Path(__file__).resolve().parent.parent
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), **good, "AUTH_KEY": auth_key}
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--check-config",
            "-c",
            str(root / "gunicorn.conf.py"),
            "ltfsee_globus:create_app()",
        ],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert res.returncode == code, res.stderr
    assert "Traceback" not in res.stderr
    assert ("AUTH_KEY is missing" in res.stderr) is bool(code)
