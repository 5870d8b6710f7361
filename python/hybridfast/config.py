"""Configuration: YAML with `${VAR}` / `${VAR:-default}` from the environment, decoded into
typed msgspec structs. Every error names the file, the line and the key path
(`models[2].price.input_per_mtok`), so a user can go straight to the mistake.

Where the file is found: `--config PATH`, else `$HYBRIDFAST_CONFIG`, else `./hybridfast.yaml`,
else built-in defaults built from the environment (`Config.from_environment`).
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import msgspec
import yaml

from hybridfast import entrypoints
from hybridfast.errors import ConfigError

ProviderKind = Literal["openai", "anthropic", "ollama", "openai-compatible", "plugin"]
Strategy = Literal[
    "balanced",
    "cost",
    "latency",
    "quality",
    "local-first",
    "offline",
    "least-busy",
    "weighted",
    "custom",
]
BudgetScope = Literal["global", "key", "user", "team", "model"]
Window = Literal["hour", "day", "month", "total"]

# The built-in provider that serves local embedding models (`minilm`, `hashing`); it needs
# no `providers:` entry. A provider the config names `local` takes its place.
LOCAL_PROVIDER = "local"


class _Section(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pass


# Ranges the types carry, so `config check` refuses what `serve` could not use.
Port = Annotated[int, msgspec.Meta(ge=1, le=65_535)]
Count = Annotated[int, msgspec.Meta(ge=1)]  # how many of something: at least one
Size = Annotated[int, msgspec.Meta(ge=0)]  # a capacity or limit that may be zero
Positive = Annotated[float, msgspec.Meta(gt=0)]
Seconds = Positive
NonNegative = Annotated[float, msgspec.Meta(ge=0)]
Share = Annotated[float, msgspec.Meta(ge=0, le=1)]


class ServerConfig(_Section):
    host: str = "127.0.0.1"
    port: Port = 8080
    # Admin key: when set, every request needs it (or a key from `keys:`) as a bearer token.
    master_key: str | None = None
    # `master-key`: /admin answers the master key only, and refuses everyone when none is
    # set. `open-on-loopback`: without a master key, /admin answers requests from this
    # machine (a laptop set-up; never behind a proxy on the same host).
    admin: Literal["master-key", "open-on-loopback"] = "master-key"
    # A key that may read /metrics and nothing else (for Prometheus); the master key may too.
    metrics_key: str | None = None
    max_body_bytes: Count = 10 * 1024 * 1024
    # Continue a stream that breaks mid-way on the next deployment.
    stream_recovery: bool = True
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # On SIGTERM: how long requests and streams in flight may take to finish before the
    # process exits anyway (new connections are refused and /readyz answers 503 meanwhile).
    drain_timeout_s: Seconds = 30.0


class TimeoutConfig(_Section):
    connect_s: Seconds = 5.0
    # The wait for the answer's first byte.
    first_byte_s: Seconds = 60.0
    # The longest gap between bytes after the first; null: first_byte_s.
    idle_s: Seconds | None = None
    # The whole exchange, however the bytes trickle in.
    total_s: Seconds = 600.0


class ProviderConfig(_Section):
    name: str
    # The upstream's wire protocol; `openai-compatible` (vLLM, llama.cpp, LM Studio...) needs
    # a `base_url`; `plugin`: a provider an installed package adds (docs/extensibility.md).
    kind: ProviderKind
    base_url: str | None = None
    api_key: str | None = None
    timeout: TimeoutConfig = msgspec.field(default_factory=TimeoutConfig)
    max_connections: Count = 256
    max_retries: Annotated[int, msgspec.Meta(ge=0, le=10)] = 2
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    # Whether the upstream runs on this machine/network; defaults by kind (ollama: yes).
    local: bool | None = None
    # The HTTP client: "fast" (a lean keep-alive HTTP/1.1 client, plain http only), "aiohttp"
    # (TLS, proxies), or "auto": fast for http:// base URLs, aiohttp for https://.
    http_client: Literal["auto", "fast", "aiohttp"] = "auto"
    # kind: plugin: the `hybridfast.providers` entry point that builds this provider (an
    # installed package's); null: the provider's name.
    plugin: str | None = None
    # Settings for a plugin provider, which reads them from its config (`config.options`).
    options: dict[str, Any] = msgspec.field(default_factory=dict)


class PriceConfig(_Section):
    """Dollars per million tokens (and per GPU-second for local hardware)."""

    input_per_mtok: float = 0.0
    output_per_mtok: float = 0.0
    cached_input_per_mtok: float | None = None
    cache_write_per_mtok: float | None = None
    per_gpu_second: float | None = None


class ModelConfig(_Section):
    """A deployment: one model on one provider. Several may share a `name` (a group)."""

    name: str
    # A `providers[].name`, `local` for the built-in embedding models, or the name of an
    # installed provider plugin (`hybridfast.providers`; no `providers` entry needed).
    provider: str
    model: str
    quality: float = 0.5
    price: PriceConfig | None = None
    context_window: Count | None = None
    max_output_tokens: Count | None = None
    # What it can do beyond plain chat: tools, vision, json, embeddings.
    capabilities: list[str] = msgspec.field(default_factory=list)
    tags: list[str] = msgspec.field(default_factory=list)
    max_concurrency: Count | None = None
    # Priors for the router until live traffic is measured.
    ttft_ms: NonNegative | None = None
    tokens_per_s: Positive | None = None
    # Embedding models: the vector size, and the sizes `dimensions` may ask for.
    dimensions: Count | None = None


class BalanceWeights(_Section):
    """Relative weights of the `balanced` strategy's score (each part scaled to 0..1)."""

    cost: NonNegative = 1.0
    latency: NonNegative = 1.0
    quality: NonNegative = 1.0


class RouteConfig(_Section):
    """A virtual model name the router resolves over `candidates` (groups or deployments)."""

    candidates: list[str]
    strategy: Strategy = "balanced"
    weights: list[NonNegative] | None = None
    min_quality: Share | None = None
    max_cost_usd: NonNegative | None = None
    balance: BalanceWeights = msgspec.field(default_factory=BalanceWeights)
    # Pick a cheaper candidate when the caller's budget cannot afford the first choice.
    downgrade_on_budget: bool = True
    # A custom router: a `hybridfast.routers` entry-point name or a dotted `module:Class` path.
    router: str | None = None
    # Keyword arguments for the custom router's constructor.
    options: dict[str, Any] = msgspec.field(default_factory=dict)


class CircuitConfig(_Section):
    failures_to_open: Count = 5
    error_rate_to_open: Share = 0.5
    window_s: Seconds = 30.0
    min_requests: Size = 10
    cooldown_s: NonNegative = 15.0
    successes_to_close: Count = 2
    # Cooldowns are stretched by up to this fraction, so instances do not probe in step.
    jitter: Share = 0.2
    # A half-open probe that has not reported back after this long is presumed lost.
    probe_timeout_s: Seconds = 60.0


class RouterConfig(_Section):
    circuit: CircuitConfig = msgspec.field(default_factory=CircuitConfig)
    # The weight of the newest measurement in the moving averages: in (0, 1].
    ewma_alpha: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.2
    # How a plain model name with several deployments (a group) orders them.
    group_strategy: Strategy = "balanced"
    # Output tokens assumed for expected cost and time when a request sets no max_tokens.
    expected_output_tokens: Count = 256
    # Priors for deployments with neither live measurements nor ttft_ms/tokens_per_s set.
    default_ttft_ms: NonNegative = 500.0
    default_tokens_per_s: Positive = 50.0


class QueueConfig(_Section):
    """Admission at deployments with `max_concurrency`: wait for a slot instead of failing."""

    enabled: bool = True
    # Waiters per deployment; past that a request is refused (429 ERR_QUEUE_FULL).
    max_queue: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 1024
    # How long a request waits for a slot before it is refused (or falls back).
    timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    # A waiter of a lower priority goes first once it has waited this long.
    starvation_ms: Annotated[int, msgspec.Meta(ge=0)] = 10_000
    # Priority of requests without x-hybridfast-priority: interactive (0) .. batch (9).
    default_priority: Annotated[int, msgspec.Meta(ge=0, le=9)] = 0
    # local-first sends a request to the cloud once a local deployment's expected queue wait
    # exceeds this.
    local_max_wait_s: Annotated[float, msgspec.Meta(ge=0)] = 2.0
    # Identical requests in flight at once make one upstream call (single-flight).
    coalesce: bool = True


class GpuDeviceConfig(_Section):
    index: Annotated[int, msgspec.Meta(ge=0)]
    # Local model servers (provider names) that run on this GPU.
    providers: list[str] = msgspec.field(default_factory=list)


class GpusConfig(_Section):
    """Local GPUs read through NVML (the `gpu` extra): health, load, and the servers on each."""

    enabled: bool = True
    poll_s: Annotated[float, msgspec.Meta(gt=0)] = 5.0
    # At or above this temperature a GPU counts as down: its servers are routed around.
    max_temperature_c: Annotated[int, msgspec.Meta(gt=0)] = 90
    devices: list[GpuDeviceConfig] = msgspec.field(default_factory=list)

    def affinity(self) -> dict[str, int]:
        """Provider name -> GPU index."""
        return {p: d.index for d in self.devices for p in d.providers}


class LedgerConfig(_Section):
    backend: Literal["sqlite", "postgres", "memory"] = "sqlite"
    path: str = "hybridfast-ledger.db"
    dsn: str | None = None
    # Where budgets shared by several instances are counted.
    counter: Literal["local", "redis", "postgres"] = "local"
    redis_url: str = "redis://127.0.0.1:6379/0"
    # A price map in LiteLLM's model_prices_and_context_window.json format.
    prices_file: str | None = None
    # How long the background writer waits for more entries before checking for shutdown;
    # entries are written as soon as they are queued (group commit), not after this.
    flush_interval_ms: Seconds = 5.0
    # SQLite: "normal" writes each group commit to the write-ahead log before the answer, so
    # an answered request survives the process being killed; "full" also fsyncs each commit,
    # so it survives a power cut or an OS crash too (at the cost of an fsync per commit).
    synchronous: Literal["full", "normal"] = "normal"
    # PostgreSQL: the schema holding the ledger's tables (created if missing).
    schema: str = "public"
    # Redis counter: key prefix, and how long a crashed instance's holds live before the
    # shared budget takes them back.
    redis_prefix: str = "hybridfast:budget"
    hold_ttl_s: Seconds = 900.0

    def sibling(self, part: str) -> str:
        """A SQLite file beside the ledger's for tables Python writes (request log, keys,
        responses, feedback): `hybridfast-ledger-<part>.db`. Never the ledger file itself: it
        belongs to the core's SQLite library, and a second SQLite library opening the same
        file in one process breaks its locks (sqlite.org/howtocorrupt.html, 2.2.1), which
        can lose acknowledged ledger entries."""
        path = Path(self.path)
        return str(path.with_name(f"{path.stem}-{part}{path.suffix or '.db'}"))


class BudgetConfig(_Section):
    scope: BudgetScope
    limit_usd: float
    window: Window = "total"
    name: str | None = None
    soft_fraction: Share = 0.8


class ExactCacheConfig(_Section):
    enabled: bool = True
    ttl_s: Seconds = 3600.0
    max_entries: Size = 100_000


class SemanticCacheConfig(_Section):
    enabled: bool = True
    # Cosine similarity a candidate needs; None: the embedder's measured default
    # (minilm 0.90; hashing 0.90). See README "Caching".
    threshold: Annotated[float, msgspec.Meta(ge=-1, le=1)] | None = None
    # auto: the neural local model (minilm) when installed; without it the semantic cache
    # stays off, because the hashing embedder cannot keep false hits under 2%.
    # `hashing` turns it on with the hashing embedder anyway.
    embedder: str = "auto"
    # What is embedded: the last user message (earlier turns must then match exactly), or
    # the whole conversation.
    text: Literal["last_user", "conversation"] = "last_user"
    max_entries: Size = 100_000
    ttl_s: Seconds = 86_400.0
    # Checks a candidate must pass besides the threshold; what each one buys is measured
    # in the README.
    guards: list[Literal["numbers", "negation", "entities", "antonyms", "details", "direction"]] = (
        msgspec.field(
            default_factory=lambda: [
                "numbers",
                "negation",
                "entities",
                "antonyms",
                "details",
                "direction",
            ]
        )
    )
    # The verifier's error bound: a candidate past the threshold and the guards is served
    # only where the calibrated verifier keeps wrong and false hits at or under this rate
    # (measured on public paraphrase data, docs/cache.md). 1%, not 2%: a margin for traffic
    # unlike that data (at 2% the shipped near misses "remove"/"find duplicates" are served).
    # null: threshold and guards alone.
    max_error_rate: float | None = 0.01
    # Candidates checked per lookup, best first.
    top_k: Count = 3
    # Vector storage in the index: f32, f16 (half the memory) or int8 (a quarter).
    storage: Literal["f32", "f16", "int8"] = "f32"
    # A scope gets an HNSW graph (instead of an exact scan) from this many entries.
    ann_threshold: Size = 4096
    ef_search: Count = 96
    # Batched lookups over large scopes on the GPU when CuPy and a device are present.
    gpu: Literal["auto", "off"] = "auto"
    gpu_min_entries: Size = 50_000


class CacheConfig(_Section):
    # Where exact entries are kept: `memory` (this process), `redis` (shared), or the name of
    # an installed `hybridfast.cache_backends` plugin (docs/extensibility.md).
    backend: str = "memory"
    # Keyword arguments for a plugin backend's constructor.
    options: dict[str, Any] = msgspec.field(default_factory=dict)
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Namespace of every Redis key and of the event stream (several gateways or tests can
    # share one Redis without seeing each other's entries).
    redis_prefix: str = "hybridfast:cache"
    exact: ExactCacheConfig = msgspec.field(default_factory=ExactCacheConfig)
    semantic: SemanticCacheConfig = msgspec.field(default_factory=SemanticCacheConfig)
    # Serve one tenant's cached answers to another (off: entries are scoped by key/team).
    shared: bool = False
    # Cache requests with temperature > 0 too.
    cache_nondeterministic: bool = False
    # Treat a request without `temperature` as deterministic (some upstreams default to 0).
    unset_temperature_is_deterministic: bool = False
    # Files prefix for the memory backend's snapshot (a `<path>.json` manifest and its
    # parts): loaded whole at start (a damaged part: a warning and an empty cache), written
    # every `snapshot_interval_s` and at shutdown. `auto`: next to the SQLite ledger
    # (`<ledger dir>/<ledger stem>-cache.*`), none with another ledger backend; null: none.
    snapshot_path: str | None = "auto"
    snapshot_interval_s: Seconds = 300.0


class EmbeddingsConfig(_Section):
    # Dynamic batching of local models: a batch closes at `max_batch` texts or when its
    # oldest request has waited `max_wait_ms`; beyond `max_queue` waiting texts → 429.
    max_batch: Count = 64
    max_wait_ms: NonNegative = 2.0
    max_queue: Count = 4096
    max_inputs: Count = 2048
    max_input_chars: Count = 32_768
    # Off: each request runs on its own (for comparison; batching is faster under load).
    batching: bool = True
    # Where the local MiniLM runs: auto (a GPU when CuPy sees one), cpu or cuda.
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Threads for one local batch; 0 = one per core.
    threads: Size = 0
    # The exact per-text cache in front of every embedding deployment.
    cache: bool = True
    cache_max_entries: Size = 100_000


class RequestLogConfig(_Section):
    """One row per request beside the ledger (its own SQLite file next to the ledger's, or
    the ledger's PostgreSQL database), for `GET /admin/requests` and the dashboard."""

    # Write every request's row (`GET /admin/requests`).
    enabled: bool = True
    # Rows older than this many days are deleted.
    retention_days: float = 30.0
    # How often the background writer commits the rows queued since its last batch.
    flush_interval_ms: float = 200.0


class TracingConfig(_Section):
    """OpenTelemetry traces over OTLP/HTTP (the `otel` extra). Also switched on by the
    standard OTEL_TRACES_EXPORTER=otlp / OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT variables."""

    # Export traces (also on with the OTEL_EXPORTER_OTLP_* / OTEL_TRACES_EXPORTER variables).
    enabled: bool = False
    # OTLP/HTTP base URL (default: the OTEL_* variables, else http://127.0.0.1:4318).
    endpoint: str | None = None
    # OTLP/HTTP encoding (OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL wins).
    protocol: Literal["http/protobuf", "http/json"] = "http/protobuf"
    # The `service.name` of the spans (OTEL_SERVICE_NAME wins).
    service_name: str = "hybridfast"
    # Share of the traces that start here to record (a sampled incoming traceparent is kept).
    sample_ratio: float = 1.0
    # Prompts and completions go into spans only when this says so.
    record_content: bool = False


class MetricsConfig(_Section):
    # Label sets kept per family before new ones are counted under "other".
    max_series: int = 2000
    # Spend and tokens by key name and team (off: one series per deployment).
    by_key: bool = True


class ObservabilityConfig(_Section):
    # Log lines as text or one JSON object per line (`serve --log-format` wins).
    log_format: Literal["text", "json"] = "text"
    # One log line per request: "auto" writes them with the JSON format only.
    request_lines: Literal["auto", "on", "off"] = "auto"
    request_log: RequestLogConfig = msgspec.field(default_factory=RequestLogConfig)
    tracing: TracingConfig = msgspec.field(default_factory=TracingConfig)
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)


class KeyConfig(_Section):
    """A virtual API key: who is calling, for auth, budgets and cache scoping."""

    key: str
    name: str
    user: str | None = None
    team: str | None = None
    tags: list[str] = msgspec.field(default_factory=list)
    # Whether requests may name their end user (`user`, `metadata.user_id`) for budgets and
    # the ledger. Off: the key's own `user` counts, whatever the body says. On: the body's
    # user counts, within this key's team (budgets of users outside it stay unreachable).
    allow_client_user: bool = False


class ResponsesConfig(_Section):
    """Responses API answers kept for `previous_response_id` and `GET /v1/responses/{id}`
    (in the ledger's database)."""

    # How long a stored response is kept, in days.
    retention_days: float = 30.0


class RateLimitConfig(_Section):
    """Requests and tokens per minute and concurrent requests of one scope (unset: no
    limit). `model` and `route` match the name the client asked for."""

    # What the rule limits: the whole gateway, or one key, user, team, model or route.
    scope: Literal["global", "key", "user", "team", "model", "route"]
    # The key, user, team, model or route name (none for global).
    name: str | None = None
    # Requests per minute (a full minute's worth may come at once).
    rpm: Count | None = None
    # Tokens per minute: estimated at admission, settled with the reported usage.
    tpm: Count | None = None
    # Requests running at the same time.
    max_parallel: Count | None = None


class LimitsConfig(_Section):
    # local: counters in this process; redis: shared by every instance on that Redis.
    backend: Literal["local", "redis"] = "local"
    # The Redis shared by the instances (redis backend).
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Namespace of the counters' keys in Redis.
    redis_prefix: str = "hybridfast:ratelimit"
    # How long a concurrent slot of a crashed instance stays taken (redis backend).
    hold_ttl_s: Seconds = 900.0
    rules: list[RateLimitConfig] = msgspec.field(default_factory=list)


class TlsConfig(_Section):
    """HTTPS for `serve`: the certificate chain and private key, PEM files (both or none).
    TLS to upstreams needs nothing here: it is always verified against the system's CAs
    (or `$SSL_CERT_FILE`)."""

    # The certificate chain, PEM (serve --tls-cert).
    cert: str | None = None
    # Its private key, PEM, without a password (serve --tls-key).
    key: str | None = None
    # The oldest TLS version clients may use.
    min_version: Literal["1.2", "1.3"] = "1.2"


PiiEntity = Literal["email", "phone", "card", "iban", "key"]


class GuardrailConfig(_Section):
    """One check on requests (and optionally answers). `kind`: pii (emails, phone numbers,
    card numbers passing Luhn, IBANs passing mod-97, key-shaped strings), prompt_injection
    (heuristics), or plugin (a `hybridfast.guardrails` entry point or `module:Class`)."""

    # Shown in the x-hybridfast-guardrails header, the log and the metric.
    name: str
    # pii, prompt_injection, or plugin (a custom guardrail, see `plugin`).
    kind: Literal["pii", "prompt_injection", "plugin"]
    # warn: let it through and report; block: refuse with 400; mask: replace what was found.
    action: Literal["warn", "block", "mask"] = "warn"
    # What a pii guardrail looks for.
    entities: list[PiiEntity] = msgspec.field(
        default_factory=lambda: ["email", "phone", "card", "iban", "key"]
    )
    # Check answers too (non-streaming answers are masked; streams are reported).
    answers: bool = False
    # A `hybridfast.guardrails` entry-point name or a `module:Class` path (kind: plugin).
    plugin: str | None = None
    # Keyword arguments for the plugin's constructor.
    options: dict[str, Any] = msgspec.field(default_factory=dict)


VariableType = Literal["string", "integer", "number", "boolean", "list", "object"]


class TemplateConfig(_Section):
    """A named, versioned prompt template (Jinja2 syntax, rendered in its sandbox), used as
    `model: "template:NAME"` or `"template:NAME@VERSION"` (docs/extensibility.md)."""

    # What clients write after `template:`.
    name: str
    # The model, group or route the rendered request goes to.
    model: str
    # The user message.
    prompt: str
    # Several versions may share a name; `template:NAME` uses the highest.
    version: Annotated[int, msgspec.Meta(ge=1)] = 1
    # The system prompt (a template too); none: the request has no system message.
    system: str | None = None
    # Declared variables and their types: string, integer, number, boolean, list, object.
    variables: dict[str, VariableType] = msgspec.field(default_factory=dict)
    # Values for variables the request may leave out.
    defaults: dict[str, Any] = msgspec.field(default_factory=dict)
    # Request settings the template fixes (a request's own value wins).
    max_tokens: Count | None = None
    # The sampling temperature the template sets (a request's own value wins).
    temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] | None = None
    # Shown by `hybridfast prompts list`.
    description: str = ""


class ChainStepConfig(_Section):
    """One step of a chain: a template, optionally sent to another model."""

    # A template name, or `NAME@VERSION`.
    template: str
    # Overrides the template's model for this step (per-step routing).
    model: str | None = None
    # The variable later steps read this step's answer from (default: step1, step2, ...).
    output: str | None = None


class ChainConfig(_Section):
    """Steps that call models in turn, each step's answer a variable of the next; served as
    `model: "chain:NAME"`; the last step's answer is the reply."""

    # What clients write after `chain:`.
    name: str
    # The steps, in the order they run.
    steps: list[ChainStepConfig]
    # What the chain is for (documentation only).
    description: str = ""


class PluginsConfig(_Section):
    """Installed plugins that run without a config entry of their own (docs/extensibility.md).
    Routers, guardrails, providers and cache backends are named where they are used."""

    # `hybridfast.callbacks` entry points to run after every answer; "*": all installed.
    callbacks: list[str] = msgspec.field(default_factory=lambda: ["*"])
    # Keyword arguments for a callback's constructor, by entry-point name.
    options: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)


class PromptsConfig(_Section):
    """Prompt templates and chains (docs/extensibility.md)."""

    # Templates written here.
    templates: list[TemplateConfig] = msgspec.field(default_factory=list)
    # Directories of template files (*.yaml, one template or a list each), relative to
    # the directory serve starts in.
    dirs: list[str] = msgspec.field(default_factory=list)
    # Chains of templates (`model: "chain:NAME"`).
    chains: list[ChainConfig] = msgspec.field(default_factory=list)


class RouterTrainingConfig(_Section):
    """Training data for the learned router from feedback: the prompt embedding (MiniLM, the
    learned router's embedder; never the prompt text) of each answered request to the listed
    routes is kept beside the ledger by request id, for `hybridfast experiments train-router
    --from-feedback` (docs/experiments.md)."""

    # Routes or model names (what clients send as `model`) whose prompts are embedded and kept.
    routes: list[str] = msgspec.field(default_factory=list)
    # Kept embeddings older than this many days are deleted (when serve keeps its first one).
    retention_days: Positive = 90.0


class Config(_Section):
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    providers: list[ProviderConfig] = msgspec.field(default_factory=list)
    models: list[ModelConfig] = msgspec.field(default_factory=list)
    routes: dict[str, RouteConfig] = msgspec.field(default_factory=dict)
    router: RouterConfig = msgspec.field(default_factory=RouterConfig)
    queue: QueueConfig = msgspec.field(default_factory=QueueConfig)
    gpus: GpusConfig = msgspec.field(default_factory=GpusConfig)
    ledger: LedgerConfig = msgspec.field(default_factory=LedgerConfig)
    budgets: list[BudgetConfig] = msgspec.field(default_factory=list)
    cache: CacheConfig = msgspec.field(default_factory=CacheConfig)
    embeddings: EmbeddingsConfig = msgspec.field(default_factory=EmbeddingsConfig)
    keys: list[KeyConfig] = msgspec.field(default_factory=list)
    responses: ResponsesConfig = msgspec.field(default_factory=ResponsesConfig)
    observability: ObservabilityConfig = msgspec.field(default_factory=ObservabilityConfig)
    limits: LimitsConfig = msgspec.field(default_factory=LimitsConfig)
    guardrails: list[GuardrailConfig] = msgspec.field(default_factory=list)
    tls: TlsConfig = msgspec.field(default_factory=TlsConfig)
    prompts: PromptsConfig = msgspec.field(default_factory=PromptsConfig)
    plugins: PluginsConfig = msgspec.field(default_factory=PluginsConfig)
    router_training: RouterTrainingConfig = msgspec.field(default_factory=RouterTrainingConfig)

    def __post_init__(self) -> None:
        # msgspec runs this for a config read from YAML (`convert`) and for one built in
        # Python alike, so both resolve plugin providers the same way.
        resolve_plugin_providers(self)

    def provider(self, name: str) -> ProviderConfig | None:
        return next((p for p in self.providers if p.name == name), None)

    def model_names(self) -> set[str]:
        return {m.name for m in self.models}

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> Config:
        """Built-in defaults: a provider for each key the environment holds, plus Ollama
        (tried lazily: `serve` starts whether or not it answers)."""
        env = os.environ if env is None else env
        providers: list[ProviderConfig] = []
        models: list[ModelConfig] = []
        openai_url = env.get("OPENAI_BASE_URL") or None
        # A local server in OPENAI_BASE_URL (as LM Studio's and vLLM's guides set it up) is
        # left to discovery, which asks it for its models: OpenAI's names do not exist there.
        if env.get("OPENAI_API_KEY") and not (openai_url and is_local_url(openai_url)):
            providers.append(
                ProviderConfig(
                    name="openai",
                    kind="openai",
                    api_key=env["OPENAI_API_KEY"],
                    base_url=openai_url,
                )
            )
            models += [
                ModelConfig(
                    name="gpt-4.1",
                    provider="openai",
                    model="gpt-4.1",
                    quality=0.88,
                    capabilities=["tools", "vision", "json"],
                ),
                ModelConfig(
                    name="gpt-4.1-mini",
                    provider="openai",
                    model="gpt-4.1-mini",
                    quality=0.75,
                    capabilities=["tools", "vision", "json"],
                ),
                ModelConfig(
                    name="text-embedding-3-small",
                    provider="openai",
                    model="text-embedding-3-small",
                    capabilities=["embeddings"],
                    dimensions=1536,
                ),
            ]
        if env.get("ANTHROPIC_API_KEY"):
            providers.append(
                ProviderConfig(
                    name="anthropic",
                    kind="anthropic",
                    api_key=env["ANTHROPIC_API_KEY"],
                )
            )
            models += [
                ModelConfig(
                    name="claude-sonnet-4-5",
                    provider="anthropic",
                    model="claude-sonnet-4-5",
                    quality=0.9,
                    # json: structured output through a forced tool (providers/anthropic.py).
                    capabilities=["tools", "vision", "json"],
                ),
                ModelConfig(
                    name="claude-haiku-4-5",
                    provider="anthropic",
                    model="claude-haiku-4-5",
                    quality=0.75,
                    # json: structured output through a forced tool (providers/anthropic.py).
                    capabilities=["tools", "vision", "json"],
                ),
            ]
        providers.append(
            ProviderConfig(name="ollama", kind="ollama", base_url=ollama_base_url(env))
        )
        config = cls(providers=providers, models=models)
        if models:
            candidates = sorted({m.name for m in models if "embeddings" not in m.capabilities})
            config.routes["auto"] = RouteConfig(strategy="balanced", candidates=candidates)
        return config


def is_local_url(url: str) -> bool:
    """Whether `url` points at this machine or a private network (where a local model
    server would run), as opposed to a cloud API."""
    host = (urlsplit(url).hostname or "").lower()
    if not host:
        return False
    if host == "localhost" or host.endswith((".local", ".internal", ".lan", ".localhost")):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        # A bare name without a dot is a container or LAN host ("ollama", "vllm").
        return "." not in host
    return ip.is_loopback or ip.is_private or ip.is_link_local


def ollama_base_url(env: Mapping[str, str]) -> str:
    """Ollama's URL from `$OLLAMA_HOST` the way Ollama's own client reads it: a bare host
    gets http:// and port 11434, and 0.0.0.0 (a server-side bind address) means this host."""
    raw = (env.get("OLLAMA_HOST") or "").strip().rstrip("/") or "127.0.0.1:11434"
    scheme, sep, rest = raw.partition("://")
    if not sep:
        scheme, rest = "http", raw
    host, _, path = rest.partition("/")
    if host.startswith("0.0.0.0"):
        host = "127.0.0.1" + host.removeprefix("0.0.0.0")
    if ":" not in host.rsplit("]", 1)[-1]:
        host += ":443" if scheme == "https" else ":11434"
    return f"{scheme}://{host}" + (f"/{path}" if path else "")


# --- loading ---------------------------------------------------------------------------

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
# `${keyring:NAME}`: a secret from the OS keyring (service "hybridfast"; `hybridfast secrets`).
_KEYRING = re.compile(r"\$\{keyring:([A-Za-z0-9_.\-/]+)\}")
# Both in one pass, so a value from one source is never expanded by the other.
_REFERENCE = re.compile(f"{_KEYRING.pattern}|{_VAR.pattern}")
KEYRING_SERVICE = "hybridfast"


def keyring_secret(name: str, where: str) -> str:
    """The secret `name` from the OS keyring; a `ConfigError` naming `where` if absent."""
    try:
        import keyring
        import keyring.errors
    except ImportError:
        raise ConfigError(
            f"{where}: ${{keyring:{name}}} needs the keyring package",
            hint="pip install 'hybridfast[secrets]'",
        ) from None
    try:
        value = keyring.get_password(KEYRING_SERVICE, name)
    except keyring.errors.KeyringError as exc:
        raise ConfigError(
            f"{where}: the OS keyring cannot be read ({type(exc).__name__})",
            hint="check the keyring backend (`python -m keyring diagnose`)",
        ) from None
    if value is None:
        raise ConfigError(
            f"{where}: no secret {name!r} in the keyring",
            hint=f"store it with `hybridfast secrets set {name}`",
        )
    return value


# Shapes of real API keys, for the "literal secret in the file" warning.
_SECRET_SHAPE = re.compile(
    r"^(sk-(proj-|ant-)?[A-Za-z0-9_\-]{16,}|AKIA[0-9A-Z]{16}|AIza[0-9A-Za-z_\-]{30,}"
    r"|gsk_[A-Za-z0-9]{20,}|xai-[A-Za-z0-9]{20,})$"
)
_SECRET_KEYS = {"api_key", "master_key", "metrics_key", "key", "dsn", "redis_url"}
# Keys that must not come out of `${VAR}` empty, unset or null (`MK=null` must not turn
# auth off) unless a `:-default` says empty is meant. A provider's `api_key` may be unset
# (the examples name every provider; one without its key just fails over), but not a
# null word: `null`/`~` set on purpose is a mistake either way.
_AUTH_SECRETS = {"master_key", "metrics_key", "key"}
_NULL_WORDS = {"~", "null", "Null", "NULL"}
# A real config has a few thousand values; aliases expanding past this are a YAML bomb.
MAX_YAML_VALUES = 100_000
_MERGE_TAG = "tag:yaml.org,2002:merge"


@dataclass
class LoadedConfig:
    config: Config
    source: str  # the file path, or "<defaults>"
    warnings: list[str] = field(default_factory=list)


def find_config_path(
    explicit: str | None = None, env: Mapping[str, str] | None = None
) -> Path | None:
    env = os.environ if env is None else env
    if explicit:
        return Path(explicit)
    if env.get("HYBRIDFAST_CONFIG"):
        return Path(env["HYBRIDFAST_CONFIG"])
    default = Path("hybridfast.yaml")
    return default if default.is_file() else None


def load_config(path: str | None = None, env: Mapping[str, str] | None = None) -> LoadedConfig:
    """Finds and loads the config; raises `ConfigError` naming file, line and key path."""
    env = os.environ if env is None else env
    found = find_config_path(path, env)
    if found is None:
        return LoadedConfig(Config.from_environment(env), "<defaults>")
    try:
        text = found.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"{found}: cannot read the config file ({exc.strerror})",
            hint="pass --config PATH to an existing YAML file",
        ) from None
    return parse_config(text, str(found), env)


def parse_config(
    text: str, source: str = "<string>", env: Mapping[str, str] | None = None
) -> LoadedConfig:
    env = os.environ if env is None else env
    warnings: list[str] = []
    # `${VAR}` is not valid YAML inside flow mappings (`{key: ${VAR}}`), so each is swapped
    # for an inert token before parsing and restored per scalar: lines stay where they were,
    # and an environment value can never change the document's structure.
    originals: list[str] = []

    def hide(match: re.Match[str]) -> str:
        originals.append(match.group(0))
        return f"__hybridfast_env_{len(originals) - 1}__"

    text = _REFERENCE.sub(hide, text)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(
            f"{where}: invalid YAML: {problem}", hint="check indentation and quoting"
        ) from None
    lines: dict[str, int] = {}
    data = {} if root is None else _to_python(root, "", lines, env, originals, source, warnings)
    if not isinstance(data, dict):
        raise ConfigError(f"{source}:1: the top level must be a mapping of sections")
    try:
        config = msgspec.convert(data, Config, strict=False)
    except msgspec.ValidationError as exc:
        raise _located_error(str(exc), source, lines) from None
    _check_references(config, source, lines)
    return LoadedConfig(config, source, warnings)


def _to_python(
    node: yaml.Node,
    path: str,
    lines: dict[str, int],
    env: Mapping[str, str],
    originals: list[str],
    source: str,
    warnings: list[str],
) -> Any:
    lines[path] = node.start_mark.line + 1
    if len(lines) > MAX_YAML_VALUES:
        raise ConfigError(
            f"{source}:{lines[path]}: the YAML expands to more than {MAX_YAML_VALUES} values",
            hint="aliases (*name) that repeat anchors of anchors multiply; write it out",
        )
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        merged: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:  # `<<: *defaults`: keys written here win
                value = _to_python(value_node, path, lines, env, originals, source, warnings)
                for part in value if isinstance(value, list) else [value]:
                    if isinstance(part, dict):
                        merged.update({k: v for k, v in part.items() if k not in merged})
                continue
            key = str(key_node.value)
            child = f"{path}.{key}" if path else key
            if key in out:
                raise ConfigError(
                    f"{source}:{key_node.start_mark.line + 1}: {child}: duplicate key "
                    f"(first on line {lines[child]})",
                    hint="a YAML mapping keeps only one value per key: remove one",
                )
            lines[child] = key_node.start_mark.line + 1
            out[key] = _to_python(value_node, child, lines, env, originals, source, warnings)
        return {**merged, **out} if merged else out
    if isinstance(node, yaml.SequenceNode):
        return [
            _to_python(item, f"{path}[{i}]", lines, env, originals, source, warnings)
            for i, item in enumerate(node.value)
        ]
    assert isinstance(node, yaml.ScalarNode)
    raw = str(node.value)
    leaf = path.rsplit(".", 1)[-1]
    if leaf in _SECRET_KEYS and _SECRET_SHAPE.match(raw):
        warnings.append(
            f"{source}:{lines[path]}: {path} holds a literal secret; "
            f"use ${{VAR}} to read it from the environment instead"
        )
    if "__hybridfast_env_" in raw:
        raw = _TOKEN.sub(lambda m: originals[int(m.group(1))], raw)
        where = f"{source}:{lines[path]}: {path}"
        value = _REFERENCE.sub(
            lambda m: (
                keyring_secret(m.group(1), where)
                if m.group(1)
                else env.get(m.group(2)) or (m.group(3) or "")
            ),
            raw,
        )
        bare = value.strip()
        if (leaf in _AUTH_SECRETS and (not bare or bare in _NULL_WORDS) and ":-" not in raw) or (
            leaf == "api_key" and bare in _NULL_WORDS
        ):
            raise ConfigError(
                f"{source}:{lines[path]}: {path}: {raw} is "
                f"{repr(value) if value.strip() else 'empty or unset'}; "
                "a secret read from the environment cannot be empty or null",
                hint="set the variable to the secret, or write ${VAR:-} if empty is meant",
            )
        if node.style is None:  # plain scalars get YAML's typing after interpolation
            if value == "":
                return None
            tag = _RESOLVER.resolve(yaml.ScalarNode, value, (True, False))  # type: ignore[no-untyped-call]
            node = yaml.ScalarNode(tag, value, node.start_mark, node.end_mark)
        else:
            return value
    return _CONSTRUCTOR.construct_object(node, deep=True)


# Scalars are typed by YAML's own rules (so `port: ${PORT:-8080}` is an int).
_RESOLVER = yaml.resolver.Resolver()
_TOKEN = re.compile(r"__hybridfast_env_(\d+)__")
_CONSTRUCTOR = yaml.constructor.SafeConstructor()


_AT = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_UNKNOWN = re.compile(r"unknown field `(?P<field>[^`]+)`")
_MISSING = re.compile(r"missing required field `(?P<field>[^`]+)`")


def _located_error(message: str, source: str, lines: dict[str, int]) -> ConfigError:
    at = _AT.search(message)
    path = at.group("path").lstrip(".") if at else ""
    detail = _AT.sub("", message)
    extra = _UNKNOWN.search(detail) or _MISSING.search(detail)
    key_path = (
        f"{path}.{extra.group('field')}"
        if extra and path
        else (extra.group("field") if extra else path)
    )
    line = lines.get(key_path) or lines.get(path) or 1
    return ConfigError(
        f"{source}:{line}: {key_path or '<top level>'}: {detail}",
        hint="see examples/ for the shape of each section",
    )


def _check_references(config: Config, source: str, lines: dict[str, int]) -> None:
    """What the types cannot say: names that must refer to each other."""

    def fail(path: str, message: str) -> None:
        raise ConfigError(f"{source}:{lines.get(path, 1)}: {path}: {message}")

    _check_plugins(config, fail)
    provider_names = [p.name for p in config.providers]
    for i, name in enumerate(provider_names):
        if name in provider_names[:i]:
            fail(f"providers[{i}].name", f"provider {name!r} is defined twice")
    for i, p in enumerate(config.providers):
        if p.kind == "openai-compatible" and not p.base_url:
            fail(f"providers[{i}].base_url", "an openai-compatible provider needs a base_url")
    for i, m in enumerate(config.models):
        if m.provider != LOCAL_PROVIDER and m.provider not in provider_names:
            known = ", ".join([*provider_names, LOCAL_PROVIDER])
            plugins = ", ".join(entrypoints.names(entrypoints.PROVIDERS)) or "none"
            fail(
                f"models[{i}].provider",
                f"unknown provider {m.provider!r} (known: {known}; "
                f"provider plugins installed: {plugins})",
            )
        if not 0.0 <= m.quality <= 1.0:
            fail(f"models[{i}].quality", "quality is a score between 0 and 1")
        if m.price is not None:
            for key in (
                "input_per_mtok",
                "output_per_mtok",
                "cached_input_per_mtok",
                "cache_write_per_mtok",
                "per_gpu_second",
            ):
                value = getattr(m.price, key)
                if value is not None and value < 0:
                    fail(f"models[{i}].price.{key}", "a price cannot be negative")
    names = config.model_names() | set(config.routes)
    for route, r in config.routes.items():
        if route in config.model_names():
            fail(f"routes.{route}", f"{route!r} is both a route and a model name")
        if not r.candidates:
            fail(f"routes.{route}.candidates", "a route needs at least one candidate")
        for j, c in enumerate(r.candidates):
            if c not in names or c == route:
                fail(f"routes.{route}.candidates[{j}]", f"unknown model or route {c!r}")
        if r.weights is not None and len(r.weights) != len(r.candidates):
            fail(f"routes.{route}.weights", "weights need one number per candidate")
        if r.strategy == "weighted" and r.weights is None:
            fail(f"routes.{route}.weights", "the weighted strategy needs weights")
        if r.strategy == "custom" and not r.router:
            fail(f"routes.{route}.router", "the custom strategy needs a router")
    for i, name in enumerate(config.router_training.routes):
        if name not in names:
            fail(f"router_training.routes[{i}]", f"unknown model or route {name!r}")
    for i, b in enumerate(config.budgets):
        if b.limit_usd < 0:
            fail(f"budgets[{i}].limit_usd", "a budget cannot be negative")
        if b.scope != "global" and not b.name:
            fail(f"budgets[{i}].name", f"a {b.scope} budget needs the name of the {b.scope}")
        if b.scope == "global" and b.name:
            fail(f"budgets[{i}].name", "a global budget has no name")
        if not 0.0 <= b.soft_fraction <= 1.0:
            fail(f"budgets[{i}].soft_fraction", "soft_fraction is a share between 0 and 1")
        same = [
            j
            for j, o in enumerate(config.budgets[:i])
            if (o.scope, o.name, o.window) == (b.scope, b.name, b.window)
        ]
        if same:
            fail(f"budgets[{i}]", f"the same budget as budgets[{same[0]}]")
    if config.ledger.backend == "postgres" and not config.ledger.dsn:
        fail("ledger.dsn", "the postgres backend needs a dsn")
    if config.ledger.counter == "postgres" and not config.ledger.dsn:
        fail("ledger.counter", "counting budgets in PostgreSQL needs ledger.dsn")
    seen_keys: set[str] = set()
    for i, k in enumerate(config.keys):
        if k.key in seen_keys:
            fail(f"keys[{i}].key", "this key is listed twice")
        seen_keys.add(k.key)
    _check_keys(config, source, lines)
    _check_limits(config, source, lines)
    _check_guardrails(config, source, lines)
    if bool(config.tls.cert) != bool(config.tls.key):
        raise ConfigError(
            f"{source}:{lines.get('tls', 1)}: tls: give both cert and key, or neither"
        )


BUILTIN_CACHE_BACKENDS = ("memory", "redis")


def resolve_plugin_providers(config: Config) -> None:
    """A model whose provider is no configured one but an installed provider plugin gets
    that plugin as its provider (added to `providers` with the plugin's name); a name that
    is neither is left for the reference check to report. Entry points are only read when
    a model names an unconfigured provider, so a config without any costs nothing here."""
    configured = {p.name for p in config.providers}
    wanted = [
        m.provider
        for m in config.models
        if m.provider not in configured and m.provider != LOCAL_PROVIDER
    ]
    if not wanted:
        return
    installed = entrypoints.names(entrypoints.PROVIDERS)
    for name in dict.fromkeys(wanted):  # once each, in the order models name them
        if name in installed:
            config.providers.append(ProviderConfig(name=name, kind="plugin", plugin=name))


def _check_plugins(config: Config, fail: Callable[[str, str], None]) -> None:
    """Plugin names against the installed entry points (a model naming a plugin directly
    was resolved when the config was built: `resolve_plugin_providers`)."""
    explicit = [(i, p) for i, p in enumerate(config.providers) if p.kind == "plugin"]
    if explicit:
        installed = entrypoints.names(entrypoints.PROVIDERS)
        for i, p in explicit:
            name = p.plugin or p.name
            if name not in installed:
                fail(
                    f"providers[{i}].plugin",
                    f"no provider plugin {name!r} is installed "
                    f"(installed: {', '.join(installed) or 'none'})",
                )
    for i, p in enumerate(config.providers):
        if p.kind != "plugin" and (p.plugin is not None or p.options):
            fail(f"providers[{i}].kind", "plugin and options are for kind: plugin")
    backend = config.cache.backend
    if backend in BUILTIN_CACHE_BACKENDS:
        if config.cache.options:
            fail("cache.options", "options are for a plugin backend")
        return
    installed = entrypoints.names(entrypoints.CACHE_BACKENDS)
    if backend not in installed:
        fail(
            "cache.backend",
            f"unknown cache backend {backend!r} (built in: memory, redis; "
            f"plugins installed: {', '.join(installed) or 'none'})",
        )


def _check_limits(config: Config, source: str, lines: dict[str, int]) -> None:
    seen: dict[tuple[str, str | None], int] = {}
    for i, rule in enumerate(config.limits.rules):
        path = f"limits.rules[{i}]"
        where = f"{source}:{lines.get(path, 1)}: {path}"
        if rule.scope != "global" and not rule.name:
            raise ConfigError(f"{where}.name: a {rule.scope} limit needs the {rule.scope}'s name")
        if rule.scope == "global" and rule.name:
            raise ConfigError(f"{where}.name: a global limit has no name")
        if rule.rpm is None and rule.tpm is None and rule.max_parallel is None:
            raise ConfigError(f"{where}: set at least one of rpm, tpm, max_parallel")
        if (rule.scope, rule.name) in seen:
            first = seen[rule.scope, rule.name]
            raise ConfigError(f"{where}: the same scope as limits.rules[{first}]")
        seen[rule.scope, rule.name] = i


def _check_guardrails(config: Config, source: str, lines: dict[str, int]) -> None:
    names: dict[str, int] = {}
    for i, g in enumerate(config.guardrails):
        path = f"guardrails[{i}]"
        where = f"{source}:{lines.get(path, 1)}: {path}"
        if g.name in names:
            raise ConfigError(f"{where}.name: the same name as guardrails[{names[g.name]}]")
        names[g.name] = i
        if g.kind == "plugin" and not g.plugin:
            raise ConfigError(f"{where}.plugin: a plugin guardrail names its plugin")
        if g.kind == "prompt_injection" and g.action == "mask":
            raise ConfigError(f"{where}.action: prompt_injection can warn or block, not mask")


def _check_keys(config: Config, source: str, lines: dict[str, int]) -> None:
    """Credentials that would quietly weaken auth or merge two tenants."""

    def fail(path: str, message: str) -> None:
        raise ConfigError(f"{source}:{lines.get(path, 1)}: {path}: {message}")

    server = config.server
    for name in ("master_key", "metrics_key"):
        value = getattr(server, name)
        if value is not None and not value.strip():
            fail(f"server.{name}", "is empty: leave it out, or set a real key")
    if server.metrics_key and server.metrics_key == server.master_key:
        fail("server.metrics_key", "is the master key; give scraping a key of its own")
    names: dict[str, int] = {}
    for i, k in enumerate(config.keys):
        if not k.key.strip():
            fail(f"keys[{i}].key", "a virtual key cannot be empty")
        if k.key in (server.master_key, server.metrics_key):
            fail(f"keys[{i}].key", "is the master or metrics key; a virtual key needs its own")
        if k.name == "master":
            fail(f"keys[{i}].name", "`master` is the master key's name; choose another")
        if k.name in names:
            fail(f"keys[{i}].name", f"the same name as keys[{names[k.name]}]: names are tenants")
        names[k.name] = i
