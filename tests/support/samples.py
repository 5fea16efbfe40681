"""Sample inputs shared by tests and benchmarks (importing this has no side effects)."""

from __future__ import annotations

TEXTS = [
    "a photo of a cat",
    "A DOG running on the beach at sunset!",
    "",
    "   ",
    "über café naïve — ünïcödé",
    "東京の夜景",
    "🐱🐶 emoji 👍🏽",
    "word " * 120,
    "it's a 3.14 test, isn't it?",
]
