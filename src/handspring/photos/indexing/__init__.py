"""Turning found photos into stored vectors: the indexer, its pacing and its progress."""
