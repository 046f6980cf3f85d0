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
import time
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


class DiskFullError(DataError):
    """No space left where an output is written (the message names the path, the free space and the need)."""


# what libraries say when a write failed for want of space: the OS, HDF5 (errno = 28 in its message),
# torch's zip writer (no errno: 'PytorchStreamWriter failed writing file', 'unexpected pos')
_DISK_FULL_TEXT = ("No space left on device", "errno = 28", "Disk quota exceeded", "errno = 122")
_WRITE_FAILED_TEXT = ("PytorchStreamWriter failed writing", "unexpected pos", "file write failed")
LOW_SPACE_BYTES = 16 << 20      # a write that failed with this little space left failed for want of it


def _existing_folder(path: Path) -> Path:
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path if path.is_dir() else path.parent


def free_bytes(path: Path) -> int:
    import shutil

    return shutil.disk_usage(_existing_folder(path)).free


def is_disk_full(err: BaseException, path: Path | None = None) -> bool:
    """Did `err` come from a write that ran out of space (here or in a library, with or without errno)?"""
    for e in (err, err.__cause__, err.__context__):
        if e is None:
            continue
        if isinstance(e, DiskFullError) or (isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)):
            return True
        text = str(e)
        if any(t in text for t in _DISK_FULL_TEXT):
            return True
        if path is not None and any(t in text for t in _WRITE_FAILED_TEXT):
            try:
                return free_bytes(path) < LOW_SPACE_BYTES
            except OSError:
                return False
    return False


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def disk_full_message(path: Path, need_bytes: int | None = None, at_least: bool = False,
                      free: int | None = None) -> str:
    """One line: the path, the free space there and what is needed, and the fix."""
    try:
        free = human_bytes(free_bytes(path) if free is None else free)
    except OSError:
        free = "unknown"
    need = f"; {'at least' if at_least else 'about'} {human_bytes(need_bytes)} needed" if need_bytes else ""
    return (f"disk full: no space left to write {path} ({free} free there{need}). Free space (or move the "
            f"workspace: workspace.root=PATH) and rerun the same command: everything finished is kept.")


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
    except OSError as err:   # e.g. a file where a folder should be
        raise DataError(f"cannot create folder {path}: {err.strerror}. Choose another workspace "
                        f"with workspace.root=PATH or move what is in the way.") from err
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
    except BaseException as err:
        written = tmp.stat().st_size if tmp.exists() else 0
        tmp.unlink(missing_ok=True)
        if not isinstance(err, DiskFullError) and is_disk_full(err, final):
            previous = final.stat().st_size if final.exists() else 0
            raise DiskFullError(disk_full_message(final, max(written, previous) or None, at_least=True)) from None
        raise


def write_text_atomic(final: Path, text: str) -> None:
    with atomic_path(final) as tmp:
        Path(tmp).write_text(text)


_TMP_RE = re.compile(r"^\..+" + re.escape(TMP_MARK) + r"(\d+)-[0-9a-f]{8}")


def _pid_alive(pid: int) -> bool:
    """True while a writer process still runs (a zombie counts as dead: in containers
    nobody may reap a SIGKILLed worker)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


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


_DIGESTS: dict[tuple, str] = {}


def file_digest(path: Path, chunk_bytes: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes (remembered in this process while the file's inode, size and mtime stay
    the same, for files not changed in the last 2 s: the runner fingerprints a recording once per run,
    not once per chunk and stage)."""
    st = os.stat(path)
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    if key in _DIGESTS:
        return _DIGESTS[key]
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_bytes):
            sha.update(block)
    digest = sha.hexdigest()
    if time.time() - st.st_mtime > 2.0:       # mtimes are coarse: a file changed just now is not remembered
        if len(_DIGESTS) > 100_000:
            _DIGESTS.clear()
        _DIGESTS[key] = digest
    return digest


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


# --- detections
# One file per (movie, session, camera, chunk): data/cache/detect/<movie>/<session>/<camera>/<chunk>.h5.
# F sampled frames (one per sampling instant in the chunk, gaps included), D detections.

DETECTIONS_SCHEMA_VERSION = 1
DETECTION_ATTRS = ("movie", "session", "camera", "chunk_start_s", "chunk_end_s", "fps", "width_px",
                   "height_px", "sample_every_s", "detector_front", "detector_back")


@dataclass
class Detections:
    """Face detections of one chunk of one camera's recording.

    frame_index  (F,)   int64    frame number from the start of the recording
    frame_time_s (F,)   float64  recording time of the frame
    frame_ok     (F,)   bool     False = gap (corrupt, wrong-size or missing frame)
    det_frame    (D,)   int32    row into the frame arrays
    det_box_px   (D, 4) float32  [left, top, right, bottom], full-frame pixels
    det_score    (D,)   float32  detector confidence (HOG margin; higher = surer)
    det_band     (D,)   int8     0 = front-rows detector, 1 = back-rows detector
    attrs: movie, session, camera, chunk_start_s, chunk_end_s, fps, width_px,
           height_px, sample_every_s, detector_front, detector_back, schema_version
    """
    frame_index: np.ndarray
    frame_time_s: np.ndarray
    frame_ok: np.ndarray
    det_frame: np.ndarray
    det_box_px: np.ndarray
    det_score: np.ndarray
    det_band: np.ndarray
    attrs: dict = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        return len(self.frame_index)

    def boxes_of(self, row: int) -> np.ndarray:
        """(d, 4) boxes detected on frame row `row`."""
        return self.det_box_px[self.det_frame == row]

    def validate(self, source: str = "detections") -> "Detections":
        n_frames = len(self.frame_index)
        for name in ("frame_time_s", "frame_ok"):
            if len(getattr(self, name)) != n_frames:
                raise DataError(f"{source}: '{name}' must have F={n_frames} entries, got "
                                f"{len(getattr(self, name))}. Regenerate it with the 'detect' stage.")
        n_dets = len(self.det_frame)
        if self.det_box_px.shape != (n_dets, 4):
            raise DataError(f"{source}: 'det_box_px' must have shape (D, 4) = {(n_dets, 4)}, got "
                            f"{self.det_box_px.shape}. Regenerate it with the 'detect' stage.")
        for name in ("det_score", "det_band"):
            if len(getattr(self, name)) != n_dets:
                raise DataError(f"{source}: '{name}' must have D={n_dets} entries. Regenerate it.")
        if n_dets and (self.det_frame.min() < 0 or self.det_frame.max() >= n_frames):
            raise DataError(f"{source}: 'det_frame' points outside the {n_frames} frames. Regenerate it.")
        return self


_DETECTION_DTYPES = {"frame_index": np.int64, "frame_time_s": np.float64, "frame_ok": bool,
                     "det_frame": np.int32, "det_box_px": np.float32, "det_score": np.float32,
                     "det_band": np.int8}


def write_detections(path: Path, detections: Detections) -> Path:
    """Validate and write a detections chunk atomically (path may be a runner temp path)."""
    import h5py

    detections.validate(str(path))
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as h5:
            for name, dtype in _DETECTION_DTYPES.items():
                h5.create_dataset(name, data=np.asarray(getattr(detections, name), dtype=dtype))
            for key, value in detections.attrs.items():
                h5.attrs[key] = value
            h5.attrs["schema_version"] = DETECTIONS_SCHEMA_VERSION
    return Path(path)


def read_detections(path: Path) -> Detections:
    """Read and validate a detections chunk."""
    import h5py

    path = require_file(path, "detections file", "Run the 'detect' stage first.")
    try:
        h5 = h5py.File(path, "r")
    except OSError as err:
        raise DataError(f"{path}: not a readable HDF5 file ({err}). Rerun the 'detect' stage "
                        f"with --force for this chunk.") from err
    with h5:
        missing = [name for name in _DETECTION_DTYPES if name not in h5]
        if missing:
            raise DataError(f"{path}: missing dataset(s) {', '.join(missing)}; not a detections chunk "
                            f"(see data/README.md). Rerun the 'detect' stage.")
        arrays = {name: h5[name][()].astype(dtype) for name, dtype in _DETECTION_DTYPES.items()}
        attrs = {k: _as_str(v) for k, v in h5.attrs.items()}
    if arrays["det_box_px"].size == 0:
        arrays["det_box_px"] = arrays["det_box_px"].reshape(0, 4)
    return Detections(**arrays, attrs=attrs).validate(str(path))


# --- landmarks, frontal, members
# data/cache/landmarks/<movie>/<session>/<camera>/<chunk>.h5   (one per detect chunk)
# data/cache/frontalize/<movie>/<session>/<camera>/<chunk>.h5  (one per detect chunk)
# data/cache/members/<movie>/<session>/<camera>/members.h5     (one per session and camera)
# Each chunk file repeats the detections datasets (frame_*, det_*) so a later stage needs
# only its direct input. Schemas: data/README.md and the *_DATASETS tables below.

FACE_SCHEMA_VERSION = 1
LANDMARKS_DATASETS = {"landmarks_px": np.float32, "ert_box_px": np.float32, "ert_roll_deg": np.float32,
                      "upsample": np.float32, "fit_ok": bool}
FRONTAL_DATASETS = {"frontal": np.float32, "pose_deg": np.float32, "scale_px": np.float32,
                    "center_px": np.float32, "fit_rms": np.float32, "frontal_ok": bool}
MEMBERS_DATASETS = {"frame_time_s": np.float64, "frame_ok": bool, "face_frame": np.int32,
                    "face_time_s": np.float64, "face_box_px": np.float32, "face_score": np.float32,
                    "face_band": np.int8, "face_frontal": np.float32, "face_pose_deg": np.float32,
                    "face_member": np.int32, "face_fit_score": np.float32, "member_id": str, "seat_xy_px": np.float32,
                    "seat_width_px": np.float32, "seat_row": np.int16, "seat_col": np.int16,
                    "member_observed_fraction": np.float32, "chunk_start_s": np.float64,
                    "chunk_end_s": np.float64}


@dataclass
class FaceArrays:
    """The datasets (name → array) and attributes of a landmarks, frontal or members file."""
    arrays: dict
    attrs: dict = field(default_factory=dict)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]

    def __contains__(self, name: str) -> bool:
        return name in self.arrays


def _write_face_file(path: Path, arrays: dict, dtypes: dict, attrs: dict, kind: str) -> Path:
    import h5py

    missing = [name for name in dtypes if name not in arrays]
    if missing:
        raise DataError(f"{path}: cannot write a {kind} file without {', '.join(missing)}.")
    str_dt = h5py.string_dtype("utf-8")
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as h5:
            for name, values in arrays.items():
                dtype = dtypes.get(name, _DETECTION_DTYPES.get(name))
                if dtype is str:
                    h5.create_dataset(name, data=np.asarray(values, dtype=object), dtype=str_dt)
                else:
                    h5.create_dataset(name, data=np.asarray(values, dtype=dtype))
            h5.attrs.update({k: v for k, v in attrs.items() if k != "schema_version"})
            h5.attrs["kind"] = kind
            h5.attrs["schema_version"] = FACE_SCHEMA_VERSION
    return Path(path)


def _read_face_file(path: Path, dtypes: dict, kind: str, stage: str) -> FaceArrays:
    import h5py

    path = require_file(path, f"{kind} file", f"Run the '{stage}' stage first.")
    try:
        h5 = h5py.File(path, "r")
    except OSError as err:
        raise DataError(f"{path}: not a readable HDF5 file ({err}). Rerun the '{stage}' stage "
                        f"with --force for this unit.") from err
    with h5:
        missing = [name for name in dtypes if name not in h5]
        if missing:
            raise DataError(f"{path}: missing dataset(s) {', '.join(missing)}; not a {kind} file "
                            f"(see data/README.md). Rerun the '{stage}' stage.")
        arrays = {}
        for name in h5:
            values = h5[name][()]
            if values.dtype.kind in "OS":
                values = np.array([_as_str(v) for v in values], dtype=object)
            arrays[name] = values
        attrs = {k: _as_str(v) for k, v in h5.attrs.items()}
    return FaceArrays(arrays, attrs)


def _with_detections(detections: Detections, arrays: dict) -> dict:
    out = {name: getattr(detections, name) for name in _DETECTION_DTYPES}
    out.update(arrays)
    return out


def write_landmarks_chunk(path: Path, detections: Detections, fitted: dict, model: str,
                          box_mappings: np.ndarray | None = None) -> Path:
    """Detections + landmarks_px (D, 68, 2) px, ert_box_px (D, 4), ert_roll_deg (D,), upsample (D,), fit_ok (D,);
    box_mappings (2, 3): the box_scale, box_dx, box_dy used for front and back detections."""
    attrs = dict(detections.attrs, landmark_model=model)
    if box_mappings is not None:
        attrs.update(box_mapping_front=np.asarray(box_mappings[0], np.float64),
                     box_mapping_back=np.asarray(box_mappings[1], np.float64))
    return _write_face_file(path, _with_detections(detections, fitted), LANDMARKS_DATASETS, attrs, "landmarks")


def read_landmarks_chunk(path: Path) -> FaceArrays:
    return _read_face_file(path, {**_DETECTION_DTYPES, **LANDMARKS_DATASETS}, "landmarks", "landmarks")


def write_frontal_chunk(path: Path, arrays: dict, attrs: dict) -> Path:
    """Detection datasets + frontal (D, 68, 2) canonical units, pose_deg (D, 3), scale_px (D,), …"""
    return _write_face_file(path, arrays, {**_DETECTION_DTYPES, **FRONTAL_DATASETS}, attrs, "frontal")


def read_frontal_chunk(path: Path) -> FaceArrays:
    return _read_face_file(path, {**_DETECTION_DTYPES, **FRONTAL_DATASETS}, "frontal", "frontalize")


def write_members(path: Path, arrays: dict, attrs: dict) -> Path:
    """Faces of one session and camera with their member (seat) assignment."""
    return _write_face_file(path, arrays, MEMBERS_DATASETS, attrs, "members")


def read_members(path: Path) -> FaceArrays:
    return _read_face_file(path, MEMBERS_DATASETS, "members", "members")


# --- synthetic ground truth
# <camera>.truth.h5 next to each synthetic recording (pipeline/synthetic; schema in data/README.md).
# F frames, V viewers, K true factors, T movie seconds. Image-space arrays are NaN where not visible.

SYNTH_TRUTH_DATASETS = {            # name: number of dimensions
    "time_s": 1, "movie_time_s": 1,
    "viewer_id": 1, "seat_id": 1, "seat_row": 1, "seat_col": 1, "seat_centre_px": 2, "group": 1,
    "source_face": 1, "U": 2, "V_movie": 2, "V_movie_time_s": 1, "funny_moments_s": 1,
    "face_box": 3, "landmarks_image": 4, "landmarks_frontal": 4, "pose_deg": 3,
    "visible": 2, "absence": 2, "expression": 3, "blink": 2,
}
SYNTH_TRUTH_PER_FRAME = ("face_box", "landmarks_image", "landmarks_frontal", "pose_deg", "visible",
                         "absence", "expression", "blink")


def write_synthetic_truth(path: Path, arrays: dict, attrs: dict, atomic: bool = True) -> Path:
    """Write a synthetic screening's ground truth; atomic=False when `path` already is a runner temp path."""
    missing = [name for name in SYNTH_TRUTH_DATASETS if name not in arrays]
    if missing:
        raise DataError(f"{path}: synthetic truth lacks {', '.join(missing)}")
    if not atomic:
        return _write_synthetic_h5(Path(path), arrays, attrs)
    with atomic_path(path) as tmp:
        _write_synthetic_h5(tmp, arrays, attrs)
    return Path(path)


def _write_synthetic_h5(path: Path, arrays: dict, attrs: dict) -> Path:
    """Built in memory, then written as bytes: HDF5 writing into a full disk fails in object finalizers
    (and crashed the process); a plain write fails with one clean OSError (ENOSPC)."""
    import io

    import h5py

    str_dt = h5py.string_dtype("utf-8")
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as h5:
        for name, values in arrays.items():
            values = np.asarray(values)
            if values.dtype.kind in "UO":
                h5.create_dataset(name, data=values.astype(object), dtype=str_dt)
            elif name in SYNTH_TRUTH_PER_FRAME and values.ndim >= 2 and values.shape[0] > 0:
                h5.create_dataset(name, data=values, chunks=(1,) + values.shape[1:], compression="gzip",
                                  compression_opts=4, shuffle=True)
            else:
                h5.create_dataset(name, data=values)
        h5.attrs.update({k: v for k, v in attrs.items()})
        h5.attrs["schema_version"] = SCHEMA_VERSION
        h5.attrs["kind"] = "synthetic_truth"
    with open(path, "wb") as handle:
        handle.write(buffer.getbuffer())
    return Path(path)


def read_synthetic_truth(path: Path, names: tuple[str, ...] | None = None) -> tuple[dict, dict]:
    """(arrays, attrs) of a <camera>.truth.h5; `names` limits which datasets are read."""
    import h5py

    path = require_file(path, "synthetic truth file", "Generate the screening with scripts/synthesize.py.")
    try:
        h5 = h5py.File(path, "r")
    except OSError as err:
        raise DataError(f"{path}: not a readable HDF5 file ({err}). Regenerate it with scripts/synthesize.py.") from err
    with h5:
        if h5.attrs.get("kind") != "synthetic_truth":
            raise DataError(f"{path}: not a synthetic ground-truth file (attribute kind != 'synthetic_truth').")
        wanted = names or tuple(h5.keys())
        absent = [n for n in wanted if n not in h5]
        if absent:
            raise DataError(f"{path}: missing dataset(s) {', '.join(absent)}; regenerate with scripts/synthesize.py.")
        arrays = {}
        for name in wanted:
            values = h5[name][()]
            if values.dtype.kind == "O":
                values = np.array([_as_str(v) for v in values], dtype=object)
            arrays[name] = values
        attrs = {k: _as_str(v) for k, v in h5.attrs.items()}
    return arrays, attrs
