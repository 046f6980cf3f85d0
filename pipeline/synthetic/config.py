"""Configuration of the synthetic IR theatre (owned by pipeline/synthetic)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SyntheticConfig:
    movie: str = "synthmovie"      # movie name used for generated screenings
    sessions: int = 2              # screenings (audiences) per movie
    duration_s: float = 60.0       # length of each recording, seconds
    seed: int = 0                  # every random choice derives from this
