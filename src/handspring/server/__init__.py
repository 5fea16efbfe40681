"""`handspring serve`: one process speaking the OpenAI, Weaviate, TEI and original
photo-search embedding contracts, with dynamic batching, limits and metrics."""
