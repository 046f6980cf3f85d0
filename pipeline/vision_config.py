"""Configuration sections of the vision stages (owned by the vision stages)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SourcesConfig:
    sample_every_s: float = 0.5    # analyse one frame every this many seconds
    chunk_s: float = 60.0          # recordings are processed in chunks of this length


@dataclass(frozen=True)
class DetectConfig:
    pass


@dataclass(frozen=True)
class LandmarksConfig:
    pass


@dataclass(frozen=True)
class FrontalizeConfig:
    pass


@dataclass(frozen=True)
class MembersConfig:
    pass


@dataclass(frozen=True)
class BinningConfig:
    bin_seconds: float = 1.0       # length of one tensor time bin
