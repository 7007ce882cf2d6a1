"""The status page: in headless Chromium against a running service with
queued, recalling and failed files; and as scripts see it (key header)."""

import pytest
import requests

from ltfsee_globus.api.context import services
from ltfsee_globus.sim.library import Library
from ltfsee_globus.store import FAILED, Update
from support import devserver

POLL = "/api/v0.5/globus_recall/globus_recall"


@pytest.fixture
def busy_site(make_sim, start_server, headers, wait_for):
    """A service with a failed file, a recall running and a file queued behind it.

    One drive, one recall at a time, a slow simulated tape (x10): the damaged
    file's recall fails first; the next recall needs an unmount and a mount
    (12 s real) while a third poll waits in the queue."""
    sim = make_sim(
        "page",
        files=40,
        dirs=4,
        tapes=4,
        drives=1,
        premigrated=0,
        resident=0,
        time_scale=10.0,
        min_size=10**9,
        max_size=2 * 10**9,
    )
    tapes = sim.tapes()
    by_tape: dict[str, list[str]] = {}
    for path, tape in sorted(tapes.items()):
        by_tape.setdefault(tape, []).append(path)
    (damaged, *_), (g1, g2, g3, *_), (queued, *_) = list(by_tape.values())[:3]
    lib = Library(sim.root)
    lib.damage([damaged])
    lib.close()
    server = start_server(
        EEADM_COMMAND=" ".join(sim.command),
        MANAGED_ROOTS=str(sim.fs),
        EEADM_SIM_DIR=str(sim.root),
        PREFETCH="false",
        RECALL_CONCURRENCY=1,
        RECALL_MAX_ATTEMPTS=1,
    )
    store = devserver.open_store(server.env)

    def poll(path: str) -> requests.Response:
        return requests.post(
            server.url + POLL,
            json={"path": path, "globus_taskid": "t1"},
            headers=headers,
            timeout=30,
        )

    def count(status: str) -> int:
        return store.ops.counts().files[status]

    assert poll(damaged).json() == {"state": "archived"}
    wait_for(lambda: count("recalling") == 1, what="the damaged file's recall")
    for path in (g1, g2, g3):
        assert poll(path).json() == {"state": "archived"}
    wait_for(
        lambda: count("failed") == 1 and count("recalling") == 3,
        timeout=60,
        what="one failure and the next recall running",
    )
    assert poll(queued).json() == {"state": "archived"}
    assert count("queued") == 1
    yield (
        server,
        {
            "damaged": damaged,
            "recalling": [g1, g2, g3],
            "queued": queued,
            "queued_tape": tapes[queued].split("@")[0],
            "recalling_tape": tapes[g1],
        },
    )
    store.close()


def test_status_page_in_chromium(busy_site, browser, artifacts, headers, wait_for):
    from selenium.webdriver.common.by import By

    server, files = busy_site
    browser.get(server.url + "/")
    assert browser.find_elements(By.ID, "key"), "no login form"
    browser.find_element(By.ID, "key").send_keys("not-the-key")
    browser.find_element(By.ID, "login").click()
    refused = wait_for(lambda: browser.find_elements(By.ID, "login-message"), what="refusal")
    assert "That key is not valid." in refused[0].text
    browser.find_element(By.ID, "key").send_keys(headers["X-API-KEY"])
    browser.find_element(By.ID, "login").click()
    wait_for(lambda: browser.find_elements(By.ID, "stager"), what="the status page")
    assert browser.current_url == server.url + "/"  # the key is never in a URL
    cookie = browser.get_cookie("ltfsee_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert headers["X-API-KEY"] not in cookie["value"]

    def text(element_id: str) -> str:
        return browser.find_element(By.ID, element_id).text

    assert "up" in text("stager") and "pid" in text("stager")
    assert text("count-queued").split() == ["queued", "1"]
    assert text("count-recalling").split() == ["recalling", "3"]
    assert text("count-failed").split() == ["failed", "1"]
    assert files["queued_tape"] in text("queue")
    running = browser.find_element(By.ID, "running")
    assert running.find_elements(By.TAG_NAME, "progress") and "0/3" in running.text
    assert files["recalling_tape"] in running.text  # the drives known: one tape per recall
    assert "ts4500: 1 of 1 drives serve recalls" in text("drives")
    failures = text("failures")
    assert files["damaged"] in failures and "after 1 attempt(s)" in failures
    assert "recall" in text("eeadm") and "file state" in text("eeadm")
    browser.save_screenshot(str(artifacts / "status-page.png"))

    # it reloads itself, without a click
    browser.execute_script("window.notReloaded = true")
    wait_for(
        lambda: browser.execute_script("return window.notReloaded !== true"),
        timeout=30,
        what="the page reloading itself",
    )
    assert "Running recalls" in browser.page_source

    browser.find_element(By.ID, "logout").click()
    wait_for(lambda: browser.find_elements(By.ID, "key"), what="the login form after logout")
    assert browser.get_cookie("ltfsee_session") is None


def test_status_page_for_scripts_and_strangers(busy_site, headers):
    server, files = busy_site
    page = requests.get(server.url + "/", headers=headers, timeout=10)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert files["damaged"] in page.text and "Running recalls" in page.text
    assert page.headers["Cache-Control"] == "no-store"
    stranger = requests.get(server.url + "/", timeout=10)
    assert stranger.status_code == 401 and 'name="key"' in stranger.text
    assert files["damaged"] not in stranger.text
    forged = requests.get(server.url + "/", cookies={"ltfsee_session": "t1.forged.sig"}, timeout=10)
    assert forged.status_code == 401


def login(client, key: str):
    return client.post("/login", data={"key": key})


def test_a_session_is_signed_with_its_key_and_ends_when_the_key_rotates(make_app, headers):
    app = make_app(AUTH_KEY=f"ops:{headers['X-API-KEY']},other:another-key-987")
    client = app.test_client()
    resp = login(client, headers["X-API-KEY"])
    assert resp.status_code == 303 and resp.headers["Location"] == "/"
    set_cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie
    assert headers["X-API-KEY"] not in set_cookie
    page = client.get("/")
    assert page.status_code == 200 and "key ops" in page.text
    token = client.get_cookie("ltfsee_session").value
    rotated = make_app(AUTH_KEY="ops:a-new-key-555,other:another-key-987").test_client()
    rotated.set_cookie("ltfsee_session", token)
    assert rotated.get("/").status_code == 401
    client.set_cookie("ltfsee_session", token[:-2] + ("AA" if token[-2:] != "AA" else "BB"))
    assert client.get("/").status_code == 401
    client.post("/logout")
    assert client.get("/").status_code == 401


@pytest.mark.parametrize(
    ("form", "status", "says"),
    [({}, 400, "Enter an API key."), ({"key": "wrong"}, 401, "That key is not valid.")],
)
def test_login_refusals_show_the_form_again(client, form, status, says, caplog):
    resp = client.post("/login", data=form)
    assert resp.status_code == status and says in resp.text and 'name="key"' in resp.text
    assert "wrong" not in caplog.text


def test_the_page_escapes_what_it_shows(app, client, headers):
    store = services(app).store
    path = "/gpfs/<script>alert(1)</script>"
    store.polls.request(path, None, "globus", "t")
    batch_id, _ = store.queue.claim("", 10)
    update = Update(path, FAILED, last_error="<script>alert(1)</script>")
    store.queue.finish_batch(
        batch_id, outcome="failed", detail="", eeadm_task_id=None, updates=[update]
    )
    page = client.get("/", headers=headers)
    assert "<script>alert(1)</script>" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
