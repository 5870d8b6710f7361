"""Prices and token counts.

- `lookup_price(kind, model)`: the price of a model on a provider of that kind, from a LiteLLM
  price map loaded with `configure(config)` (config `ledger.prices_file`), else from the
  table shipped in `hybridfast/data/prices.json` (each entry with the date it was read).
  Dated model ids (`claude-sonnet-4-5-20250929`, `gpt-4o-2024-08-06`) and `-latest` aliases
  resolve to their family's entry. Local kinds (ollama, local) have no table price: they
  cost zero unless the deployment's config sets one.
- `estimate_tokens(kind, model, text)`: a token count when an upstream reported none.

A request's cost is `Price.cost(...)` in the core, and a local GPU priced per GPU-second is
charged with the core's `gpu_time_cost`; each provider adapter normalises its own usage.

All money is exact: table prices are decimal strings parsed by the core; LiteLLM's
per-token floats are converted through their shortest decimal form and rounded to the
picodollar per token (LiteLLM's own prices never need finer).
"""

from __future__ import annotations

import json
import logging
import math
import re
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from hybridfast._core import PICODOLLARS_PER_USD, Price
from hybridfast.errors import ConfigError

log = logging.getLogger("hybridfast.pricing")

_PRICED_KINDS = ("openai", "anthropic")
# `-20250929`, `-2024-08-06`, `-latest`: a dated snapshot or alias of a model family.
_SUFFIX = re.compile(r"-(\d{8}|\d{4}-\d{2}-\d{2}|latest)$")

# Loaded by `configure`: (kind, model) -> Price, from a LiteLLM map. Wins over the table.
_overrides: dict[tuple[str, str], Price] = {}


@cache
def shipped_table() -> dict[str, dict[str, dict[str, str]]]:
    """The shipped table: kind -> model -> {input, output, cached_input?, cache_write?,
    source_date} (dollars per million tokens as decimal strings)."""
    text = resources.files("hybridfast").joinpath("data/prices.json").read_text("utf-8")
    raw = json.loads(text)
    return {
        kind: {m: e for m, e in models.items() if not m.startswith("_")}
        for kind, models in raw.items()
        if not kind.startswith("_")
    }


@cache
def _shipped_price(kind: str, model: str) -> Price | None:
    entry = shipped_table().get(kind, {}).get(model)
    if entry is None:
        return None
    return Price.per_mtok(
        entry["input"], entry["output"], entry.get("cached_input"), entry.get("cache_write")
    )


def _candidates(model: str) -> list[str]:
    names = [model]
    if "/" in model:  # `openai/gpt-4o` as some clients and LiteLLM spell it
        names.append(model.split("/", 1)[1])
    for name in list(names):
        stripped = _SUFFIX.sub("", name)
        if stripped != name:
            names.append(stripped)
    return names


def lookup_price(kind: str, model: str) -> Price | None:
    """The price of `model` on a provider of this kind, if the table knows it."""
    if kind not in _PRICED_KINDS and not _overrides:
        return None
    for name in _candidates(model):
        price = _overrides.get((kind, name))
        if price is not None:
            return price
    if kind not in _PRICED_KINDS:
        return None
    for name in _candidates(model):
        price = _shipped_price(kind, name)
        if price is not None:
            return price
    return None


def source_date(kind: str, model: str) -> str | None:
    """The day the shipped price of this model was read from its source."""
    for name in _candidates(model):
        entry = shipped_table().get(kind, {}).get(name)
        if entry is not None:
            return entry.get("source_date")
    return None


# --- LiteLLM's model_prices_and_context_window.json -------------------------------------

# LiteLLM's `litellm_provider` values for the kinds of provider the gateway speaks.
_LITELLM_PROVIDERS = {
    "openai": "openai",
    "text-completion-openai": "openai",
    "anthropic": "anthropic",
    "ollama": "ollama",
    "ollama_chat": "ollama",
}


def _per_token_picos(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(f"{where}: a price must be a number, got {value!r}")
    try:
        amount = Decimal(repr(value) if isinstance(value, float) else str(value))
    except InvalidOperation:
        raise ConfigError(f"{where}: a price must be a number, got {value!r}") from None
    if not amount.is_finite() or amount < 0:
        raise ConfigError(f"{where}: a price must be a finite number ≥ 0, got {value!r}")
    return int((amount * PICODOLLARS_PER_USD).to_integral_value(rounding=ROUND_HALF_EVEN))


def parse_litellm_prices(data: Any, source: str = "<litellm>") -> dict[tuple[str, str], Price]:
    """Reads a LiteLLM price map into `(kind, model) -> Price`. Entries without token
    prices (images, audio, `sample_spec`) are skipped; bad numbers are config errors."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a LiteLLM price map is a JSON object of models")
    prices: dict[tuple[str, str], Price] = {}
    for name, entry in data.items():
        if name == "sample_spec" or not isinstance(entry, dict):
            continue
        if "input_cost_per_token" not in entry and "output_cost_per_token" not in entry:
            continue
        where = f"{source}: {name}"
        provider = str(entry.get("litellm_provider", ""))
        kind = _LITELLM_PROVIDERS.get(provider, provider)
        inp = _per_token_picos(entry.get("input_cost_per_token", 0), f"{where}.input")
        out = _per_token_picos(entry.get("output_cost_per_token", 0), f"{where}.output")
        cached = entry.get("cache_read_input_token_cost")
        write = entry.get("cache_creation_input_token_cost")
        price = Price(
            inp,
            out,
            None if cached is None else _per_token_picos(cached, f"{where}.cache_read"),
            None if write is None else _per_token_picos(write, f"{where}.cache_creation"),
        )
        model = name.split("/", 1)[1] if name.startswith(f"{provider}/") else name
        prices[(kind, model)] = price
    return prices


def load_litellm_prices(path: str | Path) -> dict[tuple[str, str], Price]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"ledger.prices_file: cannot read {path} ({exc.strerror})",
            hint="point ledger.prices_file at a local copy of LiteLLM's price map",
        ) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{path}:{exc.lineno}: not valid JSON ({exc.msg})",
            hint="ledger.prices_file must be LiteLLM's model_prices_and_context_window.json",
        ) from None
    return parse_litellm_prices(data, str(path))


def configure(prices_file: str | None) -> int:
    """Loads (or, with None, forgets) a LiteLLM price map that `lookup_price` then prefers
    over the shipped table; returns the number of prices loaded. Call before building
    deployments (`config.ledger.prices_file`)."""
    _overrides.clear()
    if prices_file:
        _overrides.update(load_litellm_prices(prices_file))
        log.info("pricing: %d prices from %s", len(_overrides), prices_file)
    return len(_overrides)


# --- token estimates -------------------------------------------------------------------

# Anthropic's tokenizer is not public; its models read English at about 10% more tokens
# than OpenAI's cl100k_base does. Used only when an upstream reports no usage.
_ANTHROPIC_FACTOR = 1.1


@cache
def _encoding(name: str) -> Any:
    """A tiktoken-compatible encoder with its vocabulary inside the package (bpe-openai:
    no download at first use, which tiktoken needs), or None when it is not installed."""
    try:
        import bpe_openai  # type: ignore[import-untyped]
    except ImportError:
        return None
    return bpe_openai.get_encoding(name)


def _openai_encoding_name(model: str) -> str:
    base = model.rsplit("/", 1)[-1]
    if base.startswith(("gpt-3.5", "gpt-4-", "text-embedding")) or base == "gpt-4":
        return "cl100k_base"
    return "o200k_base"  # gpt-4o, gpt-4.1, gpt-5, o-series


def estimate_tokens(kind: str, model: str, text: str) -> int:
    """A token count for `text` when the upstream reported none (a cut stream, a provider
    without usage). The pipeline marks costs computed from it as estimated.

    OpenAI-family models (kind openai/openai-compatible with an OpenAI model name): exact,
    with the model's own BPE encoding (o200k_base or cl100k_base). Anthropic: cl100k_base ×
    1.1. Everything else (Llama, Qwen, ... on Ollama): one token per four characters. When
    the encoder is not installed, the four-characters rule everywhere."""
    if not text:
        return 0
    heuristic = max(1, (len(text) + 3) // 4)
    if kind == "anthropic":
        enc = _encoding("cl100k_base")
        factor = _ANTHROPIC_FACTOR
    elif kind == "openai" or (kind == "openai-compatible" and _looks_openai(model)):
        enc = _encoding(_openai_encoding_name(model))
        factor = 1.0
    else:
        return heuristic
    if enc is None:
        return heuristic
    try:
        # Text that merely contains `<|endoftext|>` is counted as the plain text it is.
        tokens = len(enc.encode(text, disallowed_special=()))
    except Exception:  # an encoder bug must not fail a request that already happened
        log.debug("pricing: encoder failed, estimating by length", exc_info=True)
        return heuristic
    return max(1, math.ceil(tokens * factor))


def _looks_openai(model: str) -> bool:
    base = model.rsplit("/", 1)[-1]
    return base.startswith(("gpt-", "o1", "o3", "o4", "text-embedding", "chatgpt"))
