"""Prompt templates: named, versioned prompts with typed variables, rendered in Jinja2's
sandbox, used from any chat endpoint as `model: "template:NAME"` (or `"template:NAME@2"`).

A template names the model it goes to, a system prompt and a user prompt. The request's
variables come in `x_hybridfast: {"template_vars": {...}}` (OpenAI chat and completions,
Anthropic messages) and are checked against the declared types: a missing or ill-typed
variable is a 400 (`ERR_TEMPLATE_VARIABLE`) naming it. A declared variable `input` that the
request leaves out is the text of the request's last user message, so clients that cannot
send extra fields can still use a template.

The rendering happens in a `before_route` hook: the request that reaches the cache and the
router is the rendered one (its `model` is the template's), so everything downstream —
routing, budgets, the ledger — treats it as an ordinary request.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import yaml

from hybridfast.config import Config, TemplateConfig
from hybridfast.errors import ConfigError, InvalidRequest, ModelNotFound
from hybridfast.passthrough import EXTENSION

log = logging.getLogger("hybridfast.templates")

TEMPLATE_PREFIX = "template:"
# Where request variables travel (an extra field OpenAI-shaped bodies pass through).
EXTENSION_FIELD = EXTENSION
VARS_FIELD = "template_vars"
INPUT_VARIABLE = "input"

_TYPE_CHECKS: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "list": (list,),
    "object": (dict,),
}


def type_ok(kind: str, value: Any) -> bool:
    # bool is an int in Python; a JSON `true` is not an integer or a number here.
    if isinstance(value, bool) and kind != "boolean":
        return False
    return isinstance(value, _TYPE_CHECKS[kind])


@dataclass(frozen=True)
class Template:
    """One compiled template version."""

    config: TemplateConfig
    system: Any  # jinja2.Template | None
    prompt: Any  # jinja2.Template
    referenced: frozenset[str]  # variables the text uses

    @property
    def key(self) -> str:
        return f"{self.config.name}@{self.config.version}"

    def variables(self, given: Mapping[str, Any], messages: list[dict[str, Any]]) -> dict[str, Any]:
        """The checked variables: the request's, then defaults; `input` from the last user
        message. Raises `InvalidRequest` naming the first missing or ill-typed one."""
        values = {**self.config.defaults, **given}
        if INPUT_VARIABLE in self.config.variables and INPUT_VARIABLE not in values:
            text = last_user_text(messages)
            if text is not None:
                values[INPUT_VARIABLE] = text
        for name, kind in self.config.variables.items():
            if name not in values:
                raise InvalidRequest(
                    f"template {self.key!r} needs the variable {name!r} ({kind})",
                    code="ERR_TEMPLATE_VARIABLE",
                    hint=f'send it in "{EXTENSION_FIELD}": {{"{VARS_FIELD}": {{"{name}": ...}}}}',
                )
            if not type_ok(kind, values[name]):
                raise InvalidRequest(
                    f"template {self.key!r}: the variable {name!r} must be a {kind}, "
                    f"not {type(values[name]).__name__}",
                    code="ERR_TEMPLATE_VARIABLE",
                    hint=f"send {name!r} as a JSON {kind}",
                )
        unknown = sorted(set(given) - set(self.config.variables))
        if unknown:
            raise InvalidRequest(
                f"template {self.key!r} declares no variable {unknown[0]!r}",
                code="ERR_TEMPLATE_VARIABLE",
                hint="declared: " + (", ".join(sorted(self.config.variables)) or "none"),
            )
        return values

    def render(self, values: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The messages the template makes from checked variables."""
        try:
            messages = []
            if self.system is not None:
                messages.append({"role": "system", "content": self.system.render(values)})
            messages.append({"role": "user", "content": self.prompt.render(values)})
        except Exception as exc:  # the sandbox refusing an operation, a bad filter argument
            raise InvalidRequest(
                f"template {self.key!r} could not be rendered: {type(exc).__name__}: {exc}",
                code="ERR_TEMPLATE_RENDER",
                hint="check the variables' values against what the template does with them",
            ) from None
        return messages


def last_user_text(messages: Iterable[dict[str, Any]]) -> str | None:
    for message in reversed(list(messages)):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return "\n".join(
                str(p.get("text", "")) for p in content if isinstance(p, dict) and "text" in p
            )
    return None


def _environment() -> Any:
    # Imported when a template is compiled, so a gateway without templates never loads it.
    from jinja2 import StrictUndefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    # Prompts are not HTML: no autoescape. StrictUndefined: a typo in a variable name is an
    # error at render time, not an empty string sent to a paid model.
    return ImmutableSandboxedEnvironment(autoescape=False, undefined=StrictUndefined)


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def compile_template(config: TemplateConfig, env: Any, where: str) -> Template:
    """A `Template`, or a `ConfigError` naming `where` when the text is not valid."""
    from jinja2 import TemplateSyntaxError, meta

    if not _NAME.match(config.name):
        raise ConfigError(
            f"{where}.name: {config.name!r} is not a template name",
            hint="letters, digits, '.', '_' and '-' (no '@' or ':')",
        )
    referenced: set[str] = set()
    compiled: list[Any] = []
    for field, text in (("system", config.system), ("prompt", config.prompt)):
        if text is None:
            compiled.append(None)
            continue
        try:
            referenced |= meta.find_undeclared_variables(env.parse(text))
            compiled.append(env.from_string(text))
        except TemplateSyntaxError as exc:
            raise ConfigError(
                f"{where}.{field}: line {exc.lineno}: {exc.message}",
                hint="templates use Jinja2 syntax: {{ variable }}, {% if %}...{% endif %}",
            ) from None
    for name, value in config.defaults.items():
        kind = config.variables.get(name)
        if kind is None:
            raise ConfigError(f"{where}.defaults.{name}: not a declared variable")
        if not type_ok(kind, value):
            raise ConfigError(f"{where}.defaults.{name}: must be a {kind}")
    return Template(config, compiled[0], compiled[1], frozenset(referenced))


def template_files(dirs: Iterable[str]) -> list[tuple[str, TemplateConfig]]:
    """(where, config) for every template in the directories' *.yaml / *.yml files."""
    found: list[tuple[str, TemplateConfig]] = []
    for directory in dirs:
        root = Path(directory)
        if not root.is_dir():
            raise ConfigError(
                f"prompts.dirs: {directory!r} is not a directory",
                hint="paths are relative to the directory serve starts in",
            )
        for path in sorted([*root.glob("*.yaml"), *root.glob("*.yml")]):
            try:
                data = yaml.safe_load(path.read_text(encoding="utf-8"))
                items = data if isinstance(data, list) else [data]
                for i, item in enumerate(items):
                    found.append((f"{path}[{i}]", msgspec.convert(item, TemplateConfig)))
            except (yaml.YAMLError, msgspec.ValidationError, OSError) as exc:
                raise ConfigError(
                    f"{path}: not a template file: {exc}",
                    hint="each file holds a template mapping (name, model, prompt, ...) or a list",
                ) from None
    return found


class Library:
    """Every template of a config, by name and version."""

    def __init__(self, templates: Iterable[tuple[str, TemplateConfig]]) -> None:
        env = _environment()
        self._versions: dict[str, dict[int, Template]] = {}
        for where, config in templates:
            versions = self._versions.setdefault(config.name, {})
            if config.version in versions:
                raise ConfigError(
                    f"{where}: template {config.name!r} version {config.version} is defined twice"
                )
            versions[config.version] = compile_template(config, env, where)

    @classmethod
    def from_config(cls, config: Config) -> Library:
        inline = [(f"prompts.templates[{i}]", t) for i, t in enumerate(config.prompts.templates)]
        return cls([*inline, *template_files(config.prompts.dirs)])

    def __bool__(self) -> bool:
        return bool(self._versions)

    def all(self) -> list[Template]:
        return [t for v in self._versions.values() for _, t in sorted(v.items())]

    def get(self, spec: str) -> Template:
        """`NAME` (its highest version) or `NAME@VERSION`; `ModelNotFound` otherwise."""
        name, _, version = spec.partition("@")
        versions = self._versions.get(name)
        if not versions:
            raise ModelNotFound(
                f"no template {name!r}",
                hint="known templates: " + (", ".join(sorted(self._versions)) or "none"),
            )
        if not version:
            return versions[max(versions)]
        if not version.isdigit() or int(version) not in versions:
            raise ModelNotFound(
                f"template {name!r} has no version {version!r}",
                hint="versions: " + ", ".join(str(v) for v in sorted(versions)),
            )
        return versions[int(version)]


def request_variables(extra: Mapping[str, Any]) -> dict[str, Any]:
    """The `x_hybridfast.template_vars` object of a request's extra fields ({} if none)."""
    ext = extra.get(EXTENSION_FIELD)
    if ext is None:
        return {}
    if not isinstance(ext, dict):
        raise InvalidRequest(f"`{EXTENSION_FIELD}` must be an object")
    values = ext.get(VARS_FIELD, {})
    if not isinstance(values, dict):
        raise InvalidRequest(
            f"`{EXTENSION_FIELD}.{VARS_FIELD}` must be an object of variables",
        )
    return values


def without_extension(extra: Mapping[str, Any]) -> dict[str, Any]:
    """The extra fields an upstream may see: the gateway's own extension removed."""
    return {k: v for k, v in extra.items() if k != EXTENSION_FIELD}
