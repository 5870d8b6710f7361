"""Type stubs for `hybridfast._core`, the native core (Rust, PyO3).

Money is integer picodollars (10⁻¹² USD) everywhere. Each section below belongs to one part
of the core; keep them in the order of `rust/python/src/lib.rs`.
"""

from collections.abc import Sequence
from typing import Any, Final, Protocol, final

__version__: Final[str]

# --- errors (rust/python/src/errors.rs) -------------------------------------------------

class HybridfastError(Exception):
    """Base of every hybridfast error. `code` is the stable error code (a class attribute
    of each subclass, so errors raised from Python have it too: `ERR_INTERNAL` on the base);
    `details` what the core knows beyond the message (read it, do not change it)."""

    code: str
    details: dict[str, Any]

class InvalidArgumentError(HybridfastError): ...
class NotFoundError(HybridfastError): ...

class BudgetExceededError(HybridfastError):
    """`details` and the attributes: `scope` (the budget's label, `team:research/month`)
    and `remaining` (picodollars left)."""

    scope: str
    remaining: int

class NoCandidatesError(HybridfastError): ...
class DimensionError(HybridfastError): ...
class StorageError(HybridfastError): ...
class OverflowError(HybridfastError): ...

# --- money (rust/python/src/money.rs) ---------------------------------------------------

PICODOLLARS_PER_USD: Final[int]

@final
class Price:
    """A deployment's prices in picodollars per token (= dollars per Mtok × 10⁶)."""

    def __new__(
        cls,
        input: int = 0,
        output: int = 0,
        cached_input: int | None = None,
        cache_write: int | None = None,
    ) -> Price: ...
    @staticmethod
    def per_mtok(
        input: str, output: str, cached_input: str | None = None, cache_write: str | None = None
    ) -> Price:
        """From decimal dollars per million tokens, as strings (no float touches money)."""
    @property
    def input(self) -> int: ...
    @property
    def output(self) -> int: ...
    @property
    def cached_input(self) -> int: ...
    @property
    def cache_write(self) -> int: ...
    def cost(
        self,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cached_input_tokens: int = 0,
        cache_write_tokens: int = 0,
        reasoning_tokens: int = 0,
    ) -> int:
        """The exact cost in picodollars; raises InvalidArgumentError if parts exceed wholes."""

def parse_usd(text: str) -> int:
    """Parses a decimal dollar string exactly into picodollars."""

def format_usd(picodollars: int) -> str:
    """Formats picodollars as an exact decimal dollar string."""

def gpu_time_cost(per_second: int, seconds: float) -> int:
    """The charge in picodollars for `seconds` of a local GPU priced at `per_second`
    picodollars per GPU-second: the exact product of the price and the time (the float as
    given), rounded to the picodollar (half to even). Raises InvalidArgumentError for a negative or
    non-finite time, OverflowError (the core's) past what an i64 holds."""

# --- router (rust/python/src/router.rs) -------------------------------------------------

CAPABILITIES: Final[list[str]]
"""Capability names with a fixed bit, in bit order: tools, vision, json, embeddings."""

@final
class DeploymentSpec:
    """One deployment's static facts, as the router needs them. `capabilities` and `tags`
    are bit masks (the caller numbers the names); `gpu_second` is picodollars."""

    def __new__(
        cls,
        id: str,
        name: str,
        *,
        local: bool = False,
        quality: float = 0.5,
        price: Price | None = None,
        gpu_second: int = 0,
        context_window: int | None = None,
        max_output_tokens: int | None = None,
        capabilities: int = 0,
        tags: int = 0,
        max_concurrency: int | None = None,
        ttft_s: float | None = None,
        tokens_per_s: float | None = None,
    ) -> DeploymentSpec: ...
    @property
    def id(self) -> str: ...

@final
class RouteSpec:
    """A route: `name` resolved over `candidates` (groups or routes) by `strategy`.
    `max_cost` is picodollars; `balance` is (cost, latency, quality) weights."""

    def __new__(
        cls,
        name: str,
        strategy: str,
        candidates: list[str],
        *,
        weights: list[float] | None = None,
        min_quality: float | None = None,
        max_cost: int | None = None,
        balance: tuple[float, float, float] = ...,  # (1.0, 1.0, 1.0)
        downgrade_on_budget: bool = True,
    ) -> RouteSpec: ...

@final
class RouterCore:
    """The native routing engine; thread-safe (state behind per-deployment locks and
    atomics). Every deployment group is a name of its own with `group_strategy`."""

    def __new__(
        cls,
        deployments: list[DeploymentSpec],
        routes: list[RouteSpec],
        payloads: list[Any],
        *,
        group_strategy: str = "balanced",
        ewma_alpha: float = 0.2,
        default_ttft_s: float = 0.5,
        default_tokens_per_s: float = 50.0,
        expected_output_tokens: int = 256,
        failures_to_open: int = 5,
        error_rate_to_open: float = 0.5,
        window_s: float = 30.0,
        min_requests: int = 10,
        cooldown_s: float = 15.0,
        jitter: float = 0.2,
        successes_to_close: int = 2,
        probe_timeout_s: float = 60.0,
        max_queue: int = 0,
        local_max_wait_s: float = ...,
    ) -> RouterCore:
        """`max_queue`: requests that may wait at a deployment beyond its `max_concurrency`
        before it is left out as saturated (the gateway's admission queue); their expected
        wait counts in the time a latency-minded strategy sees. `local_max_wait_s`: past this
        expected wait a local deployment goes last in `local-first` (overflow to the cloud);
        infinite by default."""
    def plan(
        self,
        name: str,
        request_id: str = "",
        input_tokens: int = 0,
        max_output_tokens: int | None = None,
        stream: bool = False,
        needs: int = 0,
        tags: int = 0,
        local_only: bool = False,
        budget_remaining: int | None = None,
    ) -> (
        tuple[
            list[Any],
            list[tuple[str, str]],
            str,
            str | None,
            dict[str, float],
            bool,
            str | None,
        ]
        | None
    ):
        """One decision. `None` for an unknown name, else `(payloads in order, [(id, reason)]
        dropped, strategy, arm, {id: score}, refused_for_budget, probed id)`."""
    def started(self, id: str) -> None:
        """A call to deployment `id` began (NotFoundError for an unknown id)."""
    def finished(
        self,
        id: str,
        *,
        ok: bool,
        latency_s: float,
        ttft_s: float | None = None,
        output_tokens: int = 0,
    ) -> None:
        """A call ended: feeds latency EWMAs, the error window and the circuit breaker."""
    def set_hardware(self, id: str, load: float | None) -> None:
        """The state of the hardware deployment `id` runs on: a load in 0..1 (a busier GPU
        ranks the replica lower), or None when it is down (left out until set again)."""
    def abandoned(self, id: str) -> None:
        """A call ended with no verdict on the deployment: the in-flight count drops and a
        half-open probe slot it held is freed; error window and latencies do not change."""
    def stats(self, id: str) -> dict[str, Any]:
        """Live state: in_flight, latency_s, ttft_s, tokens_per_s, error_rate,
        window_requests, consecutive_failures, circuit, retry_in_s, successes, failures,
        times_opened."""
    def expected_cost(
        self, id: str, input_tokens: int, max_output_tokens: int | None = None, stream: bool = False
    ) -> int:
        """Picodollars (rounded up) the router expects the request to cost on `id`."""
    def names(self) -> list[str]: ...
    def deployment_ids(self) -> list[str]: ...
    def strategy(self, name: str) -> str | None: ...
    @staticmethod
    def score_meaning(strategy: str) -> str: ...

def request_hash(request_id: str) -> int:
    """The stable 64-bit hash a weighted route splits request ids by."""

# --- ledger (rust/python/src/ledger.rs) -------------------------------------------------

LEDGER_SCHEMA: Final[str]
"""The SQLite schema of the ledger's entries."""
LEDGER_SUMMARY_QUERY: Final[str]
"""The `GROUP BY` (per hour and dimension) that rebuilds the books from a store."""

class _Caller(Protocol):
    @property
    def key_name(self) -> str | None: ...
    @property
    def user(self) -> str | None: ...
    @property
    def team(self) -> str | None: ...
    @property
    def tags(self) -> Sequence[str]: ...

class _Usage(Protocol):
    @property
    def input_tokens(self) -> int: ...
    @property
    def output_tokens(self) -> int: ...
    @property
    def cached_input_tokens(self) -> int: ...
    @property
    def cache_write_tokens(self) -> int: ...
    @property
    def reasoning_tokens(self) -> int: ...
    @property
    def estimated(self) -> bool: ...

class _LedgerRecord(Protocol):
    """What `Ledger.settle` reads: the attributes of `hybridfast.types.LedgerRecord`."""

    @property
    def request_id(self) -> str: ...
    @property
    def caller(self) -> _Caller: ...
    @property
    def route(self) -> str: ...
    @property
    def deployment(self) -> str | None: ...
    @property
    def provider(self) -> str | None: ...
    @property
    def model(self) -> str | None: ...
    @property
    def usage(self) -> _Usage: ...
    @property
    def cost(self) -> int: ...
    @property
    def saved_cost(self) -> int: ...
    @property
    def latency_ms(self) -> float: ...
    @property
    def ttft_ms(self) -> float | None: ...
    @property
    def status(self) -> int: ...
    @property
    def cache(self) -> str: ...
    @property
    def fallbacks(self) -> int: ...
    @property
    def timestamp(self) -> float: ...
    @property
    def parent_id(self) -> str | None: ...

@final
class BudgetWindows:
    """The budgets a shared counter (Redis, PostgreSQL) keeps, and which of them apply to a
    request in which window: the same matching and calendar as `Ledger`. `total` windows
    are `(0, 0)`."""

    def __new__(cls, budgets: list[tuple[str, str | None, str, int, float]]) -> BudgetWindows:
        """`budgets`: `(scope, name, window, limit_picodollars, soft_fraction)` tuples."""
    def applicable(
        self,
        key: str | None,
        user: str | None,
        team: str | None,
        model_group: str | None,
        now_ms: int | None = None,
    ) -> list[tuple[int, int, int]]:
        """`(index, window_start_ms, window_end_ms)` of every budget that applies."""
    def __len__(self) -> int: ...

def budget_window(window: str, now_ms: int | None = None) -> tuple[int, int]:
    """`(start_ms, end_ms)` of the window (hour, day, month, total) holding `now_ms`, as a
    shared counter keys it: `total` is `(0, 0)`."""

@final
class Ledger:
    """The ledger's books in the native core: budgets with reserve/settle/release, hourly
    aggregates by key, user, team, model group, deployment, provider and route (`i128`
    sums), and the queue of settled entries waiting for the store. Thread-safe."""

    def __new__(
        cls,
        budgets: list[tuple[str, str | None, str, int, float]] = ...,
        now_ms: int | None = None,
    ) -> Ledger:
        """`budgets`: `(scope, name, window, limit_picodollars, soft_fraction)` tuples."""
    def set_budget(
        self,
        scope: str,
        name: str | None,
        window: str,
        limit: int,
        soft_fraction: float = 0.8,
        now_ms: int | None = None,
    ) -> None:
        """Adds a budget, or changes the limit of the one with the same scope, name, window."""
    def remove_budget(self, scope: str, name: str | None, window: str) -> bool:
        """Removes a budget; False when there was none."""
    def budgets(
        self, now_ms: int | None = None
    ) -> list[tuple[str, str | None, str, int, float, int, int, int]]:
        """`(scope, name, window, limit, soft_fraction, window_start_ms, spent, reserved)`."""
    def reserve(
        self,
        key: str | None,
        user: str | None,
        team: str | None,
        model_group: str | None,
        amount: int,
        now_ms: int | None = None,
    ) -> int:
        """Holds `amount` against every budget that applies, all or none; returns the hold's
        handle. Raises `BudgetExceededError` with `scope` and `remaining` (attributes and
        `details`)."""
    def release(self, handle: int) -> bool:
        """Drops a hold without spending; False when already settled or released."""
    def settle(
        self, handle: int, record: _LedgerRecord, model_group: str | None = None
    ) -> tuple[int, list[int]]:
        """Books a finished request, queues it for the store; returns `(seq, soft_crossed)`
        (indexes in `budgets()` that just crossed their soft limit). `handle` 0: no hold.
        `record` is read by attribute (`hybridfast.types.LedgerRecord`); a field of the
        wrong type or sign raises InvalidArgumentError and books nothing."""
    def remaining(
        self,
        key: str | None,
        user: str | None,
        team: str | None,
        model_group: str | None = None,
        now_ms: int | None = None,
    ) -> int | None:
        """The smallest amount left across the budgets that apply (None: none applies)."""
    def report(
        self,
        by: str = "total",
        period: str | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
    ) -> list[tuple[Any, ...]]:
        """Rows `(group, period_start_ms, requests, errors, estimated, cache_hits,
        input_tokens, output_tokens, cached_input_tokens, cache_write_tokens,
        reasoning_tokens, cost, saved_cost)`, by total/key/user/team/model/deployment/
        provider/route and optionally hour/day/month."""
    def load_summary(
        self,
        hour_ms: int,
        key: str | None,
        user: str | None,
        team: str | None,
        model_group: str | None,
        deployment: str | None,
        provider: str | None,
        route: str | None,
        requests: int,
        errors: int,
        estimated: int,
        cache_hits: int,
        input_tokens: int,
        output_tokens: int,
        cached_input_tokens: int,
        cache_write_tokens: int,
        reasoning_tokens: int,
        cost: int,
        saved_cost: int,
    ) -> None:
        """Rebuilds from one row of `LEDGER_SUMMARY_QUERY`."""
    def take_pending(self, max: int = 4096, timeout_s: float = 0.0) -> list[tuple[Any, ...]]:
        """Up to `max` queued entries (seq first, then the store's columns), waiting up to
        `timeout_s` without the interpreter."""
    def pending_len(self) -> int: ...
    def wake(self) -> None:
        """Wakes a writer waiting for entries."""

@final
class SqliteRows:
    """One connection to a SQLite rows file (the request log's): values are converted once
    per call, the SQLite work runs with the interpreter lock released."""

    def __new__(cls, target: str, uri: bool = False, synchronous_full: bool = False) -> SqliteRows:
        """Opens (creating) `target`: a path (WAL; FULL or NORMAL sync) or a `file:` URI."""
    def execute(self, sql: str, params: Sequence[Any] | None = None) -> int:
        """Runs one statement; returns the number of rows it changed."""
    def execute_all(self, statements: list[str]) -> None:
        """Runs the statements in one transaction: all of them or none."""
    def query(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        """The rows of a query, as tuples."""
    def insert_all(self, insert: str, rows: Sequence[Sequence[Any]]) -> None:
        """Inserts every row with a one-row statement, in one transaction."""
    def close(self) -> None:
        """Closes the connection; later calls raise `StorageError`."""

@final
class SqliteJournal:
    """The durable store in a SQLite file (WAL); `flush` is the background writer's step."""

    def __new__(
        cls, path: str, synchronous_full: bool = True, read_only: bool = False
    ) -> SqliteJournal: ...
    def flush(self, ledger: Ledger, max: int = 65536, timeout_s: float = 0.0) -> int:
        """Writes queued entries in one transaction; returns the highest seq now durable
        (0: none). On error, requeues them and raises `StorageError`."""
    def leave_checkpoints_to_caller(self) -> None:
        """Stops commits from running SQLite's automatic checkpoint; `checkpoint` from
        another thread does it instead."""
    def checkpoint(self) -> None:
        """Copies the committed write-ahead log into the database file over a second
        connection, without blocking `flush` (PASSIVE)."""
    def load_into(self, ledger: Ledger) -> int:
        """Rebuilds the books from every stored entry; returns how many were read."""
    def budgets(self) -> list[tuple[str, str, str, int, float, bool]]:
        """Budgets changed through the admin API: `(scope, name or "", window, limit,
        soft_fraction, deleted)`."""
    def save_budget(
        self,
        scope: str,
        name: str | None,
        window: str,
        limit: int,
        soft_fraction: float,
        deleted: bool = False,
    ) -> None:
        """Keeps a budget change (or removal) in the file."""
    def export_page(
        self,
        since_ms: int | None = None,
        until_ms: int | None = None,
        after_id: int = 0,
        limit: int = 4096,
        parent_id: str | None = None,
    ) -> list[tuple[Any, ...]]:
        """Stored entries after row `after_id` (given `parent_id`, one prompt chain's steps):
        the row id, then the store's columns."""
    def count(self) -> int: ...

# --- cache (rust/python/src/cache.rs) ---------------------------------------------------

import numpy as _cnp  # noqa: E402
import numpy.typing as _cnpt  # noqa: E402

@final
class HashingEmbedder:
    """The built-in hashing embedder: word, word-bigram and character 3/4-gram features,
    signed feature hashing, L2-normalised rows. Deterministic, no model, no network."""

    def __new__(cls, dimensions: int = 384) -> HashingEmbedder: ...
    @property
    def dimensions(self) -> int: ...
    @property
    def name(self) -> str: ...
    def embed(self, texts: list[str]) -> _cnpt.NDArray[_cnp.float32]:
        """float32 array of shape (len(texts), dimensions); an empty text is the zero row."""

@final
class VectorIndex:
    """Normalised vectors partitioned by scope: an exact SIMD scan for small scopes, an HNSW
    graph from `ann_threshold` entries. Scores are cosines. Thread-safe; searches release
    the GIL."""

    def __new__(
        cls,
        dimensions: int,
        storage: str = "f32",
        m: int = 16,
        ef_construction: int = 64,
        ef_search: int = 96,
        ann_threshold: int = 4096,
    ) -> VectorIndex: ...
    @property
    def dimensions(self) -> int: ...
    @property
    def storage(self) -> str: ...
    def __len__(self) -> int: ...
    def __contains__(self, id: int, /) -> bool: ...
    def add(
        self,
        scope: int,
        ids: _cnpt.NDArray[_cnp.int64],
        vectors: _cnpt.NDArray[_cnp.float32],
    ) -> None:
        """Adds (or replaces) rows of `vectors` (n, dimensions) under `ids` (n,) in `scope`."""
    def search(
        self,
        scope: int,
        queries: _cnpt.NDArray[_cnp.float32],
        k: int = 10,
        ef: int | None = None,
        exact: bool = False,
    ) -> tuple[
        _cnpt.NDArray[_cnp.int64],
        _cnpt.NDArray[_cnp.float32],
    ]:
        """(ids (n, k), scores (n, k)) best first, padded with -1 / -inf."""
    def search_one(
        self,
        scope: int,
        query: _cnpt.NDArray[_cnp.float32],
        k: int = 10,
        ef: int | None = None,
        exact: bool = False,
    ) -> list[tuple[int, float]]:
        """[(id, cosine), ...] best first for one query of shape (dimensions,)."""
    def export_scope(
        self, scope: int
    ) -> tuple[
        _cnpt.NDArray[_cnp.int64],
        _cnpt.NDArray[_cnp.float32],
    ]: ...
    def remove(self, id: int) -> bool: ...
    def remove_scope(self, scope: int) -> list[int]: ...
    def clear(self) -> int: ...
    def scopes(self) -> list[tuple[int, int, bool]]:
        """[(scope, live entries, has an HNSW graph), ...]."""
    def save(self, path: str) -> None:
        """Writes a snapshot atomically (temporary file + rename)."""
    @staticmethod
    def load(path: str) -> VectorIndex:
        """Reads a snapshot; raises StorageError when it is damaged."""

@final
class ExactTable:
    """Byte keys → byte values with a TTL each and an LRU bound; times in unix seconds."""

    def __new__(cls, max_entries: int = 100_000) -> ExactTable: ...
    def get(self, key: bytes, now: float | None = None) -> bytes | None: ...
    def peek(self, key: bytes, now: float | None = None) -> tuple[bytes, float, int] | None: ...
    def put(
        self, key: bytes, value: bytes, ttl_s: float, scope: int = 0, now: float | None = None
    ) -> list[bytes]:
        """Stores `value`; returns the keys evicted to make room."""
    def put_until(
        self,
        key: bytes,
        value: bytes,
        expires_at: float,
        scope: int = 0,
        now: float | None = None,
    ) -> list[bytes]: ...
    def remove(self, key: bytes) -> bool: ...
    def remove_scope(self, scope: int) -> list[bytes]: ...
    def purge_expired(self, now: float | None = None) -> list[bytes]: ...
    def clear(self) -> int: ...
    def keys(self) -> list[bytes]:
        """Least to most recently used."""
    def __len__(self) -> int: ...
    @property
    def max_entries(self) -> int: ...
    @property
    def evictions(self) -> int: ...
    @property
    def expirations(self) -> int: ...
    def save(self, path: str, now: float | None = None) -> None: ...
    @staticmethod
    def load(path: str, max_entries: int = 100_000, now: float | None = None) -> ExactTable: ...

# --- rate limits (rust/python/src/ratelimit.rs) -----------------------------------------

@final
class RateDecision:
    """The answer to `RateLimiter.acquire`. `requests` and `tokens` are `(limit, remaining,
    reset_ms)` of the tightest scope of that kind, or None when no scope limits it."""

    @property
    def allowed(self) -> bool: ...
    @property
    def denied_scope(self) -> str | None: ...
    @property
    def denied_kind(self) -> str | None:
        """ "requests", "tokens" or "parallel"."""
    @property
    def retry_after_ms(self) -> int | None:
        """Milliseconds to wait; None when the request can never fit (larger than the
        limit)."""
    @property
    def requests(self) -> tuple[int, int, int] | None: ...
    @property
    def tokens(self) -> tuple[int, int, int] | None: ...

@final
class RateLimiter:
    """Requests and tokens per minute (exact GCRA) and concurrent requests, per scope; a
    request is admitted under all the scopes it names or under none."""

    def __new__(cls) -> RateLimiter: ...
    def configure(
        self,
        scope: str,
        rpm: int | None = None,
        tpm: int | None = None,
        max_parallel: int | None = None,
    ) -> None:
        """Sets a scope's limits (None: unlimited); raises InvalidArgumentError for 0."""
    def remove(self, scope: str) -> None: ...
    def limits(self, scope: str) -> tuple[int | None, int | None, int | None] | None:
        """(rpm, tpm, max_parallel) of a configured scope."""
    def acquire(self, scopes: list[str], tokens: int, now_ms: int) -> RateDecision: ...
    def settle(self, scopes: list[str], estimated: int, actual: int, now_ms: int) -> None: ...
    def in_flight(self, scope: str) -> int: ...

# --- embed (rust/python/src/embed.rs) ---------------------------------------------------

import numpy as _np  # noqa: E402
import numpy.typing as _npt  # noqa: E402

@final
class LocalEmbedder:
    """A BERT sentence-embedding model (all-MiniLM-L6-v2) run natively: WordPiece tokenizer,
    encoder, mean pooling, L2 normalisation. Every bulk call releases the GIL and spreads the
    batch over `threads` threads."""

    def __new__(cls, path: str, max_tokens: int = 256, threads: int = 0) -> LocalEmbedder:
        """Loads `vocab.txt`, `config.json` and `model.safetensors` from `path`; `threads` 0
        means one per core. Raises StorageError when a file is missing or malformed."""
    @property
    def dimensions(self) -> int:
        """The vector size (384 for MiniLM)."""
    @property
    def max_tokens(self) -> int:
        """The longest input in tokens, `[CLS]`/`[SEP]` included; longer texts are truncated."""
    @property
    def threads(self) -> int: ...
    @property
    def vocab_size(self) -> int: ...
    def embed(self, texts: list[str]) -> _npt.NDArray[_np.float32]:
        """Embeds texts: a float32 array of shape `(len(texts), dimensions)`, rows
        L2-normalised."""
    def embed_counted(self, texts: list[str]) -> tuple[_npt.NDArray[_np.float32], list[int]]:
        """As `embed`, with the number of tokens the model read for each text (for usage)."""
    def embed_ids(self, inputs: list[list[int]]) -> tuple[_npt.NDArray[_np.float32], list[int]]:
        """Embeds pre-tokenized inputs (ids of this model's vocabulary; `[CLS]`/`[SEP]` are
        added). Returns the array and each input's token count; raises InvalidArgumentError
        for an id outside the vocabulary."""
    def tokenize(self, texts: list[str]) -> list[list[int]]:
        """The ids the model reads for each text (`[CLS]` … `[SEP]`, truncated to
        `max_tokens`)."""

# --- scheduling -----------------------------------------------------------------------------

@final
class FairQueue:
    """A concurrency limit with a bounded waiting queue: lower priority numbers start first,
    tenants of one priority take turns (round robin), and a waiter of a lower priority that
    has waited `starvation_ms` goes first. The queue decides; the caller owns the waiting."""

    def __new__(cls, limit: int, max_queue: int, starvation_ms: int) -> FairQueue: ...
    def acquire(self, tenant: str, priority: int, now_ms: int) -> int:
        """0: start now; a positive ticket: wait until `release` returns it; -1: queue full."""
    def release(self, now_ms: int) -> int | None:
        """A running request finished: the ticket that now holds its slot, if any waited."""
    def cancel(self, ticket: int) -> bool:
        """Withdraw a waiting ticket; False when it already holds a slot (release it then)."""
    def set_limit(self, limit: int) -> None: ...
    def load(self) -> tuple[int, int]:
        """(running, waiting)."""
