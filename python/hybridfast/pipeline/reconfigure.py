"""What `Gateway.reconfigure` needs besides building the new parts: keeping the providers
whose settings did not change (and their open connections; plugin providers are rebuilt),
closing the replaced ones only once no call can still be using them, and bringing the
running ledger's budgets in line with the new config's."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Callable, Mapping

from hybridfast.config import Config
from hybridfast.ledger.budgets import from_config as budgets_from_config
from hybridfast.providers import Provider, build_provider
from hybridfast.types import Ledger

log = logging.getLogger("hybridfast.pipeline")

# Added to a retired provider's own `timeout.total_s` (the longest any call on it may run)
# before its connections are closed.
GRACE_S = 5.0


def carry_providers(
    current: Mapping[str, Provider], config: Config
) -> tuple[dict[str, Provider], list[Provider]]:
    """The providers `config` names — the running one where its settings are unchanged (its
    connections stay open), a new one otherwise — and the running ones no longer used."""
    providers: dict[str, Provider] = {}
    for settings in config.providers:
        running = current.get(settings.name)
        # A plugin provider is built again on every reload: its entry point is resolved
        # anew, so a package installed (or fixed) since takes effect without a restart.
        same = running is not None and running.config == settings and settings.kind != "plugin"
        providers[settings.name] = running if same and running else build_provider(settings)
    kept = {id(p) for p in providers.values()}
    return providers, [p for p in current.values() if id(p) not in kept]


class Retirement:
    """Closes replaced providers after the longest call they could still be serving; closes
    them at once when the gateway closes."""

    def __init__(self) -> None:
        self._waiting: dict[asyncio.Task[None], list[Provider]] = {}

    def retire(self, providers: list[Provider]) -> None:
        if not providers:
            return
        grace = max(p.config.timeout.total_s for p in providers) + GRACE_S

        async def close_later() -> None:
            await asyncio.sleep(grace)
            await _close_all(providers)

        task = asyncio.ensure_future(close_later())
        self._waiting[task] = providers
        task.add_done_callback(lambda t: self._waiting.pop(t, None))

    async def close(self) -> None:
        waiting, self._waiting = self._waiting, {}
        for task, providers in waiting.items():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await _close_all(providers)


async def _close_all(providers: list[Provider]) -> None:
    for provider in providers:
        try:
            await provider.close()
        except Exception:  # one provider's broken session must not keep the others open
            log.exception("closing a replaced provider failed")


class Followers:
    """Features that follow the config without owning a part of the pipeline (templates and
    chains, the learned router's model files). Each `check(config)` may refuse a new config
    with a `ConfigError` before anything changes; each `apply(config)` runs once the new config
    is in place. Nothing of this runs per request."""

    def __init__(self) -> None:
        self._items: list[tuple[str, Callable[[Config], None], Callable[[Config], None]]] = []

    def add(
        self,
        name: str,
        apply: Callable[[Config], None],
        check: Callable[[Config], None] = lambda _config: None,
    ) -> None:
        self._items.append((name, check, apply))

    def check(self, config: Config) -> None:
        for _, check, _ in self._items:
            check(config)

    def apply(self, config: Config) -> None:
        for name, _, apply in self._items:
            try:
                apply(config)
            except Exception:  # checked already: a failure here is a bug, not a bad config
                log.exception("%s did not follow the new config", name)


async def close_router(router: object) -> None:
    """Closes a router that has a `close` (it stops reporting its metrics)."""
    close = getattr(router, "close", None)
    if close is not None:
        result = close()
        if inspect.isawaitable(result):
            await result


async def apply_budgets(ledger: Ledger, old: Config, new: Config) -> None:
    """Budgets added or changed in the config are set on the running ledger, budgets the
    config dropped are removed; budgets set through the admin API are left alone."""
    set_budget = getattr(ledger, "set_budget", None)
    remove_budget = getattr(ledger, "remove_budget", None)
    if set_budget is None or remove_budget is None:
        return  # a ledger without budgets (a test's, or `backend: memory` stand-ins)
    before = {b.ident: b for b in budgets_from_config(old.budgets)}
    after = {b.ident: b for b in budgets_from_config(new.budgets)}
    for ident, budget in after.items():
        if before.get(ident) != budget:
            await set_budget(budget)
    for ident in before.keys() - after.keys():
        await remove_budget(*ident)
