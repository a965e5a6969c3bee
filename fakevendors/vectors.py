"""The embedding fakes' vectors and token counts: the same text always gets the same vector.

A test recomputes ``vector(text, dimensions)`` to check that each input's vector came back in
its place; ``tokens(text)`` (one per word, at least one) is what the fakes report.
"""

from __future__ import annotations

import random


def vector(text: str, dimensions: int) -> list[float]:
    rng = random.Random(f"{dimensions}:{text}")  # str seeds hash with SHA-512: stable across runs
    return [round(rng.uniform(-1.0, 1.0), 6) for _ in range(dimensions)]


def tokens(text: str) -> int:
    return max(1, len(text.split()))
