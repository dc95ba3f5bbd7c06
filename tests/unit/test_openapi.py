"""The HTTP API against its own OpenAPI schema: schemathesis generates requests from it and
checks every answer (no 5xx, documented status codes, content types and bodies)."""

from __future__ import annotations

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from test_serve import wait_ready
from test_service import CONFIGS, candidate

from shopee_match.apply.service import MatchService
from shopee_match.serve import Limits, create_app


@pytest.fixture(scope="module")
def api_schema(data_root, tmp_path_factory):
    """The schema of an app serving demo-tiny (its own catalog: the checks add listings)."""
    from shopee_match.data.datasets import load_dataset

    postings = load_dataset(str(data_root / "demo-tiny"), "train")[0]
    service = MatchService.load(postings, candidate(CONFIGS["dynamic+min2+union"], "fuzzed"),
                                progress=False)
    app = create_app(lambda: service, gray_log=tmp_path_factory.mktemp("gray") / "g.jsonl",
                     limits=Limits(max_image_bytes=100_000))
    with TestClient(app) as client:  # starts the app (its lifespan loads the service)
        wait_ready(client)
        yield schemathesis.openapi.from_asgi("/openapi.json", app)


OPERATIONS = [("/health", "GET"), ("/metrics", "GET"), ("/match", "POST"), ("/pair", "POST"),
              ("/catalog", "POST")]


@pytest.mark.parametrize("path, method", OPERATIONS)
def test_the_api_answers_as_its_schema_says(api_schema, path, method):
    """Requests generated from each operation's schema (valid and invalid ones): every
    answer passes schemathesis' checks (no 5xx, status code, content type, headers and body
    as documented). Left out: that every schema-valid request is accepted. A listing's title
    must still read as text once cleaned and its photo must decode, which a form schema
    cannot state; such requests get the documented 422 / 415 with a message."""
    from hypothesis import given
    from schemathesis.specs.openapi.checks import positive_data_acceptance

    @given(case=api_schema[path][method].as_strategy())
    @settings(max_examples=30, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    def check(case):
        case.call_and_validate(excluded_checks=[positive_data_acceptance])

    check()


def test_every_operation_is_checked(api_schema):
    assert {(op.ok().path, op.ok().method.upper()) for op in api_schema.get_all_operations()
            } == set(OPERATIONS)
