"""schemathesis against ``/openapi.json`` with an admin key: every operation, valid and invalid inputs.

For each generated request: no 5xx, the status is one the document lists for the operation, the body
matches the documented schema, and every error is RFC 9457 problem+json. Bounded for CI by the number of
examples per operation (``FUZZ_EXAMPLES``, raise it locally with ``BUILDSTATE_FUZZ_EXAMPLES=500``).
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import Case
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from tests.security.conftest import Live
from tests.support import call

from buildstate.web.app import ROUTES  # importing the app registers every route in ROUTES
from buildstate.web.openapi import build_openapi
from buildstate.web.routes import access as access_routes

pytestmark = pytest.mark.slow

FUZZ_EXAMPLES = int(os.environ.get("BUILDSTATE_FUZZ_EXAMPLES", "25"))
PROBLEM_FIELDS = {"type", "title", "status", "detail"}
CREDENTIAL_HEADERS = {"x-api-key", "authorization"}


# The document the service serves, built as create_app builds it (a test below checks they are equal), so
# the cases are known when pytest collects them. The event stream never ends by itself; it has tests of
# its own (tests/webhooks/test_stream.py).
DOCUMENT = access_routes.document(build_openapi(ROUTES, security=access_routes.SECURITY_SCHEMES))
schema = schemathesis.openapi.from_dict(DOCUMENT).exclude(path="/events/stream")


def test_the_fuzzed_document_is_the_one_the_service_serves(live_service: Live) -> None:
    assert call(f"{live_service.url}/openapi.json").body == DOCUMENT


def errors_are_problem_json(response: Any, case: Case) -> None:
    if response.status_code < 400 or case.path == "/ready":  # /ready's 503 is its own Ready body
        return
    headers = {name.lower(): value for name, value in response.headers.items()}
    content_type = headers.get("content-type", [""])
    content_type = content_type[0] if isinstance(content_type, list) else content_type
    assert content_type.startswith("application/problem+json"), (response.status_code, content_type)
    body = response.json()
    assert body.keys() >= PROBLEM_FIELDS, body
    assert body["status"] == response.status_code, body


@schema.parametrize()
@settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,  # the same cases on every run: a CI failure reproduces locally
)
def test_every_operation_answers_as_documented(case: Case, live_service: Live) -> None:
    # The admin key on every case: schemathesis would otherwise fill X-API-Key from the security scheme
    # with generated strings, and nearly every case would stop at 401 before reaching a handler.
    generated = {k: v for k, v in (case.headers or {}).items() if k.lower() not in CREDENTIAL_HEADERS}
    case.headers = {**generated, **live_service.headers}
    response = case.call(base_url=live_service.url, timeout=30)
    case.validate_response(
        response,
        checks=[not_a_server_error, status_code_conformance, content_type_conformance,
                response_schema_conformance],
    )  # fmt: skip
    errors_are_problem_json(response, case)
