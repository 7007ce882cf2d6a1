"""Hostile input across every endpoint: a 4xx problem+json, never a 500 or a traceback.

Each table row is one class of input; every row runs against every endpoint
it applies to, through the real app, store and simulator.
"""

import json
import logging
import os
import sys
import unicodedata

import pytest
import requests

from ltfsee_globus.api.common import MAX_DEPTH
from ltfsee_globus.paths import OutsideRoots, PathRefused, normalise
from ltfsee_globus.staging import NoSuchFile, require_file

V05 = "/api/v0.5"
V1 = "/api/v1"
GLOBUS = [f"{V05}/globus_recall/globus_recall", f"{V05}/file_state/file_state"]


def wrap(url: str, path) -> dict:
    """The body each endpoint takes around one path."""
    if url.endswith("/stage"):
        return {"files": [{"path": path}]}
    if "/v0.5/" in url:
        return {"path": path, "globus_taskid": "t1"}
    return {"paths": [path]}


@pytest.fixture
def send(app, sim, headers, caplog):
    """send(method, url, ...) to the app, with {id} in a URL the id of a real
    stage request; it fails the test on any 5xx or logged traceback."""
    caplog.set_level(logging.WARNING)
    client = app.test_client()
    first = {"files": [{"path": sim.files("M")[0]}]}
    made = client.post(f"{V1}/stage", json=first, headers=headers)
    assert made.status_code == 201
    rid = made.get_json()["requestId"]

    def one(method, url, data=None, hdrs=None, content_type="application/json"):
        resp = client.open(
            url.format(id=rid),
            method=method,
            data=data,
            headers=headers if hdrs is None else hdrs,
            content_type=content_type,
        )
        text = resp.get_data(as_text=True)
        assert resp.status_code < 500, (method, url, resp.status_code, text)
        if resp.status_code >= 400:
            assert resp.mimetype == "application/problem+json", text
            assert resp.get_json()["status"] == resp.status_code
        tracebacks = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
        assert tracebacks == []
        return resp

    return one


# Endpoints that read a JSON body, with the URL as sent ({id}: a real request's id).
BODY_ENDPOINTS = [
    *GLOBUS,
    f"{V1}/stage",
    f"{V1}/stage/{{id}}/cancel",
    f"{V1}/release/{{id}}",
    f"{V1}/archiveinfo",
]

# (name, raw body): what a broken or malicious client sends instead of our JSON.
BAD_BODIES = [
    ("empty", b""),
    ("truncated", b'{"path": "/x'),
    ("not UTF-8", '{"path": "/gpfs/\xe9t\xe9"}'.encode("latin-1")),
    ("UTF-16", '{"path": "/gpfs/x"}'.encode("utf-16")),
    ("lone surrogate in a value", b'{"path": "/gpfs/\\ud800", "paths": ["\\udfff"]}'),
    ("lone surrogate in a key", b'{"\\udc00": 1, "files": [{"path": "/a", "\\ud800x": 2}]}'),
    ("surrogate pair is fine but unknown", b'{"path": "\\ud83d\\ude00"}'),
    ("deep array", b"[" * 100_000 + b"]" * 100_000),
    ("deep object", b'{"a":' * 50_000 + b"1" + b"}" * 50_000),
    ("too deep for us", ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)).encode()),
    ("huge float", b'{"path": 1e999999, "files": 1e999999, "paths": 1e999999}'),
    ("huge integer", b'{"path": ' + b"9" * 5000 + b"}"),
    ("NaN", b'{"path": NaN, "files": NaN, "paths": NaN}'),
    ("null", b"null"),
    ("array", b"[]"),
    ("string", b'"/gpfs/x"'),
    ("wrong types", b'{"path": ["/a"], "files": {"path": 1}, "paths": "/a", "globus_taskid": 5}'),
    ("null members", b'{"path": null, "files": [null], "paths": [null]}'),
    ("NUL in JSON", b'{"path": "/gpfs/a\\u0000b"}'),
    ("over the size limit", b'{"path": "' + b"a" * (1024 * 1024 + 10) + b'"}'),
]


@pytest.mark.parametrize("url", BODY_ENDPOINTS)
@pytest.mark.parametrize(("name", "raw"), BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
def test_bad_bodies(send, url, name, raw):
    resp = send("POST", url, raw)
    assert 400 <= resp.status_code < 500


@pytest.mark.parametrize(
    ("name", "raw", "status"),
    [
        ("lone surrogate", b'{"path": "/gpfs/\\ud800"}', 400),
        ("deep", b"[" * 100_000, 400),
        ("over the size limit", b"[" + b" " * (1024 * 1024) + b"]", 413),
        ("not UTF-8", b'{"path": "\xff"}', 400),
    ],
)
def test_the_status_of_each_bad_body_class(send, name, raw, status):
    assert send("POST", GLOBUS[0], raw).status_code == status


def make_paths(fs):
    """(name, path, Globus status): hostile paths; the file system objects are made here."""
    (fs / "loop").symlink_to(fs / "loop")
    (fs / "a-b").symlink_to(fs / "b-a")
    (fs / "b-a").symlink_to(fs / "a-b")
    (fs / "out").symlink_to("/etc/passwd")
    (fs / "out-to-nothing").symlink_to("/etc/no/such/file")
    os.mkfifo(fs / "fifo")
    return [
        ("relative", "gpfs/x", 400),
        ("dot-dot", f"{fs}/../../etc/passwd", 400),
        ("glob", f"{fs}/*", 400),
        ("leading dash", f"{fs}/-rf", 400),
        ("tab", f"{fs}/a\tb", 400),
        ("newline", f"{fs}/a\n/etc/passwd", 400),
        ("DEL", f"{fs}/a\x7f", 400),
        ("C1 control (NEL)", f"{fs}/a\x85b", 400),
        ("line separator", f"{fs}/a\u2028b", 400),
        ("no-break space is a name", f"{fs}/a\u00a0b", 404),
        ("symlink loop", f"{fs}/loop", 400),
        ("symlink cycle", f"{fs}/a-b", 400),
        ("symlink out", f"{fs}/out", 403),
        ("symlink out to nothing", f"{fs}/out-to-nothing", 403),
        ("name too long", f"{fs}/{'n' * 300}", 400),
        ("path too long", f"{fs}/{'d/' * 2100}x", 400),
        ("directory", str(fs), 400),
        ("fifo", f"{fs}/fifo", 400),
        ("unknown", f"{fs}/no/such", 404),
        ("non-ASCII unknown", f"{fs}/\u00e9t\u00e9/\u6587\u4ef6", 404),
        ("outside", "/etc/passwd", 403),
        ("empty", "", 400),
        ("only slashes", "///", 403),
    ]


def _tree(tmp_path):
    """A managed root, a file outside it, and links every way (require_file's table)."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "f").write_text("abc")
    (outside / "f").write_text("secret")
    (tmp_path / "alias").symlink_to(root)
    for name, target in [
        ("in", root / "f"),
        ("out", outside / "f"),
        ("out-to-nothing", outside / "none"),
        ("in-to-nothing", root / "none"),
        ("out-dir", outside),
        ("loop", root / "loop"),
    ]:
        (root / name).symlink_to(target)
    os.mkfifo(root / "fifo")
    return root


@pytest.mark.parametrize(
    ("path", "roots", "outcome"),
    [
        ("root/f", ["root"], 3),
        ("root/in", ["root"], 3),
        ("alias/f", ["root"], 3),  # a path through a link to the root
        ("root/f", ["alias"], 3),  # a root configured through a link
        ("root/out", ["root"], OutsideRoots),
        ("root/out-to-nothing", ["root"], OutsideRoots),  # 403 before "no such file"
        ("root/out-dir/f", ["root"], OutsideRoots),
        ("root/in-to-nothing", ["root"], NoSuchFile),
        ("root/none", ["root"], NoSuchFile),
        ("root/f/under-a-file", ["root"], NoSuchFile),
        ("root/loop", ["root"], PathRefused),
        ("root/fifo", ["root"], PathRefused),  # O_PATH does not block on a FIFO
        ("root", ["root"], PathRefused),  # a directory
    ],
)
def test_require_file_follows_links_as_the_kernel_does(tmp_path, path, roots, outcome):
    _tree(tmp_path)
    full, managed = str(tmp_path / path), [str(tmp_path / r) for r in roots]
    if isinstance(outcome, int):
        assert require_file(full, managed).st_size == outcome
    else:
        with pytest.raises(outcome) as raised:
            require_file(full, managed)
        assert type(raised.value) is outcome


def test_require_file_asks_the_kernel_not_a_walk_for_a_file_it_can_open(tmp_path, monkeypatch):
    """The poll's path check is one open where it can be: realpath's walk
    (an lstat a component) is only for paths the kernel would not open."""
    root = _tree(tmp_path)
    walked = []
    realpath = os.path.realpath

    def walk(path, *args, **kwargs):
        if str(path).startswith(f"{root}/"):
            walked.append(path)
        return realpath(path, *args, **kwargs)

    monkeypatch.setattr(os.path, "realpath", walk)
    assert require_file(f"{root}/in", [str(root)]).st_size == 3
    assert walked == []
    with pytest.raises(OutsideRoots):
        require_file(f"{root}/out-to-nothing", [str(root)])
    assert walked == [f"{root}/out-to-nothing"]


def test_hostile_paths_on_every_endpoint(send, sim):
    cases = make_paths(sim.fs)
    before = len(sim.invocations())
    for name, path, status in cases:
        for url in GLOBUS:
            got = send("POST", url, json.dumps(wrap(url, path))).status_code
            assert (name, url, got) == (name, url, status)
        for url in BODY_ENDPOINTS[2:]:
            send("POST", url, json.dumps(wrap(url, path)))
    assert len(sim.invocations()) == before  # none of them reached eeadm
    # the WLCG API takes a stage request of them all and fails each file alone
    made = send("POST", f"{V1}/stage", json.dumps({"files": [{"path": c[1]} for c in cases]}))
    assert made.status_code == 201


ROUTES = [
    ("POST", GLOBUS[0]),
    ("POST", GLOBUS[1]),
    ("POST", f"{V1}/stage"),
    ("GET", f"{V1}/stage/{{id}}"),
    ("DELETE", f"{V1}/stage/{{id}}"),
    ("POST", f"{V1}/stage/{{id}}/cancel"),
    ("POST", f"{V1}/release/{{id}}"),
    ("POST", f"{V1}/archiveinfo"),
    ("GET", "/api/status"),
]


WRONG_METHODS = [
    (other, url, method)
    for method, url in ROUTES
    for other in ("GET", "PUT", "PATCH", "DELETE", "POST", "TRACE")
    if other != method and not (url.endswith("{id}") and other in ("GET", "DELETE"))
]


@pytest.mark.parametrize(("other", "url", "allowed"), WRONG_METHODS)
def test_wrong_methods_are_405_with_allow(send, other, url, allowed):
    resp = send(other, url, b"{}")
    assert resp.status_code == 405 and allowed in resp.headers["Allow"]


@pytest.mark.parametrize(
    ("name", "hdrs"),
    [
        ("none", {}),
        ("wrong", {"X-API-KEY": "wrong"}),
        ("non-ASCII", {"X-API-KEY": "cl\u00e9-\u00ff"}),
        ("empty bearer", {"Authorization": "Bearer "}),
        ("basic", {"Authorization": "Basic dXNlcjpwYXNz"}),
        ("bearer non-ASCII", {"Authorization": "Bearer \u00e9"}),
        ("very long", {"X-API-KEY": "k" * 100_000}),
    ],
)
@pytest.mark.parametrize(("method", "url"), ROUTES)
def test_bad_keys_are_401(send, name, hdrs, method, url):
    assert send(method, url, b"{}", hdrs=hdrs).status_code == 401


@pytest.mark.parametrize(
    "rid",
    ["%00", "%ED%A0%80", "%FF", "x" * 10_000, "..%2F..%2Fetc", "a%0Ab", "%E2%80%AE"],
)
@pytest.mark.parametrize(
    ("method", "tail"),
    [("GET", ""), ("DELETE", ""), ("POST", "/cancel")],
)
def test_odd_request_ids_are_404(send, rid, method, tail):
    body = b'{"paths": ["/a"]}'
    assert send(method, f"{V1}/stage/{rid}{tail}", body).status_code == 404
    if method == "POST":
        assert send("POST", f"{V1}/release/{rid}", body).status_code == 404


@pytest.mark.parametrize(
    ("content_type", "status"),
    [("text/plain", 201), ("application/x-www-form-urlencoded", 201), ("", 201)],
)
def test_any_content_type_with_a_json_body_is_read(send, sim, content_type, status):
    body = json.dumps({"path": sim.files("R")[0]})
    assert send("POST", GLOBUS[0], body, content_type=content_type).status_code == status


def test_read_only_endpoints_take_no_harm(send):
    for url in ("/healthz", "/metrics", "/api/openapi.json", "/.well-known/wlcg-tape-rest-api"):
        assert send("GET", url, hdrs={}).status_code == 200
        assert send("GET", url + "?x=%ff&y=\u00e9", hdrs={}).status_code == 200
    assert send("GET", "/no/such/route").status_code == 404


def test_a_chunked_body_over_the_size_limit_is_413_on_the_real_server(live_server, headers):
    """Without Content-Length (Transfer-Encoding: chunked) the size limit is
    only found while reading: still 413, never a truncated body's 400."""
    limit = 1024 * 1024

    def chunks(total):
        yield b'{"path": "'
        for _ in range(total // 65536):
            yield b"x" * 65536
        yield b'"}'

    for total, status in ((limit * 2, 413), (1000, 400)):
        resp = requests.post(
            live_server.url + GLOBUS[0], data=chunks(total), headers=headers, timeout=30
        )
        assert resp.status_code == status, resp.text
        assert resp.headers["Content-Type"] == "application/problem+json"


def test_every_line_breaking_character_and_only_those_is_refused_in_a_path():
    """What splitlines() would split on (Unicode's Cc, Zl, Zp) is refused
    wherever it sits; every other character of the Unicode range is a name."""
    breaking = {"Cc", "Zl", "Zp"}
    refused, named = [], 0
    for code in range(sys.maxunicode + 1):
        ch = chr(code)
        if 0xD800 <= code <= 0xDFFF or ch in "*?[]/":
            continue  # lone surrogates, globs and the separator: refused for other reasons
        try:
            normalise(f"/gpfs/a{ch}b")
            named += 1
        except PathRefused as exc:
            assert "control character or line break" in str(exc)
            refused.append(ch)
    assert {unicodedata.category(c) for c in refused} == breaking
    assert len(refused) == sum(
        unicodedata.category(chr(c)) in breaking for c in range(sys.maxunicode + 1)
    )
    assert named > 1_000_000
