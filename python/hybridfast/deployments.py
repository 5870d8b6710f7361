"""Deployments as the pipeline sees them, built once from the config."""

from __future__ import annotations

from collections import Counter

from hybridfast._core import Price, parse_usd
from hybridfast.config import LOCAL_PROVIDER, Config, ModelConfig, PriceConfig
from hybridfast.pricing import lookup_price
from hybridfast.types import Deployment

_LOCAL_KINDS = {"ollama"}


def _usd(value: float) -> str:
    # repr() gives the shortest decimal that reads back as the same float, so "0.075" stays
    # "0.075" and the core parses it exactly.
    return repr(float(value))


def price_from_config(price: PriceConfig) -> Price:
    return Price.per_mtok(
        _usd(price.input_per_mtok),
        _usd(price.output_per_mtok),
        None if price.cached_input_per_mtok is None else _usd(price.cached_input_per_mtok),
        None if price.cache_write_per_mtok is None else _usd(price.cache_write_per_mtok),
    )


def gpu_second_price(model: ModelConfig) -> int:
    """Picodollars per GPU-second from `price.per_gpu_second` (0: not priced by time)."""
    if model.price is None or model.price.per_gpu_second is None:
        return 0
    return parse_usd(_usd(model.price.per_gpu_second))


def resolve_price(model: ModelConfig, kind: str) -> Price:
    """The config's price, else the shipped price table's, else free (local models)."""
    if model.price is not None:
        return price_from_config(model.price)
    return lookup_price(kind, model.model) or Price()


def build_deployments(config: Config) -> list[Deployment]:
    seen: Counter[str] = Counter()
    deployments = []
    for m in config.models:
        provider = config.provider(m.provider)
        kind = provider.kind if provider else LOCAL_PROVIDER
        local = (
            provider.local
            if provider and provider.local is not None
            else kind in _LOCAL_KINDS or provider is None
        )
        deployments.append(
            Deployment(
                id=f"{m.name}#{seen[m.name]}",
                name=m.name,
                provider=m.provider,
                kind=kind,
                model=m.model,
                local=local,
                quality=m.quality,
                price=resolve_price(m, kind),
                context_window=m.context_window,
                max_output_tokens=m.max_output_tokens,
                capabilities=frozenset(m.capabilities),
                tags=frozenset(m.tags),
                max_concurrency=m.max_concurrency,
                ttft_ms=m.ttft_ms,
                tokens_per_s=m.tokens_per_s,
                dimensions=m.dimensions,
                gpu_second=gpu_second_price(m),
            )
        )
        seen[m.name] += 1
    return deployments
