"""Embeddings: `POST /v1/embeddings`, the local models and dynamic batching."""
