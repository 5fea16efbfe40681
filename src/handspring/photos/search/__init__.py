"""Queries: parsing, the models that embed them, and the exact top-k over the index."""
