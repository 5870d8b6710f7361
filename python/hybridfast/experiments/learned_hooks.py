"""The learned router's hooks, following the config: one `before_route` hook embeds the last
user message of requests to routes served by the learned router (the probability its router
reads) or listed in `router_training.routes` (kept for training), once for both, on a worker
thread; one `after_answer` hook keeps the embedding of answered requests to the listed routes
(`experiments/training.py`). With neither in the config no hook is registered.

A reload (SIGHUP, `POST /admin/config`) re-reads the routes' model files, so a model trained
meanwhile (`hybridfast experiments train-router -o` over the running file) is used from the
next request; a model file that cannot be read refuses the reload and the running one stays.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from hybridfast.config import Config
from hybridfast.embeddings.local import load_embedder
from hybridfast.experiments.learned import (
    EMBEDDER,
    PENDING,
    ROUTER_NAME,
    ROUTER_SPECS,
    LearnedModel,
    Vector,
)
from hybridfast.experiments.templates import last_user_text
from hybridfast.experiments.training import SampleStore, open_samples, sample_row
from hybridfast.pipeline.context import RequestContext
from hybridfast.pipeline.gateway import Gateway
from hybridfast.pipeline.hooks import PipelineAnswer, PipelineRequest
from hybridfast.types import ChatRequest

log = logging.getLogger("hybridfast.learned")

SAMPLE_KEY = "router_training"  # ctx.state: (route, embedder, vector) to keep once answered
_CACHED = ("hit", "semantic-hit")


def load_models(config: Config) -> dict[str, LearnedModel]:
    """The model of every route served by the learned router (`ConfigError` if unreadable)."""
    return {
        name: LearnedModel.load(str(route.options["model"]))
        for name, route in config.routes.items()
        if route.router in ROUTER_SPECS and "model" in route.options
    }


def _embed(embedder: str, text: str) -> Vector:
    vector: Vector = load_embedder(embedder).embed([text])[0]
    return vector


class LearnedHooks:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.models: dict[str, LearnedModel] = {}
        self.collect: frozenset[str] = frozenset()
        self.retention_days = 90.0
        self._samples: SampleStore | None = None
        self._registered = False

    def check(self, config: Config) -> None:
        load_models(config)

    def apply(self, config: Config) -> None:
        self.models = load_models(config)
        training = config.router_training
        self.collect = frozenset(training.routes)
        self.retention_days = training.retention_days
        wanted = bool(self.models or self.collect)
        if wanted and not self._registered:
            self.gateway.hooks.add("before_route", self.embed, name="learned-router", order=50)
            self.gateway.hooks.add("after_answer", self.keep, name="router-training")
        elif self._registered and not wanted:
            self.gateway.hooks.remove("before_route", self.embed)
            self.gateway.hooks.remove("after_answer", self.keep)
        self._registered = wanted

    async def embed(self, ctx: RequestContext, request: PipelineRequest) -> None:
        if not isinstance(request, ChatRequest):
            return
        route = request.model
        model = self.models.get(route)
        collect = route in self.collect
        text = last_user_text(request.messages) if model is not None or collect else None
        if text is None:
            return
        embedder = model.embedder if model is not None else EMBEDDER
        vector = await asyncio.to_thread(_embed, embedder, text)
        if model is not None:
            p = model.probability_of(vector)
            PENDING.put(ctx.request_id, p)
            ctx.state[ROUTER_NAME] = p
        if collect:
            ctx.state[SAMPLE_KEY] = (route, embedder, vector)

    async def keep(
        self, ctx: RequestContext, _request: PipelineRequest, _answer: PipelineAnswer | None
    ) -> None:
        sample = ctx.state.get(SAMPLE_KEY)
        # A cached answer was not made by the deployment for this prompt: nothing to learn.
        if sample is None or ctx.status != 200 or ctx.cache in _CACHED:
            return
        route, embedder, vector = sample
        dep = ctx.deployment
        row = sample_row(
            ctx.request_id,
            route,
            dep.id if dep is not None else None,
            dep.name if dep is not None else None,
            embedder,
            vector,
        )
        await asyncio.to_thread(self._add, row)

    def _add(self, row: tuple[Any, ...]) -> None:
        if self._samples is None:
            # Opened on first use (a worker thread), not at start: a ledger path that cannot
            # be opened is the ledger's error to report.
            self._samples = open_samples(self.gateway.config)
            cutoff = int((time.time() - self.retention_days * 86_400) * 1000)
            removed = self._samples.delete_before(cutoff)
            if removed:
                log.info("router training: %d embeddings past retention deleted", removed)
        self._samples.add(row)


def install(gateway: Gateway) -> None:
    hooks = LearnedHooks(gateway)
    hooks.apply(gateway.config)
    gateway.followers.add("learned-router", hooks.apply, hooks.check)
