"""schemathesis against the OpenAPI document: no request gets a 500."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from mailbot.config import Settings
from mailbot.web.app import create_app
from tests.integration.test_web import Site, build_site

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import schemathesis
    from schemathesis import checks


@pytest.fixture(scope="module")
def api_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp: Path = tmp_path_factory.mktemp("api")
    data = Settings.model_validate(
        {"data_dir": str(tmp / "var"), "database_url": f"sqlite:///{tmp / 'api.db'}"}
    )
    yield from build_site(data)


@pytest.fixture(scope="module")
def api_schema(api_site: Site):  # type: ignore[no-untyped-def]
    app = create_app(api_site.settings, api_site.read_db, api_site.key)
    return schemathesis.openapi.from_asgi("/api/openapi.json", app)


def test_no_server_errors(api_schema, api_site: Site) -> None:  # type: ignore[no-untyped-def]
    """Every operation, ~40 generated requests each, with a valid token: never a 5xx."""
    auth = {"Authorization": f"Bearer {api_site.token}"}
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 5
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
        def check(case) -> None:  # type: ignore[no-untyped-def]
            case.headers = {**(case.headers or {}), **auth}
            case.call_and_validate(checks=[checks.not_a_server_error])

        check()


def test_the_schema_lists_the_api(api_schema) -> None:  # type: ignore[no-untyped-def]
    raw = api_schema.raw_schema
    assert {"/api/tickets", "/api/tickets/{number}", "/api/kpis", "/metrics", "/healthz"} <= set(
        raw["paths"]
    )
