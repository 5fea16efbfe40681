"""Running models for requests: the model pool, batching, and the embedding service."""
