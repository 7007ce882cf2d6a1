"""Who may stage what: API keys and WLCG tokens (a real issuer on loopback,
real signatures), the site's policy file, rights by path (policy.py,
tokens.py, the WLCG API)."""

import json
import logging

import pytest

from ltfsee_globus.api.context import services
from ltfsee_globus.auth import x509_identity
from ltfsee_globus.config import ConfigError
from ltfsee_globus.paths import under
from ltfsee_globus.policy import (
    Identity,
    Issuer,
    PolicyError,
    fqan_matches,
    open_policy,
    scope_path,
    token_rights,
)
from ltfsee_globus.tokens import REFETCH_GAP, Keys, TokenRefused, verify
from support.issuer import AUDIENCE

API = "/api/v1"


@pytest.mark.parametrize(
    ("path", "root", "inside"),
    [
        ("/data", "/data", True),
        ("/data/x", "/data", True),
        ("/data2", "/data", False),
        ("/data2/x", "/data", False),
        ("/x", "/", True),
        ("/data/x", "/data/", True),
    ],
)
def test_a_root_covers_itself_and_below_by_whole_components(path, root, inside):
    assert (under(path, [root]) is not None) is inside


@pytest.mark.parametrize(
    ("raw", "base", "expected"),
    [
        ("/atlas", "/gpfs/wlcg", "/gpfs/wlcg/atlas"),
        ("/", "/gpfs/wlcg", "/gpfs/wlcg"),
        ("/a//b/", "/gpfs", "/gpfs/a/b"),
        ("", "/gpfs", None),  # a scope must name a path
        ("atlas", "/gpfs", None),
        ("/a/../..", "/gpfs", None),  # never out of the base
        ("/..", "/gpfs", None),
    ],
)
def test_a_scope_path_is_under_the_issuers_base_path(raw, base, expected):
    assert scope_path(raw, base) == expected


@pytest.mark.parametrize(
    ("scopes", "operation", "path", "allowed"),
    [
        (["storage.stage:/p"], "stage", "/base/p/x", True),
        (["storage.stage:/p"], "stage", "/base/px", False),
        (["storage.stage:/p"], "poll", "/base/p/x", True),
        (["storage.stage:/p"], "release", "/base/p/x", True),
        (["storage.read:/p"], "stage", "/base/p/x", False),
        (["storage.read:/p"], "archiveinfo", "/base/p/x", True),
        (["storage.stage"], "stage", "/base/p", False),  # no path: no right
        (["storage.stage:/../etc"], "stage", "/etc/x", False),
        (["openid", "storage.create:/p"], "stage", "/base/p/x", False),
    ],
)
def test_token_scopes_give_rights_by_path(scopes, operation, path, allowed):
    assert token_rights(scopes, "/base").allows(operation, path) is allowed


GOOD = """
[[allow]]
key = "fts"
roots = ["/gpfs/a"]
operations = ["stage", "poll"]

[issuers."https://issuer.example"]
base_path = "/gpfs/wlcg"
audiences = ["https://tape.example.org"]
"""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[allow]\n", "Expected"),  # not TOML
        (GOOD.replace('"fts"', '"nobody"'), "key must name a key of AUTH_KEY"),
        (GOOD.replace('"poll"', '"steal"'), "operations must be a list of"),
        (GOOD.replace('"/gpfs/a"', '"gpfs/a"'), "roots must be a list of absolute paths"),
        (GOOD.replace('"/gpfs/a"', '"/gpfs/../etc"'), "roots must be a list of absolute paths"),
        (GOOD.replace("https://issuer", "http://issuer"), "an issuer is an https:// URL"),
        (GOOD.replace('"/gpfs/wlcg"', '"wlcg"'), "base_path must be an absolute path"),
        (GOOD.replace('["https://tape.example.org"]', "[]"), "audiences must be a non-empty"),
        (GOOD + "\n[extra]\n", "unknown section(s): extra"),
    ],
)
def test_a_policy_file_it_cannot_follow_is_refused_naming_the_problem(tmp_path, text, message):
    path = tmp_path / "policy.toml"
    path.write_text(text)
    with pytest.raises(PolicyError, match=message.replace("(", r"\(").replace(")", r"\)")):
        open_policy(path, ["fts"], ["/gpfs"])


def test_a_good_policy_file_gives_keys_their_roots(tmp_path):
    path = tmp_path / "policy.toml"
    path.write_text(GOOD)
    policy = open_policy(path, ["fts", "other"], ["/gpfs"])
    fts = policy.rights(Identity("key", "fts"))
    assert fts.allows("stage", "/gpfs/a/x") and not fts.allows("stage", "/gpfs/b")
    assert not fts.may("cancel")
    assert not policy.rights(Identity("key", "other")).may("stage")  # not named: nothing
    assert policy.issuers["https://issuer.example"].base_path == "/gpfs/wlcg"


def test_the_service_will_not_start_on_a_bad_policy_file(make_app, tmp_path):
    path = tmp_path / "policy.toml"
    path.write_text(GOOD.replace("https://", "http://"))
    with pytest.raises(ConfigError, match=r"POLICY_FILE: .*an issuer is an https:// URL"):
        make_app(POLICY_FILE=str(path))


# -- the WLCG API with tokens and a policy ---------------------------------------------
@pytest.fixture
def wlcg(issuer, make_app, sim, tmp_path):
    """(test client, services, dirs): the sim's first two directories; the
    issuer's base path is the managed root; key `fts` may stage under dir 0,
    key `ops` may only poll. (The issuer first: it stops after the app's key
    fetcher, which may still be asking it when a test ends.)"""
    first, second = sorted({str(p).rsplit("/", 1)[0] for p in sim.files("M")})[:2]
    policy = tmp_path / "policy.toml"
    policy.write_text(
        f"""
[[allow]]
key = "fts"
roots = ["{first}"]
operations = ["stage", "poll", "cancel", "release", "archiveinfo"]

[[allow]]
key = "ops"
roots = ["{sim.fs}"]
operations = ["poll"]

[issuers."{issuer.url}"]
base_path = "{sim.fs}"
audiences = ["{AUDIENCE}"]
"""
    )
    app = make_app(
        AUTH_KEY="fts:fts-key-0123456789,ops:ops-key-0123456789",
        POLICY_FILE=str(policy),
        PREFETCH=False,
    )
    return app.test_client(), services(app), (first, second)


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def stage(client, headers, paths):
    body = {"files": [{"path": p} for p in paths]}
    return client.post(f"{API}/stage", json=body, headers=headers)


def states(client, headers, rid):
    body = client.get(f"{API}/stage/{rid}", headers=headers).get_json()
    return {f["path"]: (f["state"], f.get("error", "")) for f in body["files"]}


def rel(path, sim):
    return path[len(str(sim.fs)) :]


def in_dir(sim, d):
    return [p for p in sim.files("M") if p.startswith(d + "/")]


def test_a_token_stages_what_its_scope_covers_and_fails_the_rest(wlcg, sim, issuer):
    client, svc, (first, second) = wlcg
    mine, other = in_dir(sim, first)[0], in_dir(sim, second)[0]
    token = issuer.token(f"storage.stage:{rel(first, sim)}", sub="alice")
    resp = stage(client, bearer(token), [mine, other])
    assert resp.status_code == 201, resp.get_json()
    got = states(client, bearer(token), resp.get_json()["requestId"])
    assert got[mine][0] == "SUBMITTED"
    assert got[other][0] == "FAILED" and "may not stage" in got[other][1]
    assert svc.store.requests.get(resp.get_json()["requestId"])[0].owner == (f"alice@{issuer.url}")


def test_an_es256_token_is_accepted_too(wlcg, sim, issuer):
    client, _, (first, _) = wlcg
    token = issuer.token("storage.stage:/", key="ec")
    assert stage(client, bearer(token), in_dir(sim, first)[:1]).status_code == 201


@pytest.mark.parametrize(
    ("case", "make", "status", "reason"),
    [
        ("expired", lambda i: i.token(expires_in=-120), 401, "expired"),
        ("wrong aud", lambda i: i.token(aud="https://elsewhere.example"), 401, "audience"),
        ("unlisted issuer", lambda i: i.token(iss="https://other.example"), 401, "issuer"),
        ("signed by another key", lambda i: i.token(key="stranger"), 401, "signature"),
        ("no sub", lambda i: i.token(sub=None), 401, "claims"),
        ("'..' in its scope", lambda i: i.token("storage.stage:/../x"), 403, "forbidden"),
        ("a scope with no path", lambda i: i.token("storage.stage"), 403, "forbidden"),
        ("read scope on stage", lambda i: i.token("storage.read:/"), 403, "forbidden"),
    ],
)
def test_refused_tokens_get_the_right_answer_and_a_log_line_without_the_token(
    wlcg, sim, issuer, caplog, case, make, status, reason
):
    client, svc, (first, _) = wlcg
    token = make(issuer)
    caplog.set_level(logging.WARNING)
    resp = stage(client, bearer(token), in_dir(sim, first)[:1])
    assert resp.status_code == status, (case, resp.get_json())
    assert resp.content_type == "application/problem+json"
    assert token not in caplog.text and token.split(".")[2] not in caplog.text
    assert "refused" in caplog.text
    metrics = svc.metrics.registry.get_sample_value(
        "ltfsee_auth_refusals_total", {"reason": reason}
    )
    assert metrics == 1.0


def test_a_scope_for_another_path_fails_each_file_not_the_request(wlcg, sim, issuer):
    client, _, (first, second) = wlcg
    token = issuer.token(f"storage.stage:{rel(second, sim)}")
    resp = stage(client, bearer(token), in_dir(sim, first)[:2])
    assert resp.status_code == 201
    got = states(client, bearer(token), resp.get_json()["requestId"])
    assert {s for s, _ in got.values()} == {"FAILED"}


def test_a_token_for_data_does_not_reach_data2(wlcg, sim, issuer):
    """`storage.stage:/d` covers /d/x, not /d2/x (path components, not prefixes)."""
    client, _, (first, _) = wlcg
    twin = first + "2"
    token = issuer.token(f"storage.stage:{rel(first, sim)}")
    resp = stage(client, bearer(token), [twin + "/f.dat"])
    rid = resp.get_json()["requestId"]
    [(state, error)] = states(client, bearer(token), rid).values()
    assert state == "FAILED" and "may not stage" in error


def test_requests_are_visible_only_to_who_made_them(wlcg, sim, issuer):
    client, _, (first, _) = wlcg
    alice = bearer(issuer.token("storage.stage:/", sub="alice"))
    bob = bearer(issuer.token("storage.stage:/", sub="bob"))
    fts = {"X-API-KEY": "fts-key-0123456789"}
    rid = stage(client, alice, in_dir(sim, first)[:1]).get_json()["requestId"]
    assert client.get(f"{API}/stage/{rid}", headers=alice).status_code == 200
    assert client.get(f"{API}/stage/{rid}", headers=bob).status_code == 404
    assert client.get(f"{API}/stage/{rid}", headers=fts).status_code == 404
    assert client.delete(f"{API}/stage/{rid}", headers=bob).status_code == 404


def test_keys_have_the_rights_the_policy_gives_them(wlcg, sim):
    client, _, (first, second) = wlcg
    fts = {"X-API-KEY": "fts-key-0123456789"}
    ops = {"X-API-KEY": "ops-key-0123456789"}
    resp = stage(client, fts, [in_dir(sim, first)[0], in_dir(sim, second)[0]])
    got = states(client, fts, resp.get_json()["requestId"])
    assert sorted(s for s, _ in got.values()) == ["FAILED", "SUBMITTED"]
    refused = stage(client, ops, in_dir(sim, first)[:1])
    assert refused.status_code == 403 and "ops may not stage" in refused.get_json()["detail"]
    assert client.post(f"{API}/stage", json={}, headers={}).status_code == 401
    info = client.post(
        f"{API}/archiveinfo", json={"paths": [in_dir(sim, second)[0]]}, headers=fts
    ).get_json()
    assert "may not ask archiveinfo" in info[0]["error"]


def test_tokens_still_verify_when_the_issuer_is_down_after_its_keys_were_fetched(wlcg, sim, issuer):
    client, _, (first, _) = wlcg
    assert stage(client, bearer(issuer.token()), in_dir(sim, first)[:1]).status_code == 201
    issuer.stop()
    assert stage(client, bearer(issuer.token()), in_dir(sim, first)[1:2]).status_code == 201


def test_without_a_policy_file_a_token_is_only_a_wrong_key(make_app, sim, issuer):
    client = make_app(PREFETCH=False).test_client()
    resp = stage(client, bearer(issuer.token()), sim.files("M")[:1])
    assert resp.status_code == 401
    assert resp.get_json()["detail"] == "the API key is not valid"
    assert json.loads(resp.data)["status"] == 401


def test_operators_see_who_made_each_stage_request(wlcg, sim, issuer, run_cli):
    """/api/status, the status page and `status` name each request's identity."""
    client, _, (first, _) = wlcg
    token = issuer.token("storage.stage:/", sub="carol")
    rid = stage(client, bearer(token), in_dir(sim, first)[:2]).get_json()["requestId"]
    fts = {"X-API-KEY": "fts-key-0123456789"}
    stage(client, fts, in_dir(sim, first)[2:3])
    report = client.get("/api/status", headers=fts).get_json()
    owners = {q["id"]: q["owner"] for q in report["stage_requests"]}
    assert owners[rid] == f"carol@{issuer.url}" and "fts" in owners.values()
    assert f"carol@{issuer.url}" in client.get("/", headers=fts).get_data(as_text=True)
    out = run_cli("status").stdout
    assert "stage requests (WLCG):" in out and f"carol@{issuer.url}" in out


@pytest.mark.parametrize(
    ("wanted", "held", "matches"),
    [
        ("/dteam/Role=production", "/dteam/Role=production", True),
        ("/dteam", "/dteam/Role=production", True),  # a group: any role in it
        ("/dteam", "/dteam", True),
        ("/dteam/Role=production", "/dteam/Role=student", False),
        ("/dteam", "/dteam2/Role=production", False),
        ("/dteam/Role=production", "/dteam", False),
    ],
)
def test_a_policy_fqan_names_a_role_or_a_whole_group(wanted, held, matches):
    assert fqan_matches(wanted, held) is matches


def test_the_front_ends_credential_lines_give_the_users_dn_and_fqans():
    lines = [
        "X509USER 1796615088 1796787888 1 /DC=test/CN=Alice Tester",
        "GSIPROXY 1796614789 1796622289 1 /DC=test/CN=Alice Tester/CN=383601820",
        "VOMS 1796615089 1796622289 0 /testvo/Role=production",
        "VOMS 1796615089 1796622289 0 /testvo",
        "garbage",
    ]
    who = x509_identity(lines)
    assert who == Identity(
        "x509", "/DC=test/CN=Alice Tester", fqans=("/testvo/Role=production", "/testvo")
    )
    assert x509_identity(lines[1:]) is None  # no user certificate: no identity


def test_dn_and_fqan_entries_of_the_policy(tmp_path):
    path = tmp_path / "policy.toml"
    path.write_text(
        '[[allow]]\ndn = "/DC=test/CN=Alice"\nroots = ["/gpfs/a"]\noperations = ["stage"]\n'
        '[[allow]]\nfqan = "/dteam"\nroots = ["/gpfs/d"]\noperations = ["stage", "poll"]\n'
    )
    policy = open_policy(path, [], ["/gpfs"])
    alice = policy.rights(Identity("x509", "/DC=test/CN=Alice", fqans=("/dteam/Role=x",)))
    assert alice.allows("stage", "/gpfs/a/f") and alice.allows("poll", "/gpfs/d/f")
    bob = policy.rights(Identity("x509", "/DC=test/CN=Bob"))
    assert not bob.may("stage")
    path.write_text('[[allow]]\ndn = "x"\nkey = "y"\nroots = ["/a"]\noperations = ["stage"]\n')
    with pytest.raises(PolicyError, match="name exactly one of key, dn or fqan"):
        open_policy(path, ["y"], ["/gpfs"])


def test_an_unknown_key_id_asks_the_issuer_again_at_most_every_few_minutes(issuer, clock):
    """The issuer's keys are fetched once; a token with a key id we do not
    know asks again, but not within REFETCH_GAP of the last fetch."""
    issuers = {issuer.url: Issuer(issuer.url, "/gpfs", (AUDIENCE,))}
    keys = Keys(issuers, clock=clock)
    keys.start()
    try:
        assert verify(issuer.token(), issuers, keys).subject == "alice"
        fetched = issuer.requests
        assert fetched == 2  # the discovery document, then the key set
        issuer.kids["rsa"] = "rotated"  # a new key id the service has not seen
        rotated = issuer.token()
        with pytest.raises(TokenRefused) as refused:
            verify(rotated, issuers, keys)
        assert refused.value.reason == "key_id" and issuer.requests == fetched  # too soon
        clock.advance(REFETCH_GAP)
        assert verify(rotated, issuers, keys).subject == "alice"  # asked again, found
        assert issuer.requests == fetched + 2
    finally:
        keys.stop()
