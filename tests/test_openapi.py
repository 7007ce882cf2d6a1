"""The OpenAPI document kept honest: schemathesis against the running app.

Schemathesis's own pytest plugin does not run under pytest 9, so each operation's
strategy is driven with hypothesis directly; the checks are schemathesis's, less
one: a path can match the document's pattern and still be refused (`..`, a glob,
outside the managed roots), which JSON Schema cannot say.
"""

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import positive_data_acceptance

KEY = "test-key-0123456789"


def test_document_is_served_and_covers_every_route(app):
    doc = app.test_client().get("/api/openapi.json").get_json()
    routes = {
        str(r.rule).replace("<request_id>", "{id}")
        for r in app.url_map.iter_rules()
        if r.endpoint != "static"
    }
    assert routes == set(doc["paths"])


def conforms(operation, excluded) -> None:
    """Run schemathesis's checks, less `excluded`, on examples of one operation."""

    @settings(
        max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(case=operation.as_strategy())
    def run(case):
        case.call_and_validate(headers={"X-API-KEY": KEY}, excluded_checks=excluded)

    run()


def test_api_conforms_to_its_document(app):
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", app)
    checked = []
    for result in schema.get_all_operations():
        operation = result.ok()
        excluded = [positive_data_acceptance]
        if operation.label == "GET /readyz":  # 503 by design here: the test app runs no stager
            excluded.append(not_a_server_error)
        conforms(operation, excluded)
        checked.append(operation.label)
    doc = app.test_client().get("/api/openapi.json").get_json()
    expected = {f"{m.upper()} {p}" for p, ops in doc["paths"].items() for m in ops}
    # schemathesis leaves out the URL it loaded the document from
    assert set(checked) == expected - {"GET /api/openapi.json"}
