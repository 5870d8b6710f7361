"""`Gateway`: the pipeline's facade (construction, the Python API). Moving here from
`hybridfast.gateway`; import it from this module."""

from __future__ import annotations

from hybridfast.gateway import ChatResult, ChatStream, Gateway

__all__ = ["ChatResult", "ChatStream", "Gateway"]
