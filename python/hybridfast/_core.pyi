"""Type stubs for `hybridfast._core`, the native core (Rust, PyO3).

Money is integer picodollars (10⁻¹² USD) everywhere. Each section below belongs to one part
of the core; keep them in the order of `rust/python/src/lib.rs`.
"""

from typing import Final, final

__version__: Final[str]

# --- errors (rust/python/src/errors.rs) -------------------------------------------------

class HybridfastError(Exception):
    """Base of every hybridfast error; `code` is the stable error code."""

    code: str

class InvalidArgumentError(HybridfastError): ...
class NotFoundError(HybridfastError): ...
class BudgetExceededError(HybridfastError): ...
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

# --- router (rust/python/src/router.rs) -------------------------------------------------

# --- ledger (rust/python/src/ledger.rs) -------------------------------------------------

# --- cache (rust/python/src/cache.rs) ---------------------------------------------------

# --- embed (rust/python/src/embed.rs) ---------------------------------------------------
