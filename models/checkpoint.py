"""Checkpoints: model arguments + weights + optimizer + every RNG state, written atomically.

Layout under a model's folder:
  checkpoints/epoch_0007.pt     one per saved epoch (the newest `keep` are kept)
  checkpoints/last              text file naming the newest complete checkpoint
A checkpoint also records the configuration it was trained under (and its
hash), so resuming under a different configuration fails with a clear message.
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from pipeline.store import atomic_path, write_text_atomic

LAST = "last"


def rng_state(generator: torch.Generator | None = None) -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def set_rng_state(state: dict, generator: torch.Generator | None = None) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if generator is not None and "generator" in state:
        generator.set_state(state["generator"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)   # also seeds every CUDA device


def save(folder: Path, name: str, payload: dict, keep: int = 2) -> Path:
    """Write `payload` to folder/name atomically, point `last` at it, prune old epoch files."""
    folder = Path(folder)
    path = folder / name
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    write_text_atomic(folder / LAST, name + "\n")
    epochs = sorted(folder.glob("epoch_*.pt"))
    for old in epochs[:-keep]:
        if old.name != name:
            old.unlink(missing_ok=True)
    return path


def load_last(folder: Path, map_location="cpu") -> dict | None:
    """The checkpoint `last` points at, or None when the folder has none."""
    pointer = Path(folder) / LAST
    if not pointer.is_file():
        return None
    path = Path(folder) / pointer.read_text().strip()
    if not path.is_file():
        raise ValueError(f"{pointer} names {path.name}, which is missing. Delete {pointer} to start over, "
                         f"or point it at an existing epoch_XXXX.pt in {folder}.")
    return torch.load(path, map_location=map_location, weights_only=False)


def check_same_config(saved: dict, wanted: dict, where: Path) -> None:
    """Raise naming the settings that differ between a checkpoint and the current run."""
    if saved == wanted:
        return
    diffs = []
    for key in sorted(set(saved) | set(wanted)):
        if saved.get(key) != wanted.get(key):
            diffs.append(f"{key}: checkpoint {saved.get(key)!r} vs now {wanted.get(key)!r}")
    raise ValueError(f"cannot resume from {where}: it was trained under a different configuration or data "
                     f"({'; '.join(diffs[:6])}). Rerun with the checkpoint's settings, or start a new run "
                     f"with another --run-dir.")
