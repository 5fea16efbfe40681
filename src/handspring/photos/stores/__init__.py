"""Where the index lives: the store interface, SQLite and Qdrant."""
