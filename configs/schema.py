"""The root configuration: one typed section per component.

Each component owns its section's dataclass in a light module (no heavy
imports), so this file only composes them. configs/default.yaml documents
every field; tests check that the two agree.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from configs import DEFAULT_YAML
from configs.loader import ConfigError, load, parse_override, read_yaml
from models.config import EvaluateConfig, ModelsConfig, TrainConfig
from pipeline.synthetic.config import SyntheticConfig
from pipeline.vision_config import (BinningConfig, DetectConfig, FrontalizeConfig, LandmarksConfig,
                                    MembersConfig, SourcesConfig)


@dataclass(frozen=True)
class WorkspaceConfig:
    root: str = "data"          # workspace folder: raw/, cache/, tensors/, runs/ live under it
    workers: int = 1            # parallel worker processes per stage (--workers overrides)
    executor: Literal["local", "ray"] = "local"   # where units run: local processes, or Ray tasks (--executor)

    def __post_init__(self):
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.executor not in ("local", "ray"):
            raise ValueError(f"workspace.executor must be 'local' or 'ray', got {self.executor!r}")


@dataclass(frozen=True)
class RayConfig:
    address: str = ""           # "" starts Ray on this machine with workspace.workers CPUs; "auto" or host:port
                                # (or ray://host:10001) joins a running cluster
    max_retries: int = 3        # times Ray reruns a task whose worker process died

    def __post_init__(self):
        if self.max_retries < 0:
            raise ValueError(f"ray.max_retries must be >= 0, got {self.max_retries}")


@dataclass(frozen=True)
class ProjectConfig:
    workspace: WorkspaceConfig = field(default_factory=WorkspaceConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    sources: SourcesConfig = field(default_factory=SourcesConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    landmarks: LandmarksConfig = field(default_factory=LandmarksConfig)
    frontalize: FrontalizeConfig = field(default_factory=FrontalizeConfig)
    members: MembersConfig = field(default_factory=MembersConfig)
    binning: BinningConfig = field(default_factory=BinningConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)

    def replace(self, **sections) -> "ProjectConfig":
        return dataclasses.replace(self, **sections)


def load_config(files: list[str | Path] = (), overrides: list[str] = (),
                include_default: bool = True) -> ProjectConfig:
    """defaults ← configs/default.yaml ← each file ← each `section.key=value` override."""
    layers = []
    if include_default:
        layers.append((str(DEFAULT_YAML), read_yaml(DEFAULT_YAML)))
    for path in files:
        layers.append((str(path), read_yaml(Path(path))))
    for text in overrides:
        layers.append((f"command-line override '{text}'", parse_override(text)))
    return load(ProjectConfig, layers)


__all__ = ["ProjectConfig", "WorkspaceConfig", "load_config", "ConfigError"]
