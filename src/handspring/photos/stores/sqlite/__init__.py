"""The photo index in one SQLite file (WAL)."""
