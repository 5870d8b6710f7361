"""Templates and chains in the pipeline: one `before_route` hook serves `model: "template:..."`
and `model: "chain:..."` on every chat endpoint.

A chain's steps run in order. Every step but the last is a whole request of its own through
the gateway (`Gateway.complete`: routing, budgets, fallbacks, cache, its own ledger line);
its request id is the parent's with `-stepN` appended. The last step *is* the client's
request: it is rewritten to the last template and goes on down the pipeline, streamed if
asked, with the parent id. A chain of two steps therefore writes two ledger lines, `ID-step1`
and `ID`, both with `parent_id` `ID` (the ledger's and the request log's column), so
`hybridfast ledger export --parent-id ID` or `GET /admin/requests?parent_id=ID` finds them.

A step that fails with a client error (a budget, a rate limit: 4xx) ends the chain with that
error; an upstream failure of a step (after its fallbacks) is a 424 `ERR_CHAIN_STEP_FAILED`
naming the step, because a `before_route` hook may refuse a request only with a 4xx.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from hybridfast._core import format_usd
from hybridfast.config import ChainConfig, Config, PromptsConfig
from hybridfast.errors import ConfigError, GatewayError, InvalidRequest, ModelNotFound
from hybridfast.experiments.templates import (
    TEMPLATE_PREFIX,
    Library,
    Template,
    request_variables,
    without_extension,
)
from hybridfast.observability.observer import INNER_REQUESTS
from hybridfast.pipeline.context import RequestContext
from hybridfast.pipeline.gateway import Gateway
from hybridfast.pipeline.hooks import PipelineRequest
from hybridfast.types import ChatRequest

log = logging.getLogger("hybridfast.chains")

CHAIN_PREFIX = "chain:"
STEP_SUFFIX = "-step"
# Where a request's template or chain is noted for other hooks (the request log, tracing).
STATE_KEY = "prompts"


@dataclass(frozen=True)
class Step:
    template: Template
    model: str
    output: str


@dataclass(frozen=True)
class Chain:
    name: str
    steps: tuple[Step, ...]
    variables: frozenset[str]  # what a client may send: every step's, minus step outputs


def build_chain(config: ChainConfig, library: Library, where: str) -> Chain:
    if not config.steps:
        raise ConfigError(f"{where}.steps: a chain needs at least one step")
    steps: list[Step] = []
    outputs: set[str] = set()
    declared: set[str] = set()
    for i, step in enumerate(config.steps):
        try:
            template = library.get(step.template)
        except ModelNotFound as exc:
            raise ConfigError(f"{where}.steps[{i}].template: {exc}", hint=exc.hint) from None
        output = step.output or f"step{i + 1}"
        steps.append(Step(template, step.model or template.config.model, output))
        declared |= set(template.config.variables)
        outputs.add(output)
    return Chain(config.name, tuple(steps), frozenset(declared - outputs))


@dataclass(frozen=True)
class Prompts:
    """The compiled templates and chains of one config."""

    library: Library
    chains: dict[str, Chain]

    @classmethod
    def compile(cls, config: PromptsConfig, library: Library) -> Prompts:
        chains: dict[str, Chain] = {}
        for i, chain in enumerate(config.chains):
            where = f"prompts.chains[{i}]"
            if chain.name in chains:
                raise ConfigError(f"{where}.name: the chain {chain.name!r} is defined twice")
            chains[chain.name] = build_chain(chain, library, where)
        return cls(library, chains)

    def chain(self, name: str) -> Chain:
        found = self.chains.get(name)
        if found is None:
            raise ModelNotFound(
                f"no chain {name!r}",
                hint="known chains: " + (", ".join(sorted(self.chains)) or "none"),
            )
        return found


def render(
    template: Template,
    request: ChatRequest,
    given: Mapping[str, Any],
    *,
    model: str | None = None,
    stream: bool | None = None,
) -> ChatRequest:
    """The request the template makes: its messages, its model, its settings unless the
    request set them, without the gateway's extension field."""
    values = template.variables(given, request.messages)
    config = template.config
    return msgspec.structs.replace(
        request,
        model=model or config.model,
        messages=template.render(values),
        max_tokens=request.max_tokens if request.max_tokens is not None else config.max_tokens,
        temperature=request.temperature if request.temperature is not None else config.temperature,
        stream=request.stream if stream is None else stream,
        extra=without_extension(request.extra),
    )


def wanted(config: Config) -> bool:
    prompts = config.prompts
    return bool(prompts.templates or prompts.dirs or prompts.chains)


def compile_prompts(config: Config) -> Prompts:
    """Every template (inline and from `prompts.dirs`, read now) and chain of `config`, or a
    `ConfigError` naming the first that does not compile."""
    return Prompts.compile(config.prompts, Library.from_config(config))


class PromptsHook:
    """The `before_route` hook over one compiled set, swapped whole by a reload."""

    def __init__(self, gateway: Gateway, prompts: Prompts) -> None:
        self.gateway = gateway
        self.prompts = prompts

    async def __call__(self, ctx: RequestContext, request: PipelineRequest) -> ChatRequest | None:
        if not isinstance(request, ChatRequest):
            return None
        model = request.model
        if model.startswith(TEMPLATE_PREFIX):
            template = self.prompts.library.get(model[len(TEMPLATE_PREFIX) :])
            ctx.state[STATE_KEY] = {"template": template.key}
            ctx.response_headers["x-hybridfast-template"] = template.key
            return render(template, request, request_variables(request.extra))
        if model.startswith(CHAIN_PREFIX):
            chain = self.prompts.chain(model[len(CHAIN_PREFIX) :])
            return await self.run_chain(chain, ctx, request)
        return None

    async def run_chain(
        self, chain: Chain, ctx: RequestContext, request: ChatRequest
    ) -> ChatRequest:
        given = request_variables(request.extra)
        unknown = sorted(set(given) - chain.variables)
        if unknown:
            raise InvalidRequest(
                f"chain {chain.name!r} has no variable {unknown[0]!r}",
                code="ERR_TEMPLATE_VARIABLE",
                hint="its variables: " + (", ".join(sorted(chain.variables)) or "none"),
            )
        values = dict(given)
        step_ids: list[str] = []
        ctx.state[STATE_KEY] = {"chain": chain.name, "steps": step_ids}
        # Every step's ledger line and request-log row, the last one's included, carry the
        # chain's request id as parent_id: one filter finds the whole chain.
        ctx.parent_id = ctx.request_id
        earlier_cost = 0  # picodollars: what the steps before the last one cost
        for index, step in enumerate(chain.steps[:-1], start=1):
            step_request = render(
                step.template, request, _declared(step, values), model=step.model, stream=False
            )
            step_ctx = RequestContext(
                step_request.model,
                caller=ctx.caller,
                endpoint=ctx.endpoint,
                request_id=f"{ctx.request_id}{STEP_SUFFIX}{index}",
            )
            step_ctx.parent_id = ctx.request_id
            ctx.state.setdefault(INNER_REQUESTS, []).append(step_ctx)
            step_ctx.state[STATE_KEY] = {"chain": chain.name, "parent": ctx.request_id}
            step_ids.append(step_ctx.request_id)
            try:
                answer = await self.gateway.complete(step_request, step_ctx)
            except GatewayError as exc:
                raise _step_error(chain, index, exc) from None
            values[step.output] = answer.content
            earlier_cost += step_ctx.cost
        last = chain.steps[-1]
        step_ids.append(ctx.request_id)
        ctx.response_headers["x-hybridfast-chain"] = f"{chain.name}; steps={len(chain.steps)}"
        # x-hybridfast-cost-usd is the last step's (the request the client holds); what the
        # chain cost in all is this plus that, known before the last step starts (so a
        # streamed answer's headers carry it too).
        ctx.response_headers["x-hybridfast-chain-earlier-cost-usd"] = format_usd(earlier_cost)
        return render(last.template, request, _declared(last, values), model=last.model)


def _declared(step: Step, values: Mapping[str, Any]) -> dict[str, Any]:
    declared = step.template.config.variables
    return {k: v for k, v in values.items() if k in declared}


def _step_error(chain: Chain, index: int, exc: GatewayError) -> GatewayError:
    if exc.status < 500:
        return exc
    return GatewayError(
        f"chain {chain.name!r}: step {index} failed: {exc.code}: {exc.message}",
        code="ERR_CHAIN_STEP_FAILED",
        status=424,
        hint="the step's model could not answer; the chain stopped there",
    )


class PromptsFollower:
    """Keeps the hook in line with the config: registered while the config has templates
    (none: no hook, nothing per request), its set recompiled on every reload (SIGHUP,
    `POST /admin/config`) so a template file added or edited in `prompts.dirs` takes effect
    with the reload. A reload whose templates do not compile is refused whole by
    `check`, and the running set stays."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.hook: PromptsHook | None = None

    def check(self, config: Config) -> None:
        if wanted(config):
            compile_prompts(config)

    def apply(self, config: Config) -> None:
        if not wanted(config):
            if self.hook is not None:
                self.gateway.hooks.remove("before_route", self.hook)
                self.hook = None
            return
        prompts = compile_prompts(config)
        if self.hook is None:
            self.hook = PromptsHook(self.gateway, prompts)
            self.gateway.hooks.add("before_route", self.hook, name="prompts", order=-10)
        else:
            self.hook.prompts = prompts
        log.info(
            "prompts: %d templates, %d chains", len(prompts.library.all()), len(prompts.chains)
        )


def install(gateway: Gateway) -> None:
    """Serves `template:` and `chain:` models from the config's templates and chains, and
    follows reloads; a broken template stops the start with a `ConfigError` naming it."""
    follower = PromptsFollower(gateway)
    follower.apply(gateway.config)
    gateway.followers.add("prompts", follower.apply, follower.check)
