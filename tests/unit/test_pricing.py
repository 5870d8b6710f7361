"""Prices, each provider adapter's usage as the pipeline costs it, GPU-time charges and token
estimates, checked by hand."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from hybridfast import _core, pricing
from hybridfast._core import PICODOLLARS_PER_USD, Price
from hybridfast.config import ModelConfig, PriceConfig
from hybridfast.deployments import gpu_second_price
from hybridfast.errors import ConfigError
from hybridfast.providers.anthropic_wire import usage_from_anthropic
from hybridfast.providers.ollama import _usage as ollama_usage
from hybridfast.providers.openai import usage_from_openai
from hybridfast.types import Usage


@pytest.fixture(autouse=True)
def _no_litellm_map() -> Iterator[None]:
    pricing.configure(None)
    yield
    pricing.configure(None)


def test_every_shipped_entry_parses_and_has_a_source_date() -> None:
    table = pricing.shipped_table()
    assert {"openai", "anthropic"} <= set(table)
    for kind, models in table.items():
        assert models, kind
        for model, entry in models.items():
            price = pricing.lookup_price(kind, model)
            assert price is not None, (kind, model)
            assert price.input >= 0
            assert price.output >= 0
            assert len(entry["source_date"]) == 10, (kind, model)
            assert pricing.source_date(kind, model) == entry["source_date"]
            # Cache reads are never dearer than plain input.
            assert price.cached_input <= price.input


def test_dated_ids_and_aliases_resolve_to_their_family() -> None:
    sonnet = pricing.lookup_price("anthropic", "claude-sonnet-4-5")
    assert sonnet == Price.per_mtok("3", "15", "0.3", "3.75")
    assert pricing.lookup_price("anthropic", "claude-sonnet-4-5-20250929") == sonnet
    assert pricing.lookup_price("anthropic", "claude-3-5-haiku-latest") == Price.per_mtok(
        "0.8", "4", "0.08", "1"
    )
    assert pricing.lookup_price("openai", "gpt-4o-2024-08-06") == Price.per_mtok(
        "2.5", "10", "1.25"
    )
    assert pricing.lookup_price("openai", "openai/gpt-4.1-mini") == Price.per_mtok(
        "0.4", "1.6", "0.1"
    )
    # Unknown models and local kinds have no table price.
    assert pricing.lookup_price("openai", "gpt-99") is None
    assert pricing.lookup_price("ollama", "llama3.2") is None
    assert pricing.lookup_price("anthropic", "gpt-4o") is None


def _cost(price: Price | None, usage: Usage | None) -> int:
    """The cost the pipeline books: the core's `Price.cost` of the adapter's usage."""
    assert price is not None
    assert usage is not None
    return price.cost(
        usage.input_tokens,
        usage.output_tokens,
        usage.cached_input_tokens,
        usage.cache_write_tokens,
        usage.reasoning_tokens,
    )


def test_openai_usage_with_cached_and_reasoning_tokens() -> None:
    usage = usage_from_openai(
        {
            "prompt_tokens": 2000,
            "completion_tokens": 500,
            "total_tokens": 2500,
            "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 200},
        }
    )
    assert usage == Usage(
        input_tokens=2000, output_tokens=500, cached_input_tokens=1024, reasoning_tokens=200
    )
    price = pricing.lookup_price("openai", "gpt-4o")
    # By hand: 976 × $2.50/M + 1024 × $1.25/M + 500 × $10/M = $0.00872.
    assert _cost(price, usage) == 8_720_000_000
    # Reasoning tokens are already inside completion_tokens: not billed twice.
    without = usage_from_openai(
        {
            "prompt_tokens": 2000,
            "completion_tokens": 500,
            "prompt_tokens_details": {"cached_tokens": 1024},
        }
    )
    assert _cost(price, without) == 8_720_000_000
    # More cached tokens than the prompt: never more than the whole.
    odd = usage_from_openai({"prompt_tokens": 10, "prompt_tokens_details": {"cached_tokens": 50}})
    assert odd == Usage(input_tokens=10, cached_input_tokens=10)


def test_anthropic_usage_adds_cache_reads_and_writes_to_the_prompt() -> None:
    usage = usage_from_anthropic(
        {
            "input_tokens": 300,
            "cache_read_input_tokens": 1200,
            "cache_creation_input_tokens": 500,
            "output_tokens": 400,
        }
    )
    assert usage == Usage(
        input_tokens=2000, output_tokens=400, cached_input_tokens=1200, cache_write_tokens=500
    )
    price = pricing.lookup_price("anthropic", "claude-sonnet-4-5-20250929")
    # By hand: 300 × $3/M + 1200 × $0.30/M + 500 × $3.75/M + 400 × $15/M = $0.009135.
    assert _cost(price, usage) == 9_135_000_000


def test_anthropic_stream_usage_costs_what_the_whole_answer_costs() -> None:
    # A stream reports input and cache counts in message_start and the final output count
    # in message_delta; merged, they are the non-streamed answer's usage.
    start = {
        "input_tokens": 300,
        "cache_read_input_tokens": 1200,
        "cache_creation_input_tokens": 500,
        "output_tokens": 1,
    }
    whole = {**start, "output_tokens": 400}
    price = pricing.lookup_price("anthropic", "claude-sonnet-4-5")
    assert _cost(price, usage_from_anthropic({**start, "output_tokens": 400})) == _cost(
        price, usage_from_anthropic(whole)
    )


def test_ollama_usage_and_missing_usage() -> None:
    assert ollama_usage({"prompt_eval_count": 26, "eval_count": 290}) == Usage(26, 290)
    # No usage reported: None, so the pipeline estimates (and marks the cost estimated).
    assert usage_from_openai(None) is None
    assert usage_from_anthropic({}) is None
    assert ollama_usage({"done": True}) is None


def _litellm_map(path: Path) -> Path:
    data = {
        "sample_spec": {"input_cost_per_token": 0.0, "litellm_provider": "one of ..."},
        "gpt-4o": {
            "input_cost_per_token": 2.5e-06,
            "output_cost_per_token": 1e-05,
            "cache_read_input_token_cost": 1.25e-06,
            "litellm_provider": "openai",
            "mode": "chat",
        },
        "claude-sonnet-4-5-20250929": {
            "input_cost_per_token": 3.3e-06,
            "output_cost_per_token": 1.65e-05,
            "cache_read_input_token_cost": 3.3e-07,
            "cache_creation_input_token_cost": 4.125e-06,
            "litellm_provider": "anthropic",
        },
        "ollama/llama3": {
            "input_cost_per_token": 0.0,
            "output_cost_per_token": 0.0,
            "litellm_provider": "ollama",
        },
        "dall-e-3": {"output_cost_per_image": 0.04, "litellm_provider": "openai"},
    }
    file = path / "model_prices_and_context_window.json"
    file.write_text(json.dumps(data))
    return file


def test_a_litellm_price_map_is_read_exactly_and_wins(tmp_path: Path) -> None:
    prices = pricing.parse_litellm_prices(json.loads(_litellm_map(tmp_path).read_text()))
    # Floats per token → picodollars per token, exactly.
    assert prices[("openai", "gpt-4o")] == Price(2_500_000, 10_000_000, 1_250_000)
    assert prices[("anthropic", "claude-sonnet-4-5-20250929")] == Price(
        3_300_000, 16_500_000, 330_000, 4_125_000
    )
    assert prices[("ollama", "llama3")] == Price(0, 0)
    assert not any(model == "dall-e-3" for _, model in prices)
    assert pricing.configure(str(tmp_path / "model_prices_and_context_window.json")) == 3
    assert pricing.lookup_price("anthropic", "claude-sonnet-4-5-20250929") == Price(
        3_300_000, 16_500_000, 330_000, 4_125_000
    )
    assert pricing.lookup_price("ollama", "llama3") == Price(0, 0)
    # Models the map lacks still come from the shipped table.
    assert pricing.lookup_price("anthropic", "claude-haiku-4-5") == Price.per_mtok(
        "1", "5", "0.1", "1.25"
    )


def test_a_bad_litellm_map_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        pricing.configure(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match=r"bad.json:1"):
        pricing.configure(str(bad))
    bad.write_text(
        json.dumps({"m": {"input_cost_per_token": "lots", "litellm_provider": "openai"}})
    )
    with pytest.raises(ConfigError, match=r"m\.input"):
        pricing.configure(str(bad))
    bad.write_text(json.dumps({"m": {"input_cost_per_token": -1.0, "litellm_provider": "openai"}}))
    with pytest.raises(ConfigError):
        pricing.configure(str(bad))


def test_token_estimates() -> None:
    # OpenAI family: the model's own BPE (o200k_base for gpt-4o): "hello world" is 2 tokens.
    assert pricing.estimate_tokens("openai", "gpt-4o", "hello world") == 2
    assert pricing.estimate_tokens("openai-compatible", "gpt-4o-mini", "hello world") == 2
    # Text that looks like a special token is counted as text, not refused.
    assert pricing.estimate_tokens("openai", "gpt-4.1", "<|endoftext|>") > 1
    # Anthropic: cl100k_base count × 1.1, rounded up.
    assert pricing.estimate_tokens("anthropic", "claude-haiku-4-5", "hello world") == 3
    # Elsewhere: one token per four characters.
    assert pricing.estimate_tokens("ollama", "llama3", "x" * 41) == 11
    assert pricing.estimate_tokens("openai", "gpt-4o", "") == 0


def test_gpu_second_prices_are_charged_exactly_to_the_picodollar() -> None:
    # What production does: the config's price read exactly, then the core's charge.
    model = ModelConfig(
        name="llama", provider="gpu0", model="llama3", price=PriceConfig(per_gpu_second=0.0004)
    )
    per_second = gpu_second_price(model)
    assert per_second == 400_000_000
    # $0.0004 per GPU-second for 2.5 s = $0.001.
    assert _core.gpu_time_cost(per_second, 2.5) == 1_000_000_000
    assert _core.gpu_time_cost(per_second, 0.0) == 0
    # 1/3 s at $1/s: 333,333,333,333.33… picodollars, rounded.
    assert _core.gpu_time_cost(PICODOLLARS_PER_USD, 1 / 3) == 333_333_333_333
    # A float product would be off here (past 2**53 picodollars); the core's is exact.
    assert _core.gpu_time_cost(900 * PICODOLLARS_PER_USD + 1, 1000.0) == 900 * 10**15 + 1000
    with pytest.raises(_core.InvalidArgumentError):
        _core.gpu_time_cost(per_second, -1.0)
    with pytest.raises(_core.InvalidArgumentError):
        _core.gpu_time_cost(per_second, float("nan"))
