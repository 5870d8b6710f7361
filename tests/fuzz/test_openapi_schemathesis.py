"""schemathesis against a real `serve` process: it reads /openapi.json and sends bodies
generated from (and just outside) each operation's schema. The assertion: not one answer
is a 5xx."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from hybridfast.validation import SCHEMAS
from tests.conftest import fake_config
from tests.fakes import BackgroundLoop, FakeUpstream
from tests.fakes.server import start_server

schemathesis = pytest.importorskip("schemathesis")

KEY = "schemathesis-key-0123"
pytestmark = pytest.mark.slow


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
    served = {result.ok().path for result in served_schema.get_all_operations()}
    assert set(SCHEMAS) <= served


def test_no_operation_answers_a_5xx(served_schema: Any) -> None:
    # Driven by hand (one Hypothesis run per operation) rather than through schemathesis'
    # pytest plugin, which does not support this pytest's collection.
    operations = [result.ok() for result in served_schema.get_all_operations()]
    assert operations
    for operation in operations:

        @settings(
            max_examples=int(os.environ.get("HYBRIDFAST_FUZZ_EXAMPLES", "60")),
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def call(case: Any) -> None:
            response = case.call(headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
            assert response.status_code < 500, (
                f"{response.status_code} on {case.path}: {case.body!r}: {response.text[:300]}"
            )

        call()
