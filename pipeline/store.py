"""Everything that touches files on disk: workspace layout, atomic writes, and
the HDF5 schemas of the data contract (data/README.md).

Writers never create a final path directly: they write a temp file in the same
folder, flush and fsync it, then `os.replace` it onto the final name, so a
file that exists is complete.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

SCHEMA_VERSION = 1
N_COORDS = 136  # 68 landmarks × (x, y)
TMP_MARK = ".tmp-"


class DataError(ValueError):
    """An input file is missing, unreadable or does not follow the data contract."""


# ----------------------------------------------------------------------------- workspace


@dataclass(frozen=True)
class Workspace:
    """Paths of the data contract under one root folder."""
    root: Path

    @property
    def raw(self) -> Path:
        return self.root / "raw"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def tensors(self) -> Path:
        return self.root / "tensors"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def manifests(self) -> Path:
        return self.root / "manifests"

    def session_dir(self, movie: str, session: str) -> Path:
        return self.raw / movie / session

    def stage_output(self, stage: str, movie: str, session: str, camera: str, chunk: str,
                     suffix: str = ".h5") -> Path:
        return self.cache / stage / movie / session / camera / f"{chunk}{suffix}"

    def tensor_path(self, movie: str) -> Path:
        return self.tensors / f"{movie}.h5"


# ----------------------------------------------------------------------------- atomic writes


def tmp_path_for(final: Path) -> Path:
    """A temp name in the same folder (same filesystem, so os.replace is atomic)."""
    final = Path(final)
    # keep the suffix so libraries that pick a format from it (cv2, h5py) still work
    return final.with_name(f".{final.stem}{TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}{final.suffix}")


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def commit(tmp: Path, final: Path) -> None:
    """fsync `tmp` and atomically move it onto `final`."""
    fsync_file(tmp)
    os.replace(tmp, final)
    fsync_dir(Path(final).parent)


def ensure_dir(path: Path) -> Path:
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except PermissionError as err:
        raise DataError(f"cannot create folder {path}: permission denied. Choose a writable "
                        f"workspace with workspace.root=PATH or fix the folder's permissions.") from err
    if not os.access(path, os.W_OK):
        raise DataError(f"folder {path} is not writable. Choose a writable workspace with "
                        f"workspace.root=PATH or fix the folder's permissions.")
    return path


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temp path to write; on success it replaces `final`, on error it is removed."""
    final = Path(final)
    ensure_dir(final.parent)
    tmp = tmp_path_for(final)
    try:
        yield tmp
        commit(tmp, final)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if err.errno == errno.ENOSPC:
            raise DataError(f"disk full while writing {final}. Free space or move the workspace "
                            f"(workspace.root=PATH) and rerun: finished outputs are kept.") from err
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(final: Path, text: str) -> None:
    with atomic_path(final) as tmp:
        Path(tmp).write_text(text)


_TMP_RE = re.compile(r"^\..+" + re.escape(TMP_MARK) + r"(\d+)-[0-9a-f]{8}")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_orphans(folder: Path) -> list[Path]:
    """Remove temp files left by writers that died (their pid is gone)."""
    removed = []
    folder = Path(folder)
    if not folder.exists():
        return removed
    for path in folder.rglob(f".*{TMP_MARK}*"):
        match = _TMP_RE.match(path.name)
        if match and not _pid_alive(int(match.group(1))):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def file_digest(path: Path, chunk_bytes: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes."""
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_bytes):
            sha.update(block)
    return sha.hexdigest()


def require_file(path: Path, what: str, fix: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} not found: {path}. {fix}")
    return path


# ----------------------------------------------------------------------------- per-movie tensor


@dataclass
class MovieTensor:
    """The per-movie tensor of the data contract: the boundary between pipeline/ and models/.

    landmarks: (N, T, 136) float32, frontalized x0,y0,x1,y1,…; NaN where missing
    mask:      (N, T) bool, True where observed
    """
    landmarks: np.ndarray
    mask: np.ndarray
    member_id: np.ndarray
    session_id: np.ndarray
    movie: str
    bin_seconds: float = 1.0
    units: str = "canonical face frame (see data/README.md)"
    extra: dict[str, np.ndarray] = field(default_factory=dict)   # optional per-member datasets
    attrs: dict = field(default_factory=dict)                     # optional extra attributes

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.landmarks.shape)

    def validate(self, source: str = "tensor") -> "MovieTensor":
        lm, mask = self.landmarks, self.mask
        if lm.ndim != 3 or lm.shape[2] != N_COORDS:
            raise DataError(f"{source}: 'landmarks' must have shape (N, T, {N_COORDS}), got {lm.shape}. "
                            f"Store 68 (x, y) landmarks per member and time bin, flattened as x0,y0,x1,y1,….")
        n, t, _ = lm.shape
        if n == 0 or t == 0:
            raise DataError(f"{source}: the tensor is empty (N={n}, T={t}); there is nothing to train on. "
                            f"Check that the movie's recordings contain faces.")
        if mask.shape != (n, t):
            raise DataError(f"{source}: 'mask' must have shape (N, T) = {(n, t)}, got {mask.shape}.")
        if mask.dtype != bool:
            raise DataError(f"{source}: 'mask' must be bool, got {mask.dtype}.")
        for name, ids in (("member_id", self.member_id), ("session_id", self.session_id)):
            if len(ids) != n:
                raise DataError(f"{source}: '{name}' must have N={n} entries, got {len(ids)}.")
        observed = lm[mask]
        if observed.size and not np.isfinite(observed).all():
            bad = int((~np.isfinite(observed).all(axis=1)).sum())
            raise DataError(f"{source}: {bad} faces are marked observed in 'mask' but hold NaN/inf "
                            f"landmarks. Set mask=False where a face is missing.")
        if (~mask).any() and not np.isnan(lm[~mask]).all():
            raise DataError(f"{source}: cells with mask=False must hold NaN landmarks.")
        return self


def write_movie_tensor(path: Path, tensor: MovieTensor) -> Path:
    """Validate and write the per-movie tensor atomically."""
    import h5py

    tensor.validate(str(path))
    str_dt = h5py.string_dtype("utf-8")
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as h5:
            h5.create_dataset("landmarks", data=tensor.landmarks.astype(np.float32),
                              chunks=(1,) + tensor.landmarks.shape[1:], compression="gzip",
                              compression_opts=4, shuffle=True)
            h5.create_dataset("mask", data=tensor.mask.astype(bool))
            h5.create_dataset("member_id", data=np.asarray(tensor.member_id, dtype=object), dtype=str_dt)
            h5.create_dataset("session_id", data=np.asarray(tensor.session_id, dtype=object), dtype=str_dt)
            for name, values in tensor.extra.items():
                values = np.asarray(values)
                if values.dtype.kind in "UO":
                    h5.create_dataset(name, data=values.astype(object), dtype=str_dt)
                else:
                    h5.create_dataset(name, data=values)
            h5.attrs.update({"movie": tensor.movie, "bin_seconds": float(tensor.bin_seconds),
                             "units": tensor.units, "schema_version": SCHEMA_VERSION})
            for key, value in tensor.attrs.items():
                h5.attrs[key] = value
    return Path(path)


REQUIRED_DATASETS = ("landmarks", "mask", "member_id", "session_id")
REQUIRED_ATTRS = ("movie", "bin_seconds", "units", "schema_version")


def read_movie_tensor(path: Path) -> MovieTensor:
    """Read and validate a per-movie tensor written by any program that follows the contract."""
    import h5py

    path = require_file(path, "tensor file", "Run the 'bin' stage first or pass the path of an existing "
                                              "data/tensors/<movie>.h5.")
    try:
        h5 = h5py.File(path, "r")
    except OSError as err:
        raise DataError(f"{path}: not a readable HDF5 file ({err}). Regenerate it with the 'bin' stage.") from err
    with h5:
        missing = [name for name in REQUIRED_DATASETS if name not in h5]
        if missing:
            raise DataError(f"{path}: missing dataset(s) {', '.join(missing)}; a tensor file needs "
                            f"{', '.join(REQUIRED_DATASETS)} (see data/README.md).")
        landmarks = h5["landmarks"][()]
        mask = h5["mask"][()]
        member_id = np.array([_as_str(v) for v in h5["member_id"][()]], dtype=object)
        session_id = np.array([_as_str(v) for v in h5["session_id"][()]], dtype=object)
        extra = {name: h5[name][()] for name in h5 if name not in REQUIRED_DATASETS
                 and isinstance(h5[name], h5py.Dataset)}
        attrs = {k: _as_str(v) for k, v in h5.attrs.items()}
    if landmarks.dtype != np.float32:
        landmarks = landmarks.astype(np.float32)
    if mask.dtype != bool:
        if mask.dtype.kind in "iu" and set(np.unique(mask)).issubset({0, 1}):
            mask = mask.astype(bool)
        else:
            raise DataError(f"{path}: 'mask' must be bool (True where observed), got {mask.dtype}.")
    return MovieTensor(
        landmarks=landmarks, mask=mask, member_id=member_id, session_id=session_id,
        movie=str(attrs.pop("movie", Path(path).stem)), bin_seconds=float(attrs.pop("bin_seconds", 1.0)),
        units=str(attrs.pop("units", "unknown")), extra=extra,
        attrs={k: v for k, v in attrs.items() if k != "schema_version"},
    ).validate(str(path))


def _as_str(value):
    return value.decode() if isinstance(value, bytes) else value
