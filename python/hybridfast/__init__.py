"""hybridfast: a hybrid AI gateway with a Rust core.

`python -m hybridfast serve` runs the HTTP gateway; `hybridfast.Gateway` embeds the same
pipeline in-process. Money is integer picodollars throughout (see `hybridfast._core`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hybridfast._core import HybridfastError, __version__

if TYPE_CHECKING:
    from hybridfast.pipeline.gateway import Gateway

__all__ = ["Gateway", "HybridfastError", "__version__"]


def __getattr__(name: str) -> Any:
    # The pipeline pulls in aiohttp and the providers: load it only when asked for.
    if name == "Gateway":
        from hybridfast.pipeline.gateway import Gateway

        return Gateway
    raise AttributeError(f"module 'hybridfast' has no attribute {name!r}")
