"""schemathesis against a real `serve` process: it reads /openapi.json and sends bodies
generated from (and just outside) each operation's schema. The assertion: not one answer
is a 5xx."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from hybridfast.validation import SCHEMAS
from tests.conftest import fake_config
from tests.fakes import BackgroundLoop, FakeUpstream
from tests.fakes.server import start_server

schemathesis = pytest.importorskip("schemathesis")
from schemathesis.checks import not_a_server_error  # noqa: E402

KEY = "schemathesis-key-0123"
schema = schemathesis.pytest.from_fixture("served_schema")


@pytest.fixture(scope="module")
def served_schema() -> Iterator[Any]:
    loop = BackgroundLoop()
    fakes = [FakeUpstream("openai"), FakeUpstream("anthropic")]
    for fake in fakes:
        loop.run(fake.start())
    text = fake_config(*fakes, server=f"  master_key: {KEY}")
    try:
        with start_server(text) as server:
            loaded = schemathesis.openapi.from_url(
                server.url + "/openapi.json", headers={"Authorization": f"Bearer {KEY}"}
            )
            loaded.config.base_url = server.url  # type: ignore[attr-defined]
            yield loaded.include(method="POST")
    finally:
        for fake in fakes:
            loop.run(fake.stop())
        loop.close()


def test_the_document_lists_every_schema(served_schema: Any) -> None:
    served = {op.path for op in served_schema.get_all_operations() if hasattr(op, "path")}
    served |= {
        result.ok().path for result in served_schema.get_all_operations() if hasattr(result, "ok")
    }
    assert set(SCHEMAS) <= served


@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_operation_answers_a_5xx(case: Any) -> None:
    case.call_and_validate(
        headers={"Authorization": f"Bearer {KEY}"},
        checks=[not_a_server_error],
    )
