"""`audience predict`: a trained model's value for every (member, second) cell, as a plain HDF5 file.

Two uses, one file layout (data/README.md, "Predictions"):

  complete_movie        the members a run was trained on: the model's prediction for every cell of
                        the movie, observed or not (the completed tensor), with the tensor's mask
                        (`observed`) and the faces the model was fitted to (`trained_on`)
  predict_new_members   members the model has never seen, given only the first S seconds (or the
                        first fraction λ) of the movie: their codes (and face offsets) are inferred
                        from those faces with everything else frozen (models.evaluate.infer_members,
                        as the long-term protocol does), then their whole movie is predicted

`landmarks` always holds the model's values, observed cells included: a user who wants the
observed faces where there are some combines the file with the tensor (`tensor_row` names each
row's row there). Predictions are computed and written a block of members at a time, so a
paper-sized movie never holds a second copy of its tensor in memory; the file is written to a
temp name and renamed when complete (pipeline.store.atomic_path), so an error leaves nothing.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from models import registry
from pipeline.store import N_COORDS, DataError, MovieTensor, atomic_path, file_digest, read_movie_tensor

SCHEMA_VERSION = 1
CREATED_BY = "audience predict"
# train --split value → the run sub-folder its models are in (`evaluate` trains under completion/ too)
SPLIT_FOLDERS = {"completion": "completion", "all": "full"}
MODEL_PREFERENCE = registry.MODEL_NAMES   # the default --model: the first one trained, in the registry's order


# ----------------------------------------------------------------------------- trained models of a run


@dataclass(frozen=True)
class TrainedModel:
    """Where a run's trained model lives and what its checkpoint says about its data."""
    run_dir: Path
    split: str                 # "completion" or "all" (the train --split that made it)
    kind: str                  # tf, nltf, fvae, vae
    checkpoint: Path           # the checkpoint file `last` points at
    fingerprint: dict          # models.train's fingerprint: data shape, landmarks_sha, split, …
    args: dict                 # model arguments: n_members, n_seconds, d, …

    @property
    def folder(self) -> Path:
        return self.run_dir / SPLIT_FOLDERS[self.split] / self.kind


def trained_kinds(run_dir: Path) -> dict[str, list[str]]:
    """{split: [model kinds with a checkpoint]} for the run's completion/ and full/ folders."""
    out = {}
    for split, sub in SPLIT_FOLDERS.items():
        out[split] = [kind for kind in registry.REGISTRY
                      if (Path(run_dir) / sub / kind / "checkpoints" / "last").is_file()]
    return out


def find_trained(run_dir: str | Path, kind: str | None = None, split: str | None = None) -> TrainedModel:
    """The trained model predict uses: --split's folder (default completion/, else full/) and --model
    (default fvae when trained, else the first of nltf, tf, vae). Raises DataError naming the fix."""
    from models import checkpoint as ckpt

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(f"run folder not found: {run_dir}. Pass the --run-dir that `audience train` "
                        f"or `audience evaluate` wrote (data/runs/<movie>-<hash>).")
    if kind is not None and kind not in registry.REGISTRY:
        raise DataError(f"unknown model '{kind}'; choose {', '.join(registry.REGISTRY)}")
    if split is not None and split not in SPLIT_FOLDERS:
        raise DataError(f"unknown split '{split}'; choose completion or all")
    found = trained_kinds(run_dir)
    tensor = _tensor_hint(run_dir)
    trained = ", ".join(f"{SPLIT_FOLDERS[s]}/{k}" for s, kinds in found.items() for k in kinds)
    if not trained:
        raise DataError(f"{run_dir} holds no trained model (no completion/<model>/checkpoints/last or "
                        f"full/<model>/checkpoints/last). Train one first: audience train --tensor "
                        f"{tensor} --run-dir {run_dir}")
    splits = [split] if split else list(SPLIT_FOLDERS)
    for s in splits:
        kinds = [kind] if kind else found[s]
        chosen = next((k for k in kinds if k in found[s]), None)
        if chosen is None:
            continue
        folder = run_dir / SPLIT_FOLDERS[s] / chosen / "checkpoints"
        saved = ckpt.load_last(folder)
        if saved is None:      # `last` vanished between the two looks
            continue
        name = (folder / ckpt.LAST).read_text().strip()
        return TrainedModel(run_dir, s, chosen, folder / name, dict(saved.get("fingerprint") or {}),
                            dict(saved.get("args") or {}))
    where = f"{SPLIT_FOLDERS[split]}/" if split else "completion/ or full/"
    what = kind or "model"
    fix = (f"Choose one of those (--model, --split), or train it: audience train --models {kind} "
           f"--split {split or 'completion'} --tensor {tensor} --run-dir {run_dir}"
           if kind else f"Choose another --split, or train one: audience train --split {split} "
                        f"--tensor {tensor} --run-dir {run_dir}")
    raise DataError(f"{run_dir} holds no trained {what} under {where} (trained: {trained}). {fix}")


def _tensor_hint(run_dir: Path) -> str:
    """The run's tensor for a suggested command: data_summary.json's, else a placeholder."""
    try:
        return json.loads((Path(run_dir) / "data_summary.json").read_text())["tensor"]
    except (OSError, ValueError, KeyError):
        return "data/tensors/<movie>.h5"


def landmarks_sha(landmarks: np.ndarray) -> str:
    """The tensor digest models.train's fingerprint holds (hashed through the buffer, no copy)."""
    return hashlib.sha256(np.ascontiguousarray(landmarks)).hexdigest()[:16]


def check_same_tensor(trained: TrainedModel, movie, tensor_path: str | Path) -> None:
    """Refuse a tensor other than the one the model was trained on (shape and landmark values)."""
    data = trained.fingerprint.get("data") or {}
    shape = list(movie.landmarks.shape)
    problems = []
    if data.get("shape") is not None and list(data["shape"]) != shape:
        problems.append(f"it was trained on N×T×D = {'×'.join(map(str, data['shape']))}, "
                        f"this tensor is {'×'.join(map(str, shape))}")
    elif data.get("landmarks_sha") is not None and data["landmarks_sha"] != landmarks_sha(movie.landmarks):
        problems.append("the tensor has the same shape but other landmark values (rebuilt with other "
                        "settings, or another movie)")
    if not problems and trained.args.get("n_members") not in (None, movie.n_members):
        problems.append(f"the model knows {trained.args['n_members']} members, the tensor has {movie.n_members}")
    if problems:
        summary = trained.run_dir / "data_summary.json"
        recorded = ""
        if summary.is_file():
            recorded = json.loads(summary.read_text()).get("tensor", "")
        raise DataError(f"{trained.folder} was not trained on {tensor_path}: {problems[0]}. Pass the tensor it "
                        f"was trained on with --tensor{f' (data_summary.json names {recorded})' if recorded else ''}"
                        f", or train a run on this tensor: audience train --tensor {tensor_path} --run-dir NEW_RUN")


def training_mask(trained: TrainedModel, movie) -> np.ndarray | None:
    """The faces the model was trained on, rebuilt from the checkpoint's split and checked against its
    hash; None when the split cannot be rebuilt (a model trained by other code)."""
    from models.data import completion_split

    split = trained.fingerprint.get("split") or {}
    if split.get("protocol") == "completion" and {"holdout_every", "seed"} <= set(split):
        seed = split["seed"]
        mask, _ = completion_split(movie.mask, int(split["holdout_every"]), seed)
    elif split.get("protocol") == "all":
        mask = movie.mask.copy()
    else:
        return None
    want = (trained.fingerprint.get("data") or {}).get("train_mask_sha")
    got = hashlib.sha256(np.packbits(mask).tobytes()).hexdigest()[:16]
    return mask if want == got else None


# ----------------------------------------------------------------------------- predictions


@dataclass
class Predictions:
    """What write_predictions writes. `predict(i, t)` gives faces (B, 136) in the tensor's units for
    rows i and seconds t; `landmarks` (all cells at once) and `blocks()` (a few members at a time)
    call it."""
    predict: Callable[[np.ndarray, np.ndarray], np.ndarray]
    n_seconds: int
    member_id: np.ndarray                  # (N,) str
    session_id: np.ndarray                 # (N,) str
    tensor_row: np.ndarray                 # (N,) int64: the member's row in the source tensor
    observed: np.ndarray                   # (N, T) bool: the source tensor's mask
    trained_on: np.ndarray | None          # (N, T) bool: the faces the model (or the codes) was fitted to
    attrs: dict
    prefix_faces: np.ndarray | None = None             # (N,) int: new members' faces in the prefix
    dropped_member_id: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=object))
    faces_per_block: int = 65536

    @property
    def n_members(self) -> int:
        return len(self.member_id)

    def blocks(self) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, (b, T, 136) float32) for consecutive blocks of members."""
        n, t = self.n_members, self.n_seconds
        rows = max(1, self.faces_per_block // max(t, 1))
        for start in range(0, n, rows):
            stop = min(n, start + rows)
            ii = np.repeat(np.arange(start, stop), t)
            tt = np.tile(np.arange(t), stop - start)
            faces = self.predict(ii, tt)
            yield start, np.asarray(faces, dtype=np.float32).reshape(stop - start, t, -1)

    @property
    def landmarks(self) -> np.ndarray:
        """(N, T, 136) float32: every cell at once (for small movies and tests)."""
        out = [block for _, block in self.blocks()]
        return np.concatenate(out) if out else np.zeros((0, self.n_seconds, N_COORDS), np.float32)


def complete_movie(fitted, movie, trained_on: np.ndarray | None = None, batch_size: int = 65536,
                   attrs: dict | None = None, tensor_row: np.ndarray | None = None) -> Predictions:
    """The trained members' model value in every (member, second) cell of `movie` (the tensor the
    model was trained on, as models.data.load_movie gives it).

    tensor_row: each member's row in the tensor file (source_rows); needed only when load_movie
    dropped members with no observed face, else the rows are 0 … N−1.
    """
    if tensor_row is None:
        if movie.dropped:
            raise ValueError("load_movie dropped members with no observed face, so the rows no longer match "
                             "the tensor file's: pass tensor_row=models.predict.source_rows(path, movie)")
        tensor_row = np.arange(movie.n_members, dtype=np.int64)
    args = fitted.model.args()
    if (args.get("n_members"), args.get("n_seconds")) != (movie.n_members, movie.n_seconds):
        raise DataError(f"the model knows {args.get('n_members')} members × {args.get('n_seconds')} bins, the "
                        f"tensor has {movie.n_members} × {movie.n_seconds}: it was trained on another tensor.")
    base = {"members": "trained", "movie": movie.name, "bin_seconds": float(movie.bin_seconds),
            "units": movie.units, "model": fitted.kind}
    return Predictions(
        predict=lambda i, t: fitted.predict(i, t, batch_size), n_seconds=movie.n_seconds,
        member_id=np.asarray(movie.member_id, dtype=object), session_id=np.asarray(movie.session_id, dtype=object),
        tensor_row=np.asarray(tensor_row, np.int64), observed=movie.mask.copy(), trained_on=trained_on,
        attrs={**base, **(attrs or {})}, dropped_member_id=np.asarray(movie.dropped, dtype=object),
        faces_per_block=batch_size)


def check_prefix(first_seconds: float | None, first_fraction: float | None) -> None:
    """Exactly one of S > 0 and λ in (0, 1]; raises ValueError naming the fix."""
    if (first_seconds is None) == (first_fraction is None):
        raise ValueError("give the new members' observed prefix: --first-seconds S or --first-fraction λ "
                         "(one of them)")
    if first_fraction is not None and not 0 < first_fraction <= 1:
        raise ValueError(f"--first-fraction must lie in (0, 1] (a fraction of the movie), got {first_fraction:g}")
    if first_seconds is not None and not first_seconds > 0:
        raise ValueError(f"--first-seconds must be > 0, got {first_seconds:g}")


def prefix_bins(n_seconds: int, bin_seconds: float, first_seconds: float | None = None,
                first_fraction: float | None = None) -> int:
    """Time bins in the observed prefix: those wholly inside the first S seconds, or the first
    ceil(λ·T) bins (at least one). Raises ValueError naming the fix."""
    check_prefix(first_seconds, first_fraction)
    length = n_seconds * bin_seconds
    if first_fraction is not None:
        return min(n_seconds, max(1, math.ceil(round(first_fraction * n_seconds, 9))))
    if first_seconds > length + 1e-9:
        raise ValueError(f"--first-seconds {first_seconds:g} is longer than the movie ({n_seconds} bins of "
                         f"{bin_seconds:g} s = {length:g} s). Give at most {length:g}, or --first-fraction 1.")
    bins = int(math.floor(first_seconds / bin_seconds + 1e-9))
    if bins < 1:
        raise ValueError(f"--first-seconds {first_seconds:g} is shorter than one time bin ({bin_seconds:g} s): "
                         f"no face could be observed. Give at least {bin_seconds:g}.")
    return bins


def read_new_members(path: str | Path, n_coords: int = N_COORDS) -> MovieTensor:
    """The new members' tensor (data/README.md's tensor layout), with a clear error when its faces
    do not have the model's number of coordinates. Members are not dropped here."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise DataError(f"new members' tensor not found: {path}. Pass a tensor file (data/README.md's "
                        f"tensor layout) holding only the new members.")
    try:
        with h5py.File(path, "r") as h5:
            shape = h5["landmarks"].shape if "landmarks" in h5 else None
    except OSError as err:
        raise DataError(f"{path}: not a readable HDF5 file ({err}).") from err
    if shape is not None and (len(shape) != 3 or shape[-1] != n_coords):
        raise DataError(f"{path}: the new members' landmarks have shape {shape}, {shape[-1] if shape else '?'} "
                        f"coordinates per face; the model predicts {n_coords} (68 landmarks × x, y, flattened "
                        f"x0,y0,…). Write the new members' faces as (N, T, {n_coords}).")
    return read_movie_tensor(path)


def predict_new_members(fitted, new: MovieTensor, *, first_seconds: float | None = None,
                        first_fraction: float | None = None, infer_steps: int = 300, infer_lr: float = 0.05,
                        bin_seconds: float | None = None, batch_size: int = 65536,
                        attrs: dict | None = None) -> Predictions:
    """NEW members' whole movie from their first S seconds (or first fraction λ of the movie).

    `new` holds only the new members, on the movie's clock (bin t = seconds [t·b, (t+1)·b));
    it may be shorter than the movie (a screening still running) as long as it covers the prefix.
    Their codes and offsets come from models.evaluate.infer_members on the prefix's faces; every
    member needs at least one face there. bin_seconds: the model's (None: trust the tensor's).
    """
    from models.evaluate import infer_members

    n_seconds = int(fitted.model.args()["n_seconds"])
    n_new, t_new = new.mask.shape
    b = float(new.bin_seconds)
    if bin_seconds is not None and not math.isclose(b, float(bin_seconds), rel_tol=1e-6):
        raise DataError(f"the new members' tensor has {b:g} s time bins, the model's movie {float(bin_seconds):g} s. "
                        f"Bin the new members with binning settings equal to the training tensor's.")
    t_cut = prefix_bins(n_seconds, b, first_seconds, first_fraction)
    if t_new < t_cut:
        raise DataError(f"the new members' tensor covers {t_new} bins ({t_new * b:g} s); the prefix needs "
                        f"{t_cut} ({t_cut * b:g} s). Give a shorter --first-seconds / --first-fraction.")
    seen = np.zeros((n_new, n_seconds), bool)
    seen[:, :t_cut] = new.mask[:, :t_cut]
    faces = seen.sum(1)
    empty = [str(m) for m in np.asarray(new.member_id)[faces == 0]]
    if empty:
        raise DataError(f"{len(empty)} new member(s) have no observed face in the first {t_cut * b:g} s, so "
                        f"nothing can be inferred for them: {', '.join(empty[:10])}{' …' * (len(empty) > 10)}. "
                        f"Give a longer prefix (--first-seconds / --first-fraction) or leave them out of the tensor.")
    x = np.full((n_new, n_seconds, new.landmarks.shape[2]), np.nan, np.float32)
    x[:, :t_cut] = new.landmarks[:, :t_cut]
    codes, offsets = infer_members(fitted, fitted.normalizer.encode(x), seen, infer_steps, infer_lr)
    observed = np.zeros((n_new, n_seconds), bool)
    keep = min(n_seconds, t_new)
    observed[:, :keep] = new.mask[:, :keep]
    base = {"members": "new", "movie": new.movie, "bin_seconds": b, "units": new.units, "model": fitted.kind,
            "prefix_bins": int(t_cut), "prefix_seconds": float(t_cut * b), "infer_steps": int(infer_steps),
            "infer_lr": float(infer_lr)}
    return Predictions(
        predict=lambda i, t: fitted.predict_rows(codes, i, t, batch_size, offsets=offsets), n_seconds=n_seconds,
        member_id=np.asarray(new.member_id, dtype=object), session_id=np.asarray(new.session_id, dtype=object),
        tensor_row=np.arange(n_new, dtype=np.int64), observed=observed, trained_on=seen,
        attrs={**base, **(attrs or {})}, prefix_faces=faces.astype(np.int32), faces_per_block=batch_size)


# ----------------------------------------------------------------------------- the file


def write_predictions(path: str | Path, pred: Predictions) -> Path:
    """Write the predictions file (data/README.md, "Predictions") atomically: temp file, then rename."""
    import h5py

    path = Path(path)
    n, t = pred.n_members, pred.n_seconds
    str_dt = h5py.string_dtype("utf-8")
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as h5:
            lm = h5.create_dataset("landmarks", shape=(n, t, N_COORDS), dtype=np.float32,
                                   chunks=(1, t, N_COORDS) if n and t else None, compression="gzip",
                                   compression_opts=4, shuffle=True)
            for start, block in pred.blocks():
                lm[start:start + len(block)] = block
            h5.create_dataset("observed", data=np.asarray(pred.observed, bool))
            if pred.trained_on is not None:
                h5.create_dataset("trained_on", data=np.asarray(pred.trained_on, bool))
            h5.create_dataset("member_id", data=np.asarray(pred.member_id, dtype=object), dtype=str_dt)
            h5.create_dataset("session_id", data=np.asarray(pred.session_id, dtype=object), dtype=str_dt)
            h5.create_dataset("tensor_row", data=np.asarray(pred.tensor_row, np.int64))
            h5.create_dataset("dropped_member_id", data=np.asarray(pred.dropped_member_id, dtype=object),
                              dtype=str_dt, shape=(len(pred.dropped_member_id),))
            if pred.prefix_faces is not None:
                h5.create_dataset("prefix_faces", data=np.asarray(pred.prefix_faces, np.int32))
            for key, value in pred.attrs.items():
                if value is not None:
                    h5.attrs[key] = value
            h5.attrs.update({"created_by": CREATED_BY, "kind": "predictions", "schema_version": SCHEMA_VERSION})
    return path


# ----------------------------------------------------------------------------- the command


def default_out(run_dir: Path, kind: str, new_members: str | Path | None = None) -> Path:
    """<run>/predictions/<model>.h5, or <model>-new-<tensor stem>.h5 for new members."""
    name = f"{kind}.h5" if new_members is None else f"{kind}-new-{Path(new_members).stem}.h5"
    return Path(run_dir) / "predictions" / name


def recorded_tensor(run_dir: Path) -> Path:
    """The tensor data_summary.json says the run was trained on."""
    summary = Path(run_dir) / "data_summary.json"
    if not summary.is_file():
        raise DataError(f"{run_dir} has no data_summary.json naming its tensor. Pass --tensor "
                        f"data/tensors/<movie>.h5 (the tensor the run was trained on).")
    recorded = json.loads(summary.read_text()).get("tensor")
    if not recorded:
        raise DataError(f"{summary} names no tensor. Pass --tensor (the tensor the run was trained on).")
    path = Path(recorded)
    if not path.is_file():
        raise DataError(f"the run's tensor {recorded} (from {summary}) is not there (moved, or recorded relative "
                        f"to another folder). Pass --tensor with its path.")
    return path


def run_predict(run_dir: str | Path, *, kind: str | None = None, split: str | None = None,
                tensor: str | Path | None = None, out: str | Path | None = None,
                new_members: str | Path | None = None, first_seconds: float | None = None,
                first_fraction: float | None = None, device: str = "auto", infer_steps: int = 300,
                infer_lr: float = 0.05, batch_size: int = 65536, log: Callable[[str], None] = print) -> Path:
    """The predict command: find the model, check the inputs, predict, write; returns the file written."""
    from models.data import load_movie
    from models.train import load_fitted

    run_dir = Path(run_dir)
    if new_members is None and (first_seconds is not None or first_fraction is not None):
        raise DataError("--first-seconds / --first-fraction say how much of the NEW members' movie is observed; "
                        "give them with --new-members TENSOR (without it, predict completes the run's members).")
    if new_members is not None:
        check_prefix(first_seconds, first_fraction)
    trained = find_trained(run_dir, kind, split)
    others = [s for s, kinds in trained_kinds(run_dir).items() if trained.kind in kinds and s != trained.split]
    note = f" (--split {others[0]} picks {SPLIT_FOLDERS[others[0]]}/{trained.kind})" if others else ""
    log(f"[models] predict: {trained.kind} trained on the {trained.split} split, {trained.folder}{note}")
    attrs = {"run_dir": str(run_dir.resolve()), "model_dir": str(trained.folder.resolve()),
             "checkpoint": trained.checkpoint.name, "split": trained.split}
    if new_members is None:
        tensor = Path(tensor) if tensor is not None else recorded_tensor(run_dir)
        movie = load_movie(tensor)
        check_same_tensor(trained, movie, tensor)
        fitted = load_fitted(trained.folder, device)
        trained_on = training_mask(trained, movie)
        pred = complete_movie(fitted, movie, trained_on, batch_size,
                              {**attrs, "tensor": str(tensor.resolve()), "tensor_sha256": file_digest(tensor)},
                              tensor_row=source_rows(tensor, movie))
    else:
        if tensor is not None:
            log(f"[models] note: --tensor {tensor} is not used with --new-members (the model alone predicts them)")
        fitted = load_fitted(trained.folder, device)
        new = read_new_members(new_members, len(fitted.normalizer.mean))
        summary = run_dir / "data_summary.json"
        info = json.loads(summary.read_text()) if summary.is_file() else {}
        if info.get("movie") and info["movie"] != new.movie:
            log(f"[models] warning: the new members' tensor is of movie {new.movie!r}, the model was trained on "
                f"{info['movie']!r}; predictions assume the same movie on the same clock")
        if info.get("units") and info["units"] != new.units:
            log(f"[models] warning: the new members' units ({new.units!r}) differ from the training tensor's "
                f"({info['units']!r}); predictions assume the same landmark frame")
        if new.mask.shape[1] > int(fitted.model.args()["n_seconds"]):
            log(f"[models] note: the new members' tensor has {new.mask.shape[1]} bins, the model's movie "
                f"{fitted.model.args()['n_seconds']}: the bins after the movie's end are left out")
        pred = predict_new_members(fitted, new, first_seconds=first_seconds, first_fraction=first_fraction,
                                   infer_steps=infer_steps, infer_lr=infer_lr, bin_seconds=info.get("bin_seconds"),
                                   batch_size=batch_size,
                                   attrs={**attrs, "tensor": str(Path(new_members).resolve()),
                                          "tensor_sha256": file_digest(new_members)})
    out = Path(out) if out is not None else default_out(run_dir, trained.kind, new_members)
    write_predictions(out, pred)
    observed = float(pred.observed.mean()) if pred.observed.size else 0.0
    log(f"[models] predict: {pred.n_members} {'new ' if new_members is not None else ''}members × "
        f"{pred.n_seconds} bins ({100 * observed:.1f}% of cells observed"
        + (f"; codes from the first {pred.attrs['prefix_seconds']:g} s" if new_members is not None else "")
        + f") → {out}")
    return out


def source_rows(tensor: str | Path, movie) -> np.ndarray:
    """Each kept member's row in the tensor file (load_movie drops members with no observed face)."""
    if not movie.dropped:
        return np.arange(movie.n_members, dtype=np.int64)
    import h5py

    with h5py.File(tensor, "r") as h5:
        seen = np.asarray(h5["mask"][()]).astype(bool).any(axis=1)
    return np.flatnonzero(seen).astype(np.int64)
