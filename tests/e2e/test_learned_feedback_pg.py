"""The learned router's training data in the ledger's PostgreSQL database: a real serve with a
PostgreSQL ledger keeps the prompt embeddings of `router_training.routes` in the ledger's
schema, feedback lands beside them, and `hybridfast experiments train-router --from-feedback`
reads both back and trains. Reading never creates: a schema serve never wrote to, or a server
that cannot be reached, is a clear error that leaves the database as it was."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from hybridfast.cli import main
from hybridfast.config import parse_config
from hybridfast.errors import ConfigError
from hybridfast.experiments.learned import LearnedModel
from hybridfast.experiments.training import PostgresSamples, open_for_training, sample_row
from tests.fakes.server import RunningServer
from tests.fakes.upstream import FakeUpstream, cheap_and_strong
from tests.unit.test_learned import labelled

pytestmark = [pytest.mark.postgres]

PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
MASTER = "sk-hybridfast-learned-pg-master"


def _schema_exists(schema: str) -> bool:
    import psycopg

    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        found = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))
        return found.fetchone() is not None


@contextlib.contextmanager
def _schema_name() -> Iterator[str]:
    """A fresh schema name (not created), dropped afterwards if anything created it."""
    psycopg = pytest.importorskip("psycopg")
    try:
        psycopg.connect(PG_DSN, connect_timeout=5).close()
    except psycopg.OperationalError:
        pytest.skip("no PostgreSQL at 127.0.0.1:5432")
    schema = f"learned_{uuid.uuid4().hex[:10]}"
    try:
        yield schema
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _ledger_config(schema: str, dsn: str = PG_DSN) -> str:
    return f'ledger: {{backend: postgres, dsn: "{dsn}", schema: {schema}}}\n'


def test_samples_round_trip_in_postgres() -> None:
    with _schema_name() as schema:
        samples = PostgresSamples(PG_DSN, schema)
        try:
            vector = np.linspace(-1, 1, 384, dtype=np.float32)
            samples.add(sample_row("r1", "smart", "cheap#0", "cheap", "minilm", vector))
            samples.add(sample_row("r2", "smart", None, None, "minilm", vector[::-1].copy()))
            rows = list(samples.rows())
            assert [r["request_id"] for r in rows] == ["r1", "r2"]
            assert (rows[0]["deployment"], rows[0]["model_group"]) == ("cheap#0", "cheap")
            assert rows[1]["deployment"] is None
            kept = np.frombuffer(bytes(rows[0]["vector"]), dtype=np.float32)
            assert np.array_equal(kept, vector)  # BYTEA keeps the float32 bytes exactly
            assert samples.delete_before(rows[1]["ts_ms"] + 1) == 2
            assert list(samples.rows()) == []
        finally:
            samples.close()


def test_training_reads_postgres_and_never_creates() -> None:
    with _schema_name() as schema:
        config = parse_config(_ledger_config(schema), "t.yaml", {}).config
        with pytest.raises(ConfigError, match=r"no kept prompt embeddings: no router_samples"):
            open_for_training(config)
        assert not _schema_exists(schema)
        # Embeddings kept but no feedback yet: the feedback table is named.
        PostgresSamples(PG_DSN, schema).close()
        with pytest.raises(ConfigError, match=r"no feedback: no feedback table"):
            open_for_training(config)


def test_unreachable_postgres_is_a_config_error() -> None:
    dsn = "postgresql://postgres@127.0.0.1:9/test?connect_timeout=2"
    config = parse_config(_ledger_config("public", dsn), "t.yaml", {}).config
    with pytest.raises(ConfigError, match=r"ledger\.dsn: cannot connect to PostgreSQL"):
        open_for_training(config)


def _config(cheap: FakeUpstream, strong: FakeUpstream, schema: str) -> str:
    return f"""
server: {{master_key: {MASTER}}}
{cheap_and_strong(cheap, strong)}
routes:
  smart: {{strategy: cost, candidates: [cheap, strong]}}
router_training: {{routes: [smart]}}
{_ledger_config(schema)}"""


@pytest.mark.slow
def test_train_from_feedback_kept_in_postgres(
    fake_openai: FakeUpstream,
    fake_anthropic: FakeUpstream,
    serve_gateway: Callable[..., RunningServer],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    rows = labelled()
    rows = rows[:15] + rows[-15:]  # easy and hard prompts
    with _schema_name() as schema:
        server = serve_gateway(_config(fake_openai, fake_anthropic, schema))
        with httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {MASTER}"}, timeout=30
        ) as client:
            for row in rows:
                resp = client.post(
                    "/v1/chat/completions",
                    json={
                        "model": "smart",
                        "messages": [{"role": "user", "content": row["prompt"]}],
                    },
                )
                assert resp.status_code == 200, resp.text
                judged = client.post(
                    "/v1/feedback",
                    json={
                        "request_id": resp.headers["x-hybridfast-request-id"],
                        "metric": "good",
                        "value": bool(row["cheap_ok"]),
                    },
                )
                assert judged.status_code == 201, judged.text
        model_path = tmp_path / "router.npz"
        argv = ["experiments", "train-router", "--from-feedback", "--config"]
        argv += [str(server.config_path), "--metric", "good", "--cheap", "cheap"]
        assert main([*argv, "-o", str(model_path)]) == 0, capsys.readouterr().err
        err = capsys.readouterr().err
        assert "30 judged request(s) with a kept embedding: 30 answered by the cheap model" in err
        assert "(15 good, 15 not)" in err
        model = LearnedModel.load(model_path)
        assert model.probability("What is the capital of Italy?") > model.threshold
