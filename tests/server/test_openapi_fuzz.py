"""schemathesis over the server's own OpenAPI spec: whatever it sends, the server answers
with a documented status and never a 5xx."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import positive_data_acceptance

from tests.server.conftest import ServerFactory

EXAMPLES = 20


def test_every_route_keeps_its_contract(serve: ServerFactory) -> None:
    # The pytest plugin's collection does not work with this pytest, so each operation's
    # strategy is run by hand.
    with serve(max_items=16, max_text_chars=2000) as url:
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 15
        for operation in operations:

            @given(case=operation.as_strategy())
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def check(case: schemathesis.Case) -> None:
                # A schema-valid string that is not an image is rightly a 422: the
                # "positive data is accepted" check cannot know that.
                case.call_and_validate(excluded_checks=[positive_data_acceptance])

            try:
                check()
            except Exception as exc:
                pytest.fail(f"{operation.method.upper()} {operation.path}: {exc}")
