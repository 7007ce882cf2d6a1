"""The operator CLI through its real entry point, on a live store and simulator."""

import json
import os
import pwd
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ltfsee_globus.api.context import services
from ltfsee_globus.sim.library import Library
from ltfsee_globus.stager import Stager
from ltfsee_globus.store import DONE, FAILED, QUEUED, Update

pytestmark = pytest.mark.both_engines


@pytest.fixture
def site(make_app, sim, run_cli):
    """A store with queued, done and failed files (service down), and run(*args)."""
    app = make_app(PREFETCH=False)
    store = services(app).store
    m = sim.files("M")
    for path in m[:4]:
        store.polls.request(path, None, "globus", "task-a", size=100, tape="T00001L8@pool1@lib1")
    batch_id, paths = store.queue.claim("", 2)
    store.queue.finish_batch(
        batch_id,
        outcome="partial",
        detail="",
        eeadm_task_id=None,
        updates=[
            Update(paths[0], DONE),
            Update(paths[1], FAILED, last_error="after 3 attempt(s): GLESL016E damaged"),
        ],
    )
    store.polls.request(m[4], None, "globus", "task-b", size=5)

    def run(*args, env: dict | None = None):
        return run_cli(*args, env={"SUDO_USER": "alice", **(env or {})})

    return store, run, {"done": paths[0], "failed": paths[1], "queued": m[2:5]}


def test_status_as_json_and_as_a_table(site):
    _store, run, f = site
    res = run("status", "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["files"] == {"queued": 3, "recalling": 0, "done": 1, "failed": 1}
    assert report["stager_running"] is False and report["running_batches"] == []
    assert [q["files"] for q in report["queue"]] == [2, 1]  # tape T00001L8, then no tape
    assert [x["path"] for x in report["recent_failures"]] == [f["failed"]]
    table = run("status").stdout
    assert "stager: NOT RUNNING" in table and f["failed"] in table and "GLESL016E" in table


def test_files_and_batches_filter(site):
    _store, run, f = site
    failed = json.loads(run("files", "--status", "failed", "--json").stdout)
    assert [x["path"] for x in failed] == [f["failed"]]
    task_b = json.loads(run("files", "--task", "task-b", "--json").stdout)
    assert [x["path"] for x in task_b] == [f["queued"][2]]
    prefix = f["queued"][0].rsplit("/", 1)[0] + "/"
    under = json.loads(run("files", "--prefix", prefix, "--status", "queued", "--json").stdout)
    assert {x["path"] for x in under} <= set(f["queued"]) and under
    batches = json.loads(run("batches", "--json").stdout)
    assert [(b["status"], b["outcome"], b["files_done"]) for b in batches] == [
        ("done", "partial", 1)
    ]
    assert "partial" in run("batches").stdout
    assert batches[0]["tape"] is None and "tape" in run("batches").stdout.splitlines()[0]


def test_retry_forget_cancel_change_the_store_and_are_recorded(site):
    store, run, f = site
    res = run("retry", f["failed"])
    assert (res.returncode, res.stdout) == (0, "retry: 1 file(s)\n")
    assert "operator alice: retry" in res.stderr
    row = store.polls.lookup(f["failed"])
    assert (row.status, row.attempts, row.last_error) == (QUEUED, 0, None)
    res = run("cancel", "--task", "task-a")
    assert res.returncode == 0 and res.stdout == "cancel: 3 file(s)\n"  # the retried one too
    assert store.polls.lookup(f["queued"][2]).status == QUEUED  # task-b's file stays
    assert store.polls.lookup(f["done"]).status == DONE  # done files are not queued
    assert run("forget", f["queued"][2]).returncode == 1  # not failed: nothing to forget
    actions = [(a.who, a.action, a.files) for a in store.ops.actions()]
    assert actions == [("alice", "forget", 0), ("alice", "cancel", 3), ("alice", "retry", 1)]


@pytest.mark.parametrize(
    "args", [("retry",), ("retry", "/x", "--failed"), ("cancel",), ("cancel", "/x", "--task", "t")]
)
def test_ambiguous_changes_are_usage_errors(site, args):
    _store, run, _f = site
    res = run(*args)
    assert res.returncode == 2 and "give PATHs" in res.stderr


def test_doctor_names_each_check(site):
    _store, run, _f = site
    res = run("doctor")
    lines = dict(line.split(None, 1) for line in res.stdout.splitlines())
    assert lines == {
        "config": "ok",
        "roots": "ok",
        "store": "ok",
        "stager": "no stager holds the stager lease",
        "eeadm": "ok",
        "drives": "warning: drives not known (not read yet): recalls go to EE in batches",
        "drivelist": "ok: ts4500 2 of 2 serve recalls",
        "policy": "ok: no POLICY_FILE: every key everywhere under MANAGED_ROOTS, no tokens",
        "sudo": "ok (eeadm does not run through sudo)",
        "disk": "ok",
    }
    assert res.returncode == 1  # one check failed (a warning is no failure)


def test_doctor_reaches_each_token_issuer_of_the_policy(site, issuer, tmp_path):
    _store, run, _f = site
    policy = tmp_path / "policy.toml"
    policy.write_text(
        f'[issuers."{issuer.url}"]\nbase_path = "/gpfs"\naudiences = ["https://t.example"]\n'
    )
    env = {"POLICY_FILE": str(policy), "REQUESTS_CA_BUNDLE": str(issuer.ca_file)}
    lines = dict(line.split(None, 1) for line in run("doctor", env=env).stdout.splitlines())
    assert lines["policy"] == f"ok: 0 key(s), {issuer.url} 2 signing key(s)"
    issuer.stop()
    res = run("doctor", env=env)
    lines = dict(line.split(None, 1) for line in res.stdout.splitlines())
    assert lines["policy"].startswith(f"issuer keys not fetched: {issuer.url} unreachable")
    assert res.returncode == 1


def test_doctor_asks_sudo_for_each_subcommand(site, sim, tmp_path):
    """A `sudo` that allows `file state` and `node list` but not our recalls."""
    sudo = tmp_path / "bin" / "sudo"
    sudo.parent.mkdir()
    sudo.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = -n ] && [ "$2" = -l ]; then\n'
        '  case "$4" in recall) exit 1;; *) echo "$3 $4"; exit 0;; esac\n'
        "fi\n"
        'shift; exec "$@"\n'
    )
    sudo.chmod(0o755)
    _store, run, _f = site
    res = run("doctor", env={"EEADM_COMMAND": f"{sudo} -n {' '.join(sim.command)}"})
    lines = dict(line.split(None, 1) for line in res.stdout.splitlines())
    assert lines["eeadm"] == "ok"  # node list through the fake sudo
    assert lines["sudo"] == (f"sudo -n does not allow eeadm recall {tmp_path}/state/batches/1.list")
    assert res.returncode == 1


@pytest.mark.parametrize(
    ("stager", "code", "says"), [("embedded", 0, "ready: "), ("off", 1, "stager")]
)
def test_ready_asks_the_running_service(start_server, stager, code, says):
    server = start_server(STAGER=stager)
    port = server.url.rsplit(":", 1)[1]
    res = subprocess.run(
        [sys.executable, "-m", "ltfsee_globus.cli", "ready", "--wait", "2"],
        env={**server.env, "BIND": f"0.0.0.0:{port}"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == code, res.stderr
    assert says in (res.stdout if code == 0 else res.stderr)
    assert "Traceback" not in res.stderr


def test_ready_says_when_nothing_answers(base_config, sim):
    env = {
        "PATH": "/usr/bin:/bin",
        "AUTH_KEY": "k",
        "EEADM_COMMAND": " ".join(sim.command),
        "MANAGED_ROOTS": str(sim.fs),
        "STATE_DIR": base_config["STATE_DIR"],
        "BIND": "127.0.0.1:9",
    }
    res = subprocess.run(
        [sys.executable, "-m", "ltfsee_globus.cli", "ready"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 1
    assert "not ready: http://127.0.0.1:9/readyz: no answer (ConnectionRefusedError)" in res.stderr


def test_batches_show_the_ee_task_id_and_how_to_ask_ee_about_a_failed_one(make_app, sim, site):
    """A real recall through the simulator (colon-form task IDs, as newer EE
    releases print), then a failed one: `batches` names the command to run."""
    _store, run, _f = site
    svc = services(make_app(PREFETCH=False, RECALL_MAX_ATTEMPTS=1))
    good, bad = sim.files("M")[-2:]
    lib = Library(sim.root)
    lib.damage([bad])
    lib.close()
    stager = Stager(svc.settings, svc.store, svc.eeadm)
    for path in (good, bad):
        svc.store.polls.request(path, None, "globus", "task-c")
        stager.step()
        stager.wait_idle()
    res = run("batches")
    assert res.returncode == 0, res.stderr
    batches = json.loads(run("batches", "--json").stdout)
    ours = [b for b in batches if b["eeadm_task_id"]]  # one tape per recall: the site's too
    assert ours[0]["outcome"] == "failed"
    assert {b["outcome"] for b in ours[1:]} == {"succeeded"}
    failed_id, ok_id = ours[0]["eeadm_task_id"], ours[1]["eeadm_task_id"]
    assert all(":" in t and t.split(":")[0].isdigit() for t in (failed_id, ok_id))
    assert f"eeadm task show {failed_id} -r" in res.stdout
    assert f"eeadm task show {ok_id} -r" not in res.stdout


def test_operator_commands_read_the_service_environment_file(site, base_config, tmp_path):
    """The units load /etc/ltfsee-globus/env; an operator's shell has none of it."""
    _store, _run, f = site
    env_file = tmp_path / "env"
    settings = {
        "AUTH_KEY": base_config["AUTH_KEY"],
        "STATE_DIR": base_config["STATE_DIR"],
        "STORE_URL": base_config["STORE_URL"],
        "MANAGED_ROOTS": base_config["MANAGED_ROOTS"][0],
        "EEADM_COMMAND": " ".join(base_config["EEADM_COMMAND"]),
    }
    env_file.write_text(
        "# as the units read it\n" + "".join(f'{k}="{v}"\n' for k, v in settings.items())
    )

    def bare(*args, **env):
        """The CLI in a shell that has none of the service's settings."""
        return subprocess.run(
            [sys.executable, "-m", "ltfsee_globus.cli", *args],
            env={"PATH": "/usr/bin:/bin", **env},
            capture_output=True,
            text=True,
            timeout=60,
        )

    res = bare("status", "--json", LTFSEE_GLOBUS_ENV=str(env_file))
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["files"]["failed"] == 1
    res = bare("--env-file", str(env_file), "files", "--status", "failed", "--json")
    assert [x["path"] for x in json.loads(res.stdout)] == [f["failed"]]
    # the process environment wins over the file
    res = bare(
        "--env-file", str(env_file), "status", "--json", STATE_DIR=str(tmp_path / "o"), STORE_URL=""
    )
    assert res.returncode == 0 and json.loads(res.stdout)["files"]["failed"] == 0
    for command in ("check-config", "doctor"):
        res = bare("--env-file", str(env_file), command)
        assert "AUTH_KEY is missing" not in res.stderr, (command, res.stderr)
        assert res.returncode in (0, 1), (command, res.stderr)  # doctor: no stager runs
    missing = bare("--env-file", str(tmp_path / "none"), "status")
    assert missing.returncode == 3 and "AUTH_KEY is missing" in missing.stderr


@pytest.mark.sqlite_only
@pytest.mark.skipif(os.geteuid() != 0, reason="only root can be refused")
def test_root_is_refused_a_sqlite_store_another_user_owns(site, base_config):
    _store, run, _f = site
    db = Path(base_config["STATE_DIR"]) / "ltfsee-globus.db"
    nobody = pwd.getpwnam("nobody")
    for p in db.parent.glob("ltfsee-globus.db*"):
        os.chown(p, nobody.pw_uid, nobody.pw_gid)
    res = run("retry", "--failed")
    assert res.returncode == 2 and "belongs to nobody" in res.stderr
    assert "sudo -u nobody" in res.stderr
    assert {p.stat().st_uid for p in db.parent.glob("ltfsee-globus.db*")} == {nobody.pw_uid}
    assert run("--as-root", "status").returncode == 0


@pytest.mark.sqlite_only
def test_ready_reaches_a_unix_socket_and_pins_the_tls_certificate(
    server_env, start_server, tmp_path, wait_for
):
    """What the unit's ExecStartPost runs: from the settings alone, whether the
    service listens on a unix socket or serves TLS with a private certificate."""
    cli = [sys.executable, "-m", "ltfsee_globus.cli"]
    sock = tmp_path / "api.sock"
    env = {**os.environ, **server_env, "BIND": f"unix:{sock}"}
    with open(tmp_path / "unix.log", "ab") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-c",
                "python:ltfsee_globus.gunicorn_conf",
                "ltfsee_globus:create_app()",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        res = subprocess.run(
            [*cli, "ready", "--wait", "30"], env=env, capture_output=True, text=True, timeout=60
        )
        assert (res.returncode, res.stdout) == (0, f"ready: unix:{sock}\n"), res.stderr
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    certs = {}
    for name in ("served", "other"):
        (tmp_path / name).mkdir()
        made = subprocess.run(
            ["sh", "ssl/make-dev-cert.sh", str(tmp_path / name)], capture_output=True
        )
        assert made.returncode == 0
        certs[name] = (tmp_path / name / "dev-key.pem", tmp_path / name / "dev-cert.pem")
    key, cert = certs["served"]
    server = start_server(KEYFILE=key, CERTFILE=cert)
    port = server.url.rsplit(":", 1)[1]
    local = {**server.env, "BIND": f"0.0.0.0:{port}"}
    res = subprocess.run([*cli, "ready"], env=local, capture_output=True, text=True, timeout=60)
    assert (res.returncode, res.stdout) == (0, f"ready: https://127.0.0.1:{port}\n"), res.stderr
    wrong = {**local, "CERTFILE": str(certs["other"][1]), "KEYFILE": str(certs["other"][0])}
    res = subprocess.run([*cli, "ready"], env=wrong, capture_output=True, text=True, timeout=60)
    assert res.returncode == 1 and "the certificate served is not CERTFILE's" in res.stderr
