"""Provider adapters, one per wire protocol: `openai` and `openai-compatible`
(`OpenAIProvider`), `anthropic`, `ollama`, and `plugin` (`PluginProvider`: one an installed
package builds, providers/plugin.py). `build_providers(config)` makes one per configured
provider; each owns one keep-alive `ClientSession`, opened on first use."""

from __future__ import annotations

from hybridfast.config import Config, ProviderConfig
from hybridfast.providers.anthropic import AnthropicProvider
from hybridfast.providers.base import Provider, ProviderError, StreamEvent
from hybridfast.providers.ollama import OllamaProvider
from hybridfast.providers.openai import OpenAIProvider
from hybridfast.providers.plugin import PluginProvider

__all__ = [
    "AnthropicProvider",
    "OllamaProvider",
    "OpenAIProvider",
    "PluginProvider",
    "Provider",
    "ProviderError",
    "StreamEvent",
    "build_provider",
    "build_providers",
]


def build_provider(config: ProviderConfig) -> Provider:
    if config.kind == "anthropic":
        return AnthropicProvider(config)
    if config.kind == "ollama":
        return OllamaProvider(config)
    if config.kind == "plugin":
        return PluginProvider(config)
    return OpenAIProvider(config)


def build_providers(config: Config) -> dict[str, Provider]:
    return {p.name: build_provider(p) for p in config.providers}
