"""The HTTP layer: the aiohttp app factory, handlers, and the wire encodings."""
