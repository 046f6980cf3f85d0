"""Configuration sections of the models (owned by models/)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelsConfig:
    k: int = 10                    # latent dimension K


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0


@dataclass(frozen=True)
class EvaluateConfig:
    seed: int = 0
