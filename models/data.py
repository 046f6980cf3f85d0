"""The per-movie tensor as the models see it: checks, normalization, splits, device batches.

Policy for members with no observed face at all: they are dropped with a
warning (nothing can be fitted for them) and listed in the data summary; a
movie left with no observed face is an error.

Normalization: subtract the per-coordinate mean of the training faces and
divide by ONE global scale (the RMS of the centred training coordinates). A
single scale keeps face geometry and makes the training loss proportional to
the reported error, which is in the tensor's own units (sum over the 136
coordinates per face, averaged over faces, as in the paper).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pipeline.store import N_COORDS, DataError, MovieTensor, read_movie_tensor


# ----------------------------------------------------------------------------- loading


@dataclass
class Movie:
    """A validated movie tensor with its all-missing members removed."""
    landmarks: np.ndarray           # (N, T, 136) float32, NaN where missing
    mask: np.ndarray                # (N, T) bool, True where observed
    member_id: np.ndarray           # (N,) str
    session_id: np.ndarray          # (N,) str
    name: str = "movie"
    bin_seconds: float = 1.0
    units: str = "unknown"
    dropped: list[str] = field(default_factory=list)   # member ids removed for having no face
    extra: dict = field(default_factory=dict)          # optional datasets (e.g. synthetic ground truth)
    attrs: dict = field(default_factory=dict)          # optional file attributes (e.g. noise_floor)

    @property
    def n_members(self) -> int:
        return self.landmarks.shape[0]

    @property
    def n_seconds(self) -> int:
        return self.landmarks.shape[1]

    def summary(self) -> dict:
        n, t = self.mask.shape
        sessions = sorted({str(s) for s in self.session_id})
        return {"movie": self.name, "members": n, "time_bins": t, "bin_seconds": self.bin_seconds,
                "sessions": sessions, "observed_faces": int(self.mask.sum()),
                "missing_percent": round(100.0 * (1 - self.mask.mean()), 2),
                "units": self.units, "dropped_members": list(self.dropped)}


def movie_from_tensor(tensor: MovieTensor, source: str = "tensor") -> Movie:
    """Validate (shape, NaN vs mask, emptiness) and drop members that were never observed."""
    tensor.validate(source)
    seen = tensor.mask.any(axis=1)
    dropped = [str(m) for m in np.asarray(tensor.member_id)[~seen]]
    if not seen.any():
        raise DataError(f"{source}: no member has a single observed face (mask is all False); "
                        f"there is nothing to fit. Check the detection and binning stages for this movie.")
    if dropped:
        warnings.warn(f"{source}: dropping {len(dropped)} member(s) with no observed face: "
                      f"{', '.join(dropped[:10])}{' …' if len(dropped) > 10 else ''}", stacklevel=2)
    per_member = {k: v[seen] for k, v in tensor.extra.items()
                  if isinstance(v, np.ndarray) and v.ndim >= 1 and v.shape[0] == len(seen)
                  and not k.startswith("true_v")}
    extra = {**tensor.extra, **per_member}
    return Movie(landmarks=tensor.landmarks[seen], mask=tensor.mask[seen],
                 member_id=np.asarray(tensor.member_id)[seen], session_id=np.asarray(tensor.session_id)[seen],
                 name=tensor.movie, bin_seconds=tensor.bin_seconds, units=tensor.units,
                 dropped=dropped, extra=extra, attrs=dict(tensor.attrs))


def load_movie(path: str | Path) -> Movie:
    """Read a per-movie tensor file (any writer following data/README.md) for the models."""
    return movie_from_tensor(read_movie_tensor(Path(path)), str(path))


# ----------------------------------------------------------------------------- normalization


@dataclass(frozen=True)
class Normalizer:
    """x_norm = (x - mean) / scale; fitted on training faces only, stored with every model."""
    mean: np.ndarray                # (136,)
    scale: float

    @classmethod
    def fit(cls, landmarks: np.ndarray, train_mask: np.ndarray) -> "Normalizer":
        faces = landmarks[train_mask].astype(np.float64)          # (M, 136)
        if len(faces) == 0:
            raise DataError("no training faces to normalize with; the training mask is all False.")
        mean = faces.mean(axis=0)
        scale = float(np.sqrt(((faces - mean) ** 2).mean()))
        return cls(mean=mean.astype(np.float32), scale=scale if scale > 0 else 1.0)

    def encode(self, landmarks: np.ndarray) -> np.ndarray:
        """(…, 136) original units → normalized; NaN stays NaN."""
        return ((landmarks - self.mean) / self.scale).astype(np.float32)

    def decode(self, x_norm):
        """Normalized → original units (numpy or torch)."""
        if isinstance(x_norm, torch.Tensor):
            mean = torch.as_tensor(self.mean, device=x_norm.device, dtype=x_norm.dtype)
            return x_norm * self.scale + mean
        return x_norm * self.scale + self.mean

    def state(self) -> dict:
        return {"mean": self.mean.tolist(), "scale": self.scale}

    @classmethod
    def from_state(cls, state: dict) -> "Normalizer":
        return cls(mean=np.asarray(state["mean"], dtype=np.float32), scale=float(state["scale"]))


def mse_per_face(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean over faces of the squared error summed over the 136 coordinates (the paper's metric)."""
    if len(pred) == 0:
        return float("nan")
    return float(((np.asarray(pred, np.float64) - target) ** 2).sum(axis=-1).mean())


# ----------------------------------------------------------------------------- splits


def completion_split(mask: np.ndarray, holdout_every: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per member, hold out 1 in `holdout_every` observed faces at random (5:1 for 6).

    Returns (train_mask, test_mask), both (N, T) bool and disjoint. A member with
    fewer than `holdout_every` faces keeps them all for training.
    """
    rng = np.random.default_rng(seed)
    train, test = mask.copy(), np.zeros_like(mask)
    for i in range(mask.shape[0]):
        seen_t = np.flatnonzero(mask[i])
        held = rng.permutation(seen_t)[: len(seen_t) // holdout_every]
        train[i, held], test[i, held] = False, True
    return train, test


def member_split(n_members: int, test_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random members held out entirely (long-term prediction). Returns (train_rows, test_rows)."""
    if n_members < 2:
        raise DataError(f"long-term prediction needs at least 2 members (got {n_members}): "
                        f"some to learn V and θ from and some to predict.")
    n_test = min(n_members - 1, max(1, int(round(test_fraction * n_members))))
    order = np.random.default_rng(seed).permutation(n_members)
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def prefix_split(mask: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray, int]:
    """Observe the first `fraction` of the movie (at least one time bin); predict the rest.

    Returns (seen_mask, rest_mask, t_cut) with seen = mask[:, :t_cut], rest = mask[:, t_cut:].
    """
    n_t = mask.shape[1]
    t_cut = min(n_t - 1, max(1, math.ceil(fraction * n_t)))
    seen, rest = mask.copy(), mask.copy()
    seen[:, t_cut:] = False
    rest[:, :t_cut] = False
    return seen, rest, t_cut


# ----------------------------------------------------------------------------- device data


def pick_device(name: str = "auto") -> torch.device:
    """'auto' → CUDA when present else CPU; 'cuda' without a GPU is an error naming the fix."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device=cuda was asked for but no CUDA GPU is available to torch. "
                         "Use train.device=auto (or cpu), or install a CUDA build of torch on a GPU machine.")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"unknown device '{name}'; use auto, cpu or cuda")
    return torch.device(name)


class Faces:
    """Normalized faces and the observed (i, t) index lists, resident on one device.

    Batches are drawn by index from these tensors: no DataLoader, no host copies.
    """

    def __init__(self, x_norm: np.ndarray, mask: np.ndarray, device: torch.device):
        if x_norm.ndim != 3 or x_norm.shape[2] != N_COORDS or mask.shape != x_norm.shape[:2]:
            raise DataError(f"faces must be (N, T, {N_COORDS}) with an (N, T) mask, got "
                            f"{x_norm.shape} and {mask.shape}")
        self.device = device
        self.x = torch.from_numpy(np.nan_to_num(x_norm, nan=0.0)).to(device)       # (N, T, 136)
        i_idx, t_idx = np.nonzero(mask)
        self.i = torch.from_numpy(i_idx).long().to(device)                           # (M,)
        self.t = torch.from_numpy(t_idx).long().to(device)                           # (M,)
        self.mask = torch.from_numpy(mask).to(device)                                # (N, T)

    @property
    def n_observed(self) -> int:
        return int(self.i.numel())

    def batches(self, batch_size: int, generator: torch.Generator):
        """Yield (i, t, x) batches covering every observed face once, in a seeded random order."""
        order = torch.randperm(self.n_observed, generator=generator, device=generator.device)
        order = order.to(self.device)
        for start in range(0, self.n_observed, batch_size):
            pick = order[start:start + batch_size]
            i, t = self.i[pick], self.t[pick]
            yield i, t, self.x[i, t]
