"""An example hybridfast plugin package: one callback, one router (here), one provider
(`provider.py`, `reverse`) and one cache backend (`store.py`, `dict`).

- `JsonlLog` (`hybridfast.callbacks`, name `jsonl-log`): appends each answer's event (request
  id, route, deployment, status, tokens, cost in picodollars...) as one JSON line to `path`.
  With `fail_on` set to a route name it raises for that route's answers, to show that a
  failing plugin is isolated (the client still gets its answer).
- `CheapestFirst` (`hybridfast.routers`, name `cheapest-first`): orders a route's candidates
  by the request's expected cost, cheapest first (`strategy: custom`, `router: cheapest-first`).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Sequence
from typing import Any

__all__ = ["CheapestFirst", "JsonlLog"]


class JsonlLog:
    def __init__(self, path: str = "hybridfast-answers.jsonl", fail_on: str | None = None) -> None:
        self.path = path
        self.fail_on = fail_on
        self._lock = threading.Lock()

    async def on_answer(self, event: dict[str, Any]) -> None:
        if self.fail_on is not None and event["route"] == self.fail_on:
            raise RuntimeError(f"jsonl-log: told to fail on route {self.fail_on!r}")
        line = json.dumps(event, sort_keys=True) + "\n"
        # Off the event loop: callbacks run on the gateway's loop, where blocking I/O stalls
        # every request in flight.
        await asyncio.to_thread(self._append, line)

    def _append(self, line: str) -> None:
        with self._lock, open(self.path, "a", encoding="utf-8") as f:
            f.write(line)


class CheapestFirst:
    def __init__(self, **_options: Any) -> None:
        pass

    def order(self, route: str, candidates: Sequence[Any], features: Any, caller: Any) -> list[Any]:
        return sorted(candidates, key=lambda c: c.expected_cost)
