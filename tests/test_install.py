"""The files `ltfsee-globus install-units` renders for an installation."""

import re
import stat
import subprocess
import sys

import pytest

from ltfsee_globus.install import FILES, Layout, render


def test_units_and_sudoers_follow_the_layout(tmp_path):
    layout = Layout(
        prefix="/srv/lg", state_dir="/data/lg-state", user="tape", after="gpfs.service ee.service"
    )
    texts = render(layout)
    web = texts["etc/systemd/system/ltfsee-globus.service"]
    stager = texts["etc/systemd/system/ltfsee-globus-stager.service"]
    assert "ExecStart=/srv/lg/bin/gunicorn -c python:ltfsee_globus.gunicorn_conf" in web
    assert "ExecStart=/srv/lg/bin/ltfsee-globus --env-file /etc/ltfsee-globus/env stager" in stager
    for unit in (web, stager):
        assert "After=network-online.target" in unit and "gpfs.service ee.service" in unit
        assert "User=tape" in unit and "Environment=STATE_DIR=/data/lg-state" in unit
        assert "RequiresMountsFor=/data/lg-state" in unit
    assert [t for t in texts.values() if re.search(r"@[A-Z_]+@", t)] == []  # all filled
    sudoers = texts["etc/sudoers.d/ltfsee-globus"]
    assert "eeadm recall /data/lg-state/batches/*" in sudoers
    assert "tape ALL=(root) NOPASSWD: LTFSEE_GLOBUS" in sudoers


def install_units(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ltfsee_globus.cli", "install-units", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_install_units_writes_them_with_their_modes(tmp_path):
    res = install_units(
        "--dest", str(tmp_path), "--prefix", "/opt/x", "--env", str(tmp_path / "env")
    )
    assert res.returncode == 0, res.stderr
    for path, _template, mode in FILES:
        assert stat.S_IMODE((tmp_path / path).stat().st_mode) == mode, path
    assert res.stdout.count("wrote ") == len(FILES)


@pytest.mark.parametrize("option", ["--prefix", "--state-dir", "--env", "--eeadm"])
def test_relative_paths_are_refused(tmp_path, option):
    res = install_units("--dest", str(tmp_path), option, "rel")
    assert res.returncode == 2 and "must be an absolute path" in res.stderr
