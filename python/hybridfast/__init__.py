"""hybridfast: a hybrid AI gateway with a Rust core.

`python -m hybridfast serve` runs the HTTP gateway; `hybridfast.Gateway` embeds the same
pipeline in-process. Money is integer picodollars throughout (see `hybridfast._core`).
"""

from hybridfast._core import HybridfastError, __version__

__all__ = ["HybridfastError", "__version__"]
