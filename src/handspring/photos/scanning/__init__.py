"""Finding the photos of the roots: walking, reading and metadata, and deciding deletions."""
