"""The photo index in a Qdrant collection: embedded (a folder) or on a server."""
