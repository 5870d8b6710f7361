"""Plugin entry points, at the bottom of the package: the config checks plugin names against
what is installed, the provider and cache layers load the plugins the config selects, and
`hybridfast plugins list` reports them (experiments/plugins.py). Nothing here runs per
request: plugins are looked up when a config is loaded or reloaded.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import Any

from hybridfast import metrics

PROVIDERS = "hybridfast.providers"
CACHE_BACKENDS = "hybridfast.cache_backends"

PLUGIN_ERRORS = metrics.Counter(
    "hybridfast_plugin_errors",
    "Plugins that failed to load or raised (isolated), by group and plugin.",
    ["group", "plugin"],
)


class PluginError(Exception):
    """A plugin that is not installed, does not import, or cannot be built; the message
    says which and why, and is safe to show (it names the entry point, never a secret)."""


def installed(group: str) -> dict[str, EntryPoint]:
    """The group's installed entry points by name (the first installed wins a name)."""
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=group):
        found.setdefault(ep.name, ep)
    return found


def names(group: str) -> list[str]:
    return sorted(installed(group))


def load(group: str, name: str) -> Any:
    """The object the entry point `name` of `group` names; `PluginError` if it is not
    installed or does not import."""
    ep = installed(group).get(name)
    if ep is None:
        raise PluginError(
            f"no plugin {name!r} in the entry-point group {group!r} "
            f"(installed: {', '.join(names(group)) or 'none'})"
        )
    try:
        return ep.load()
    except Exception as exc:  # a broken package: the caller isolates it
        raise PluginError(f"cannot import {ep.value}: {type(exc).__name__}: {exc}") from None
