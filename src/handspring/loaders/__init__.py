"""One loader per model family: from a checkpoint folder to a `Model` with its towers."""
