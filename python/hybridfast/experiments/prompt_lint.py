"""`hybridfast prompts lint`: concrete suggestions about a config's templates and what one
rendering costs on each model that could answer it.

Findings, each with a suggestion: no system prompt; a declared variable the text never uses;
a variable the text uses but does not declare (a 400 at every request... or a render error);
a template whose model no deployment serves. The cost is the rendered prompt (variables
filled with their defaults or a placeholder) counted with the gateway's own token estimator,
priced at each candidate deployment's input price, plus `max_tokens` (or 256) of output.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hybridfast._core import format_usd
from hybridfast.config import Config
from hybridfast.deployments import build_deployments
from hybridfast.experiments.templates import Library, Template
from hybridfast.pricing import estimate_tokens
from hybridfast.types import Deployment

# The output a template's cost assumes when it sets no max_tokens.
ASSUMED_OUTPUT_TOKENS = 256
_PLACEHOLDERS: dict[str, Any] = {
    "string": "lorem ipsum dolor sit amet",
    "integer": 3,
    "number": 1.5,
    "boolean": True,
    "list": ["a", "b"],
    "object": {"key": "value"},
}


@dataclass
class Finding:
    level: str  # "warning" or "error"
    message: str
    suggestion: str


@dataclass
class Cost:
    deployment: str
    model: str
    input_tokens: int
    output_tokens: int
    cost_picos: int

    @property
    def cost_usd(self) -> str:
        return format_usd(self.cost_picos)


@dataclass
class Report:
    template: str
    model: str
    findings: list[Finding] = field(default_factory=list)
    costs: list[Cost] = field(default_factory=list)


def candidates(model: str, deployments: list[Deployment], config: Config) -> list[Deployment]:
    """The deployments a request for `model` may reach: the group's, or the route's."""
    route = config.routes.get(model)
    names = {model, *(route.candidates if route is not None else ())}
    chat = [d for d in deployments if "embeddings" not in d.capabilities]
    return [d for d in chat if d.name in names]


def lint_template(template: Template, config: Config, deployments: list[Deployment]) -> Report:
    cfg = template.config
    report = Report(template.key, cfg.model)
    found = report.findings
    if not (cfg.system and cfg.system.strip()):
        found.append(
            Finding(
                "warning",
                "no system prompt",
                "add `system:` saying who the model is and what form the answer takes; "
                "answers vary more across models without one",
            )
        )
    for name in sorted(set(cfg.variables) - template.referenced - {"input"}):
        found.append(
            Finding(
                "warning",
                f"variable {name!r} is declared but the text never uses it",
                f"use {{{{ {name} }}}} in the prompt or remove it from `variables`",
            )
        )
    for name in sorted(template.referenced - set(cfg.variables)):
        found.append(
            Finding(
                "error",
                f"the text uses {name!r}, which is not declared",
                f"add `{name}: string` (or its type) under `variables`",
            )
        )
    reachable = candidates(cfg.model, deployments, config)
    if not reachable:
        found.append(
            Finding(
                "error",
                f"no deployment serves the model {cfg.model!r}",
                "set `model:` to a model group or route of this config",
            )
        )
    report.costs = _costs(template, reachable)
    return report


def _costs(template: Template, reachable: list[Deployment]) -> list[Cost]:
    cfg = template.config
    values = {n: cfg.defaults.get(n, _PLACEHOLDERS[k]) for n, k in cfg.variables.items()}
    try:
        text = "\n".join(str(m["content"]) for m in template.render(values))
    except Exception:  # undeclared names: reported above; no rendering to price
        return []
    out = cfg.max_tokens or ASSUMED_OUTPUT_TOKENS
    costs = []
    for dep in reachable:
        tokens = estimate_tokens(dep.kind, dep.model, text)
        costs.append(Cost(dep.id, dep.model, tokens, out, int(dep.price.cost(tokens, out))))
    return sorted(costs, key=lambda c: c.cost_picos)


def lint(config: Config) -> list[Report]:
    """A report per template version (a `ConfigError` if a template does not compile)."""
    library = Library.from_config(config)
    deployments = build_deployments(config)
    return [lint_template(t, config, deployments) for t in library.all()]
