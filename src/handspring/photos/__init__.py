"""Photo search: walk photo folders, record metadata and CLIP image embeddings in
an index (SQLite by default, or Qdrant), and search it by text in any language,
by example photos, or by combinations of both (`handspring photos ...`)."""
