"""Fine-tuning data from what the gateway recorded.

`export`: OpenAI fine-tuning JSONL (`{"messages": [...]}` per line) from the conversations
the Responses API stored (`store: true`, the default there), kept when their feedback passes
a filter. A stored response is judged by feedback whose `episode_id` is the response's id
(`resp_...`); with `metric`, only conversations whose mean value of that metric is at least
`min_value` are written. Nothing is recorded for this purpose by default: chat completions
are never stored, only what a Responses client asked the gateway to keep.

Each example is checked against the fine-tuning format before it is written: roles system,
user, assistant or tool; text content (a list of text parts is joined); assistant tool calls
kept; the last message an assistant's. Examples that cannot be expressed (images, audio) are
skipped and counted, never written half.

`candidates`: from the ledger, the routes where an expensive deployment answers many requests
that a cheaper deployment of the same route could learn to answer: requests, spend, what the
same tokens would cost on the cheapest one, and the feedback mean of each, when there is any.
The ledger has no prompt text, so "similar requests" means "requests of the same route".
"""

from __future__ import annotations

import sqlite3
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from hybridfast.config import Config
from hybridfast.deployments import build_deployments
from hybridfast.errors import ConfigError
from hybridfast.experiments.feedback import PostgresStore, SqliteStore
from hybridfast.experiments.feedback import Store as FeedbackStore
from hybridfast.types import Deployment

ROLES = frozenset({"system", "user", "assistant", "tool"})


class NotExportable(ValueError):
    """A conversation the fine-tuning format cannot hold."""


def _text(content: Any) -> str | None:
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            if kind not in ("text", "input_text"):
                raise NotExportable(f"a {kind!r} content part")
            texts.append(str(part.get("text", "")))
        return "".join(texts)
    raise NotExportable(f"content of type {type(content).__name__}")


def training_example(conversation: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """`{"messages": [...]}` in OpenAI's fine-tuning format, or `NotExportable`."""
    messages: list[dict[str, Any]] = []
    for message in conversation:
        role = message.get("role")
        if role == "developer":
            role = "system"
        if role not in ROLES:
            raise NotExportable(f"a message with role {role!r}")
        out: dict[str, Any] = {"role": role, "content": _text(message.get("content"))}
        if role == "assistant" and message.get("tool_calls"):
            out["tool_calls"] = message["tool_calls"]
        if role == "tool":
            out["tool_call_id"] = message.get("tool_call_id")
        if out["content"] is None and "tool_calls" not in out:
            raise NotExportable(f"a {role} message without content")
        messages.append(out)
    if not messages or messages[-1]["role"] != "assistant":
        raise NotExportable("the conversation does not end with an answer")
    return {"messages": messages}


def stored_conversations(config: Config) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """(response id, conversation) of every unexpired stored response, oldest first."""
    ledger = config.ledger
    query = (
        "SELECT id, response, conversation FROM responses WHERE expires_at > {} ORDER BY created_at"
    )
    now = time.time()
    if ledger.backend == "postgres" and ledger.dsn:
        import psycopg

        with psycopg.connect(ledger.dsn) as db, db.cursor() as cur:
            cur.execute(f'SET search_path TO "{ledger.schema}"')
            cur.execute(query.format("%s"), (now,))
            rows = cur.fetchall()
    elif ledger.backend == "sqlite":
        stored = ledger.sibling("responses")  # the stored responses' file, beside the ledger
        if not Path(stored).is_file():
            raise ConfigError(f"ledger.path: no stored responses at {stored}")
        lite = sqlite3.connect(f"file:{stored}?mode=ro", uri=True)
        try:
            rows = lite.execute(query.format("?"), (now,)).fetchall()
        except sqlite3.OperationalError:  # serve never stored a response: no table yet
            rows = []
        finally:
            lite.close()
    else:
        raise ConfigError(
            "ledger.backend is memory: stored responses live only while serve runs",
            hint="use the sqlite or postgres ledger to export recorded conversations",
        )
    for response_id, response, conversation in rows:
        messages = orjson.loads(bytes(conversation))
        # `instructions` are not part of a stored conversation (a continuation does not
        # inherit them, as in OpenAI's API), but the answer was made with them.
        instructions = orjson.loads(bytes(response)).get("instructions")
        if isinstance(instructions, str) and instructions:
            messages = [{"role": "system", "content": instructions}, *messages]
        yield str(response_id), messages


def feedback_store(config: Config) -> FeedbackStore:
    ledger = config.ledger
    if ledger.backend == "postgres" and ledger.dsn:
        return PostgresStore(ledger.dsn, ledger.schema)
    return SqliteStore(ledger.sibling("feedback") if ledger.backend == "sqlite" else None)


def feedback_means(rows: Iterable[dict[str, Any]], metric: str, by: str) -> dict[str, float]:
    """The mean value of `metric` per `by` (episode_id, request_id or deployment)."""
    sums: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for row in rows:
        if row["metric"] == metric and row.get(by):
            sums[row[by]][0] += float(row["value"])
            sums[row[by]][1] += 1
    return {k: total / n for k, (total, n) in sums.items()}


@dataclass
class ExportResult:
    written: int = 0
    filtered_out: int = 0  # no feedback of the metric, or below the minimum
    not_exportable: int = 0


def export(
    config: Config,
    out: Any,
    metric: str | None = None,
    min_value: float = 1.0,
) -> ExportResult:
    """Writes the JSONL to the text stream `out`."""
    means: dict[str, float] = {}
    if metric is not None:
        store = feedback_store(config)
        try:
            means = feedback_means(store.rows(), metric, "episode_id")
        finally:
            store.close()
    result = ExportResult()
    for response_id, conversation in stored_conversations(config):
        if metric is not None and means.get(response_id, float("-inf")) < min_value:
            result.filtered_out += 1
            continue
        try:
            example = training_example(conversation)
        except NotExportable:
            result.not_exportable += 1
            continue
        out.write(orjson.dumps(example).decode() + "\n")
        result.written += 1
    return result


@dataclass
class Candidate:
    route: str
    expensive: str  # deployment id
    requests: int
    cost_picos: int
    cheaper: str  # deployment id
    cheaper_cost_picos: int  # the same tokens at the cheaper deployment's prices
    expensive_feedback: float | None
    cheaper_feedback: float | None

    @property
    def saving_picos(self) -> int:
        return self.cost_picos - self.cheaper_cost_picos


def _route_members(config: Config, route: str, deployments: list[Deployment]) -> list[Deployment]:
    spec = config.routes.get(route)
    names = set(spec.candidates) if spec is not None else {route}
    return [d for d in deployments if d.name in names or d.id in names]


def candidates(
    config: Config,
    entries: Iterable[dict[str, Any]],
    feedback: Iterable[dict[str, Any]] = (),
    metric: str = "thumbs_up",
    min_requests: int = 100,
) -> list[Candidate]:
    """Routes whose answers came mostly from a deployment dearer than another of the route,
    with at least `min_requests` of them; the largest saving first."""
    deployments = build_deployments(config)
    by_id = {d.id: d for d in deployments}
    # (route, deployment) -> [requests, cost, input tokens, output tokens]
    totals: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for e in entries:
        if e["status"] != 200 or e["cache"] not in ("miss", "bypass") or not e["deployment"]:
            continue
        t = totals[(e["route"], e["deployment"])]
        t[0] += 1
        t[1] += int(e["cost"])
        t[2] += int(e["input_tokens"])
        t[3] += int(e["output_tokens"])
    liked = feedback_means(feedback, metric, "deployment")
    found = []
    for (route, dep_id), (n, cost, tokens_in, tokens_out) in totals.items():
        dep = by_id.get(dep_id)
        if dep is None or n < min_requests:
            continue
        cheaper = [
            d
            for d in _route_members(config, route, deployments)
            if d.id != dep_id and "embeddings" not in d.capabilities
        ]
        if not cheaper:
            continue
        best = min(cheaper, key=lambda d: int(d.price.cost(tokens_in, tokens_out)))
        cheap_cost = int(best.price.cost(tokens_in, tokens_out))
        if cheap_cost >= cost:
            continue
        found.append(
            Candidate(
                route, dep_id, n, cost, best.id, cheap_cost, liked.get(dep_id), liked.get(best.id)
            )
        )
    return sorted(found, key=lambda c: c.saving_picos, reverse=True)
