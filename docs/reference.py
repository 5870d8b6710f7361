"""Writes the two reference pages that must never drift from the code:

- docs/configuration.md: every config key, from the msgspec structs in
  python/hybridfast/config.py (type, default, and the comment above the field);
- docs/cli.md: every command and flag, from the CLI's own argparse parsers.

    python docs/reference.py          # rewrite both pages
    python docs/reference.py --check  # exit 1 when a page is out of date (the tests run this)
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

import hybridfast.config as config_module
from hybridfast.cli import build_parser
from hybridfast.config import Config

DOCS = Path(__file__).resolve().parent
CONFIG_SOURCE = Path(config_module.__file__)


# What a key means where config.py has no comment above it (a comment there wins).
DESCRIPTIONS = {
    "server.host": "Address to bind; `--host` overrides it.",
    "server.port": "Port to bind; `--port` overrides it.",
    "server.max_body_bytes": "Largest request body accepted; larger ones get 413 "
    "`ERR_REQUEST_TOO_LARGE`.",
    "server.log_level": "Log level of the gateway's own log.",
    "providers[].name": "The name models refer to in `models[].provider`.",
    "providers[].kind": "The upstream's wire protocol; `openai-compatible` (vLLM, llama.cpp, "
    "LM Studio...) needs a `base_url`.",
    "providers[].base_url": "The upstream's URL; for the OpenAI protocols it includes `/v1`, "
    "as the SDK's does.",
    "providers[].api_key": "The upstream's key; write `${OPENAI_API_KEY}` rather than the key.",
    "providers[].max_connections": "Keep-alive connections to this upstream.",
    "providers[].max_retries": "Retries in place (backoff, `Retry-After`), spent on the last "
    "candidate only: before it, falling back is faster.",
    "providers[].headers": "Extra headers sent with every upstream request.",
    "providers[].timeout.connect_s": "Time allowed to open a connection.",
    "providers[].timeout.first_byte_s": "Time allowed for the first byte, and for every gap "
    "between bytes after it.",
    "providers[].timeout.total_s": "Time allowed for the whole answer.",
    "models[].name": "The name clients ask for; several deployments may share it (a group).",
    "models[].provider": "A `providers[].name`, or `local` for the built-in embedding models.",
    "models[].model": "The model's id at the provider.",
    "models[].quality": "A score from 0 to 1 for the `quality` and `balanced` strategies.",
    "models[].context_window": "Tokens of prompt + answer the model takes; longer requests "
    "skip it.",
    "models[].max_output_tokens": "The most tokens it may answer; also the default "
    "`max_tokens` for Anthropic.",
    "models[].tags": "Labels a request's tags can require (see routing).",
    "models[].max_concurrency": "Requests in flight at most; `local-first` overflows to the "
    "cloud beyond it.",
    "models[].tokens_per_s": "Prior generation rate, until live traffic is measured.",
    "models[].price.input_per_mtok": "USD per million input tokens.",
    "models[].price.output_per_mtok": "USD per million output tokens.",
    "models[].price.cached_input_per_mtok": "USD per million cached input tokens.",
    "models[].price.cache_write_per_mtok": "USD per million tokens written to the "
    "provider's prompt cache.",
    "models[].price.per_gpu_second": "USD per second of upstream time (local GPUs), on top of "
    "any token price.",
    "routes.<name>.candidates": "Model groups or other routes the route chooses among.",
    "routes.<name>.strategy": "How candidates are ordered (see routing).",
    "routes.<name>.weights": "One weight per candidate, for `weighted` (an A/B split).",
    "routes.<name>.min_quality": "Drop candidates below this quality.",
    "routes.<name>.max_cost_usd": "Drop candidates whose expected cost for the request is higher.",
    "routes.<name>.balance.cost": "Weight of cost in the `balanced` score.",
    "routes.<name>.balance.latency": "Weight of latency in the `balanced` score.",
    "routes.<name>.balance.quality": "Weight of missing quality in the `balanced` score.",
    "router.ewma_alpha": "Weight of the newest measurement in the latency averages.",
    "router.default_tokens_per_s": "Prior generation rate for deployments without one.",
    "router.circuit.failures_to_open": "Consecutive failures that open a deployment's circuit.",
    "router.circuit.error_rate_to_open": "Error rate in the window that opens it.",
    "router.circuit.window_s": "The error-rate window.",
    "router.circuit.min_requests": "Calls in the window before the error rate counts.",
    "router.circuit.cooldown_s": "How long an open circuit waits before a probe.",
    "router.circuit.successes_to_close": "Good probes that close it again.",
    "ledger.backend": "Where cost records are kept.",
    "ledger.path": "The SQLite file.",
    "ledger.dsn": "PostgreSQL connection string (`postgres` backend or counter).",
    "ledger.redis_url": "Redis for `counter: redis`.",
    "ledger.hold_ttl_s": "How long a crashed instance's budget holds live before they are "
    "given back.",
    "budgets[].scope": "Who the budget limits.",
    "budgets[].limit_usd": "The limit in USD (exact: `0.1` is ten cents).",
    "budgets[].window": "Calendar window (UTC) the limit applies to.",
    "budgets[].name": "The key, user, team or model group limited (not for `global`).",
    "budgets[].soft_fraction": "Share of the limit at which a warning is logged.",
    "cache.backend": "`redis` shares the cache between instances.",
    "cache.redis_url": "Redis for the `redis` backend.",
    "cache.snapshot_interval_s": "Seconds between snapshots.",
    "cache.exact.enabled": "Answer identical requests from the cache.",
    "cache.exact.ttl_s": "How long an exact entry lives.",
    "cache.exact.max_entries": "Entries kept (least recently used go first).",
    "cache.semantic.enabled": "Answer the same question in other words from the cache.",
    "cache.semantic.max_entries": "Entries kept (least recently used go first).",
    "cache.semantic.ttl_s": "How long a semantic entry lives.",
    "cache.semantic.ef_search": "HNSW search breadth: recall against time.",
    "cache.semantic.gpu_min_entries": "Entries a scope needs before lookups go to the GPU.",
    "embeddings.max_wait_ms": "See `embeddings.max_batch`.",
    "embeddings.max_queue": "See `embeddings.max_batch`.",
    "embeddings.max_inputs": "Inputs per request at most.",
    "embeddings.max_input_chars": "Characters (or token ids) per input at most.",
    "embeddings.cache_max_entries": "Entries of the per-text cache.",
    "keys[].key": "The secret the caller sends; write `${VAR}` rather than the key.",
    "keys[].name": "The key's name in the ledger, budgets and logs.",
    "keys[].user": "The user it belongs to.",
    "keys[].team": "The team it belongs to (budgets, cache scope).",
    "keys[].tags": "Tags routing can require; `local-only` keeps its requests local.",
}


@dataclass
class Key:
    path: str  # e.g. "providers[].timeout.connect_s"
    type: str
    default: str
    doc: str


@dataclass
class Section:
    path: str
    doc: str
    keys: list[Key]


def _unwrap(t: Any) -> Any:
    if isinstance(t, msgspec.inspect.UnionType):
        for member in t.types:
            if not isinstance(member, msgspec.inspect.NoneType):
                return _unwrap(member)
    return t


def _nested_struct(t: Any) -> tuple[type | None, str]:
    """The struct a field holds (directly, as list items or as mapping values) and the
    path suffix that leads into it."""
    t = _unwrap(t)
    if isinstance(t, msgspec.inspect.StructType):
        return t.cls, ""
    if isinstance(t, msgspec.inspect.ListType):
        item = _unwrap(t.item_type)
        if isinstance(item, msgspec.inspect.StructType):
            return item.cls, "[]"
    if isinstance(t, msgspec.inspect.DictType):
        value = _unwrap(t.value_type)
        if isinstance(value, msgspec.inspect.StructType):
            return value.cls, ".<name>"
    return None, ""


def _field_sources() -> dict[str, dict[str, tuple[str, str]]]:
    """class name → field name → (annotation as written, the comment lines above it)."""
    source = CONFIG_SOURCE.read_text()
    lines = source.splitlines()
    out: dict[str, dict[str, tuple[str, str]]] = {}
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ClassDef):
            continue
        fields: dict[str, tuple[str, str]] = {}
        for stmt in node.body:
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                comment: list[str] = []
                row = stmt.lineno - 2
                while row >= 0 and lines[row].strip().startswith("#"):
                    comment.insert(0, lines[row].strip().lstrip("#").strip())
                    row -= 1
                fields[stmt.target.id] = (ast.unparse(stmt.annotation), " ".join(comment))
        out[node.name] = fields
    return out


def _literal(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_literal(v)}" for k, v in value.items()) + "}"
    return str(value)


_SCALARS: dict[type, str] = {
    msgspec.inspect.StrType: "string",
    msgspec.inspect.IntType: "integer",
    msgspec.inspect.FloatType: "number",
    msgspec.inspect.BoolType: "boolean",
    msgspec.inspect.AnyType: "any",
}


def _type_text(t: Any) -> str:
    if isinstance(t, msgspec.inspect.UnionType):
        parts = [_type_text(m) for m in t.types if not isinstance(m, msgspec.inspect.NoneType)]
        nullable = any(isinstance(m, msgspec.inspect.NoneType) for m in t.types)
        return " or ".join(parts) + (" or null" if nullable else "")
    if isinstance(t, msgspec.inspect.LiteralType):
        return " \\| ".join(f"`{v}`" for v in t.values)
    if isinstance(t, msgspec.inspect.ListType):
        return f"list of {_type_text(t.item_type)}"
    if isinstance(t, msgspec.inspect.DictType):
        return f"map of {_type_text(t.value_type)}"
    return _SCALARS.get(type(t), type(t).__name__.removesuffix("Type").lower())


def sections() -> list[Section]:
    """Every section of the config, depth first, each with its scalar keys."""
    sources = _field_sources()
    found: list[Section] = []

    def visit(cls: type, path: str) -> None:
        keys: list[Key] = []
        nested: list[tuple[type, str]] = []
        fields = sources.get(cls.__name__, {})
        for field in msgspec.inspect.type_info(cls).fields:  # type: ignore[attr-defined]
            child = f"{path}.{field.name}" if path else field.name
            struct, suffix = _nested_struct(field.type)
            if struct is not None:
                nested.append((struct, child + suffix))
                continue
            if field.required:
                default = "required"
            elif field.default is not msgspec.NODEFAULT:
                default = f"`{_literal(field.default)}`"
            else:
                default = f"`{_literal(field.default_factory())}`"
            doc = fields.get(field.name, ("", ""))[1] or DESCRIPTIONS.get(child, "")
            keys.append(Key(child, _type_text(field.type), default, doc or "—"))
        if keys:
            found.append(Section(path, (cls.__doc__ or "").strip(), keys))
        for struct, child in nested:
            visit(struct, child)

    visit(Config, "")
    return found


def config_paths() -> list[str]:
    return [k.path for s in sections() for k in s.keys]


def configuration_md() -> str:
    out = [
        "# Configuration reference",
        "",
        "Every key of the YAML config, with its type and default. Generated from",
        "`python/hybridfast/config.py` by `python docs/reference.py`; the guide to",
        "how the sections fit together is in [the README](../README.md#configuration).",
        "`[]` marks a list item, `<name>` a key you choose (a route's name).",
        "",
    ]
    for section in sections():
        title = section.path or "top level"
        out += [f"## `{title}`", ""]
        if section.doc:
            out += [" ".join(section.doc.split()), ""]
        out += ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
        for key in section.keys:
            out.append(f"| `{key.path}` | {key.type} | {key.default} | {key.doc} |")
        out.append("")
    return "\n".join(out)


# --- the CLI ---------------------------------------------------------------------------


def _subcommands(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield from action.choices.items()


def commands() -> list[tuple[str, argparse.ArgumentParser]]:
    """(`serve`, parser), (`ledger report`, parser)...: every leaf command."""
    out: list[tuple[str, argparse.ArgumentParser]] = []

    def visit(prefix: str, parser: argparse.ArgumentParser) -> None:
        children = list(_subcommands(parser))
        if prefix and (not children or _options(parser)):
            out.append((prefix, parser))
        for name, child in children:
            visit(f"{prefix} {name}".strip(), child)

    visit("", build_parser())
    return out


def _options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [
        a
        for a in parser._actions
        if not isinstance(a, argparse._HelpAction | argparse._SubParsersAction)
        and a.help != argparse.SUPPRESS
    ]


def cli_flags() -> dict[str, set[str]]:
    """command → its long flags."""
    return {
        name: {s for a in _options(p) for s in a.option_strings if s.startswith("--")}
        for name, p in commands()
    }


def _usage(action: argparse.Action) -> str:
    if not action.option_strings:
        return f"`{action.metavar or action.dest}`"
    flag = ", ".join(f"`{s}`" for s in action.option_strings)
    if action.nargs == 0:
        return flag
    metavar = action.metavar or (
        "{" + ",".join(map(str, action.choices)) + "}" if action.choices else action.dest.upper()
    )
    return f"{flag} `{metavar}`"


def cli_md() -> str:
    out = [
        "# Command line reference",
        "",
        "`python -m hybridfast COMMAND` (or the `hybridfast` script). Generated from the",
        "CLI's own parsers by `python docs/reference.py`; `--help` at any level says the same.",
        "Errors print one line, `error ERR_CODE: message (hint: ...)`, and exit with status 2.",
        "",
    ]
    for name, parser in commands():
        out += [f"## `{name}`", ""]
        description = parser.description or ""
        if description:
            out += [" ".join(description.split()), ""]
        options = _options(parser)
        if options:
            out += ["| argument | meaning |", "| --- | --- |"]
            for action in options:
                text = " ".join((action.help or "").split()).replace("|", "\\|")
                text = text.replace("%(default)s", str(action.default))
                out.append(f"| {_usage(action)} | {text or '—'} |")
            out.append("")
    return "\n".join(out)


PAGES = {"configuration.md": configuration_md, "cli.md": cli_md}


def main() -> int:
    check = "--check" in sys.argv[1:]
    stale = []
    for name, render in PAGES.items():
        path = DOCS / name
        text = render()
        if check:
            if not path.is_file() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print(f"out of date: {', '.join(stale)}; run `python docs/reference.py`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
