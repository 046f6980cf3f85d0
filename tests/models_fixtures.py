"""Tiny generated tensors and configs for the models tests (seconds on 2 CPU cores)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from configs.schema import ProjectConfig
from models.config import EvaluateConfig, ModelsConfig, TFConfig, TrainConfig
from models.synthetic_tensor import SyntheticSpec, make_synthetic_movie
from pipeline.store import MovieTensor, write_movie_tensor

TINY_SPEC = SyntheticSpec(n_members=8, n_seconds=30, k_true=2, n_groups=2, seed=3)


def tiny_tensor(spec: SyntheticSpec = TINY_SPEC) -> MovieTensor:
    return make_synthetic_movie(spec)[0]


def write_tiny_tensor(folder: Path, spec: SyntheticSpec = TINY_SPEC, name: str = "tiny.h5") -> Path:
    return write_movie_tensor(Path(folder) / name, tiny_tensor(spec))


def tiny_config(**train) -> ProjectConfig:
    """Small networks, two epochs, CPU, no progress bars, short protocol lists."""
    return ProjectConfig(
        models=ModelsConfig(k=3, hidden=16, layers=2, tf=TFConfig(max_iters=30)),
        train=TrainConfig(**{"epochs": 2, "batch_size": 32, "device": "cpu", "progress": False, **train}),
        evaluate=EvaluateConfig(ks=(2, 3), lambdas=(0.05, 0.5), infer_steps=20, clusters=2, sweep_points=3),
    )


def with_workspace(cfg: ProjectConfig, root: Path) -> ProjectConfig:
    return cfg.replace(workspace=dataclasses.replace(cfg.workspace, root=str(root)))


def random_cp_tensor(n=6, t=20, d=136, k=3, noise=0.01, missing=0.2, seed=0):
    """Exact non-negative-U CP tensor plus noise, with a random (i, t) mask: (x with NaN, mask, clean)."""
    rng = np.random.default_rng(seed)
    u = rng.uniform(0.2, 1.5, size=(n, k))
    v = rng.standard_normal((t, k))
    f = rng.standard_normal((d, k)) / np.sqrt(d)
    clean = np.einsum("ik,tk,dk->itd", u, v, f)
    x = clean + noise * rng.standard_normal(clean.shape)
    mask = rng.random((n, t)) > missing
    mask[:, 0] = True
    x = x.astype(np.float32)
    x[~mask] = np.nan
    return x, mask, clean


IDENTITY_SPEC = SyntheticSpec(n_members=12, n_seconds=48, k_true=2, n_groups=2, identity_std=0.08, seed=5)


def identity_movie(spec: SyntheticSpec = IDENTITY_SPEC):
    """A movie whose members differ in face shape far more than in expression (like real audiences)."""
    from models.data import movie_from_tensor
    return movie_from_tensor(make_synthetic_movie(spec)[0])


def identity_config() -> ProjectConfig:
    """Enough capacity and epochs (a few seconds on CPU) for the models to learn expressions."""
    return ProjectConfig(
        models=ModelsConfig(k=2, hidden=32, layers=2, tf=TFConfig(max_iters=50)),
        train=TrainConfig(epochs=20, batch_size=64, device="cpu", progress=False),
    )
