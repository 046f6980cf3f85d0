"""`audience export-faces`: a public, stable table of every detected face.

One file per movie, session and camera, under the workspace:

    export/<movie>/<session>/<camera>.faces.csv    plain CSV, one header line
    export/<movie>/<session>/<camera>.faces.h5     the same rows as HDF5 datasets

One row per detection, in time order (chunks in time order, detections in
their chunk's order): frame index, recording and movie time, detector box,
score and band, the 68 image landmarks (OpenFace's `x_0..x_67, y_0..y_67`
naming), the landmark fit-quality score, head pose, and the audience member
the face was assigned to. Every column and dataset is documented in
data/README.md ("Per-face export"); the files need no project code to read.

The export reads the per-stage caches (landmarks, frontalize, members); it
runs no vision stage. It goes through the stage runner for its atomic
writes, manifests, skipping and failure reporting: each file has a manifest
beside it (`<file>.manifest.json`) and is rewritten only when its input
chunks changed (or with --force). It is not one of the stages of `run`: the
tensor does not depend on it.

Missing inputs: a workspace without detect / landmarks / frontalize outputs
is an error naming the stage to run; a camera whose members.h5 is missing is
exported with empty member ids and a warning (its HDF5 file has the attribute
has_members = False); a members.h5 that no longer matches the frontalize
chunks is an error for that camera (run `audience members`).
"""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.runner import Stage, StageReport, Unit, run_stage
from pipeline.store import (DataError, Workspace, atomic_path, read_frontal_chunk, read_landmarks_chunk,
                            read_members)

EXPORT_DIR = "export"
SUFFIXES = {"csv": ".faces.csv", "h5": ".faces.h5"}
FORMAT_CHOICES = {"csv": ("csv",), "h5": ("h5",), "both": ("csv", "h5")}
N_POINTS = 68
FACES_SCHEMA_VERSION = 1
CACHE_STAGES = ("detect", "landmarks", "frontalize")   # cache folders whose chunks make up a camera
CHUNK_RE = re.compile(r"^\d+\.\d$")

# HDF5 dataset → dtype; the CSV spreads the 2-D ones over several columns (see csv_header)
DATASETS = {"frame_index": np.int64, "face_id": np.int32, "timestamp": np.float64, "movie_time_s": np.float64,
            "det_box_px": np.float32, "det_score": np.float32, "det_band": np.int8, "fit_ok": bool,
            "fit_score": np.float32, "landmarks_px": np.float32, "pose_deg": np.float32, "frontal_ok": bool,
            "member_id": str}
BOX_COLUMNS = ("det_left", "det_top", "det_right", "det_bottom")
POSE_COLUMNS = ("yaw_deg", "pitch_deg", "roll_deg")
COPIED_ATTRS = ("fps", "width_px", "height_px", "sample_every_s", "detector_front", "detector_back",
                "landmark_model")


def csv_header() -> list[str]:
    """The CSV columns, in order (data/README.md documents each)."""
    return (["frame_index", "face_id", "timestamp", "movie_time_s", *BOX_COLUMNS, "det_score", "det_band",
             "fit_ok", "fit_score"]
            + [f"x_{i}" for i in range(N_POINTS)] + [f"y_{i}" for i in range(N_POINTS)]
            + [*POSE_COLUMNS, "frontal_ok", "member_id"])


# ----------------------------------------------------------------------------- what is in the caches


@dataclass(frozen=True)
class CameraCaches:
    """The cache files of one movie/session/camera, chunks in time order."""
    movie: str
    session: str
    camera: str
    chunks: tuple[str, ...]
    files: dict            # stage → tuple of chunk paths that exist (same order as chunks)
    missing: dict          # stage → chunk names with no file
    members: Path | None   # members.h5, None when absent
    session_yaml: Path | None

    @property
    def name(self) -> str:
        return f"{self.movie}/{self.session}/{self.camera}"


def _chunk_files(folder: Path) -> dict[str, Path]:
    """chunk name → path of the finished chunk files of one cache folder (temp files and other files skipped:
    a chunk is named by its start, `%08.1f` recording seconds)."""
    if not folder.is_dir():
        return {}
    return {p.stem: p for p in folder.glob("*.h5") if CHUNK_RE.match(p.stem)}


def find_caches(workspace: Workspace, movie: str | None = None) -> list[CameraCaches]:
    """Every movie/session/camera with at least one detect, landmarks or frontalize chunk, sorted."""
    keys = set()
    for stage in CACHE_STAGES:
        root = workspace.cache / stage
        if root.is_dir():
            keys |= {tuple(p.relative_to(root).parts) for p in root.glob("*/*/*") if p.is_dir()}
    cameras = []
    for key in sorted(k for k in keys if movie is None or k[0] == movie):
        found = {stage: _chunk_files(workspace.cache / stage / Path(*key)) for stage in CACHE_STAGES}
        chunks = tuple(sorted(set().union(*found.values()), key=float))
        if not chunks:
            continue
        members = workspace.stage_output("members", *key, "members")
        meta = workspace.session_dir(*key[:2]) / "session.yaml"
        cameras.append(CameraCaches(
            *key, chunks=chunks,
            files={s: tuple(found[s][c] for c in chunks if c in found[s]) for s in CACHE_STAGES},
            missing={s: [c for c in chunks if c not in found[s]] for s in CACHE_STAGES},
            members=members if members.is_file() else None, session_yaml=meta if meta.is_file() else None))
    return cameras


def check_caches(workspace: Workspace, cameras: list[CameraCaches], movie: str | None = None) -> list[str]:
    """Raise DataError when there is nothing to export; else the warnings (members missing)."""
    if not cameras:
        where = f" for movie '{movie}'" if movie else ""
        others = sorted({c.movie for c in find_caches(workspace)}) if movie else []
        hint = f" Movies with outputs: {', '.join(others)}." if others else ""
        raise DataError(f"no face detections{where} under {workspace.cache}: nothing to export.{hint} "
                        f"Run `audience run` first (detect → landmarks → frontalize → members).")
    for stage in ("landmarks", "frontalize"):
        if all(not c.files[stage] for c in cameras):
            raise DataError(f"no {stage} outputs under {workspace.cache / stage} (the export needs them): "
                            f"run `audience run` first, or `audience {stage}`.")
    no_members = [c.name for c in cameras if c.members is None]
    if not no_members:
        return []
    listed = ", ".join(no_members[:5]) + (f" and {len(no_members) - 5} more" if len(no_members) > 5 else "")
    return [f"members.h5 missing for {len(no_members)} of {len(cameras)} camera(s) ({listed}): their member_id "
            f"column is left empty (partial export). Run `audience members` (or `audience run`) and export again."]


# ----------------------------------------------------------------------------- rows


def _same(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")


def _face_ids(det_frame: np.ndarray) -> np.ndarray:
    """(D,) rank of each detection among those of its frame, in stored order."""
    det_frame = np.asarray(det_frame, np.int64)
    order = np.argsort(det_frame, kind="stable")
    ranks = np.arange(len(order))
    starts = np.r_[0, np.flatnonzero(np.diff(det_frame[order])) + 1] if len(order) else np.zeros(0, int)
    first = np.zeros(len(order), np.int64)
    first[starts] = starts
    first = np.maximum.accumulate(first) if len(order) else first
    out = np.empty(len(order), np.int32)
    out[order] = ranks - first
    return out


def face_rows(landmarks_chunks: list, frontal_chunks: list, members=None, offset_s: float = 0.0,
              where: str = "") -> dict[str, np.ndarray]:
    """Landmarks and frontal chunks (store.FaceArrays, time order) + members (FaceArrays or None)
    → export rows: name → (D, …) array, names and dtypes of DATASETS."""
    parts: dict[str, list] = {name: [] for name in DATASETS if name not in ("member_id", "fit_score")}
    chunk_starts = []
    for lm, fr in zip(landmarks_chunks, frontal_chunks):
        chunk = lm.attrs.get("chunk_start_s")
        label = f"{where} chunk {float(chunk):08.1f}" if chunk is not None else where
        for name in ("frame_time_s", "det_frame", "det_box_px"):
            if not _same(lm[name], fr[name]):
                raise DataError(f"{label}: the frontalize chunk does not match its landmarks chunk ({name} "
                                f"differs): it is out of date. Run `audience frontalize` (or `audience run`).")
        det_frame = np.asarray(lm["det_frame"], np.int64)
        d = len(det_frame)
        time_s = np.asarray(lm["frame_time_s"], np.float64)[det_frame]
        parts["frame_index"].append(np.asarray(lm["frame_index"], np.int64)[det_frame])
        parts["face_id"].append(_face_ids(det_frame))
        parts["timestamp"].append(time_s)
        parts["movie_time_s"].append(time_s + float(offset_s))
        parts["det_box_px"].append(np.asarray(lm["det_box_px"], np.float32).reshape(d, 4))
        parts["det_score"].append(lm["det_score"])
        parts["det_band"].append(lm["det_band"])
        parts["fit_ok"].append(lm["fit_ok"])
        parts["landmarks_px"].append(np.asarray(lm["landmarks_px"], np.float32).reshape(d, N_POINTS, 2))
        parts["pose_deg"].append(np.asarray(fr["pose_deg"], np.float32).reshape(d, 3))
        parts["frontal_ok"].append(fr["frontal_ok"])
        chunk_starts.append(float(chunk) if chunk is not None else np.nan)
    empty = {"det_box_px": (0, 4), "landmarks_px": (0, N_POINTS, 2), "pose_deg": (0, 3)}
    rows = {name: (np.concatenate(values) if values else np.zeros(empty.get(name, (0,)))).astype(DATASETS[name])
            for name, values in parts.items()}
    rows["member_id"] = _member_ids(rows, members, chunk_starts, where)     # also checks members.h5 is aligned
    n = len(rows["frame_index"])
    has_score = members is not None and "face_fit_score" in members
    rows["fit_score"] = (np.asarray(members["face_fit_score"], np.float32) if has_score
                         else np.full(n, np.nan, np.float32))
    return rows


def _member_ids(rows: dict, members, chunk_starts: list, where: str) -> np.ndarray:
    """(D,) member id of each row ('' = none), after checking members.h5 holds the same faces in the same order."""
    n = len(rows["frame_index"])
    if members is None:
        return np.full(n, "", dtype=object)
    fix = "it is out of date: run `audience members` (or `audience run`) and export again."
    if not _same(np.asarray(members["chunk_start_s"], np.float64), np.asarray(chunk_starts, np.float64)):
        raise DataError(f"{where}: members.h5 was made from other chunks ({len(members['chunk_start_s'])}) than "
                        f"the frontalize chunks now in the cache ({len(chunk_starts)}); {fix}")
    if not (_same(np.asarray(members["face_time_s"], np.float64), rows["timestamp"])
            and _same(np.asarray(members["face_box_px"], np.float32).reshape(-1, 4), rows["det_box_px"])):
        raise DataError(f"{where}: the faces of members.h5 ({len(members['face_time_s'])}) are not those of the "
                        f"frontalize chunks ({n}) in the same order; {fix}")
    face_member = np.asarray(members["face_member"], np.int64)
    ids = np.asarray(members["member_id"], dtype=object)
    if len(face_member) and face_member.max(initial=-1) >= len(ids):
        raise DataError(f"{where}: members.h5 face_member points past its {len(ids)} members; {fix}")
    return np.where(face_member >= 0, ids[np.clip(face_member, 0, None)] if len(ids) else "", "").astype(object)


# ----------------------------------------------------------------------------- writers / readers


def write_faces_h5(path: Path, rows: dict, attrs: dict) -> Path:
    """The rows as HDF5 datasets (names and dtypes of DATASETS), written atomically."""
    import h5py

    str_dt = h5py.string_dtype("utf-8")
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as h5:
            for name, dtype in DATASETS.items():
                values = rows[name]
                if dtype is str:
                    h5.create_dataset(name, data=np.asarray(values, dtype=object), dtype=str_dt)
                elif name == "landmarks_px" and len(values):
                    h5.create_dataset(name, data=values.astype(dtype), chunks=(min(len(values), 4096), N_POINTS, 2),
                                      compression="gzip", compression_opts=4, shuffle=True)
                else:
                    h5.create_dataset(name, data=np.asarray(values, dtype=dtype))
            h5.attrs.update(attrs)
            h5.attrs["kind"] = "faces"
            h5.attrs["schema_version"] = FACES_SCHEMA_VERSION
    return Path(path)


def _csv_field(text: str) -> str:
    if any(ch in text for ch in ',"\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


def write_faces_csv(path: Path, rows: dict, batch_rows: int = 20000) -> Path:
    """The rows as CSV (columns of csv_header), written atomically. float32 values are written with 9
    significant digits and float64 times in Python's shortest round-trip form: reading them back into
    float32 / float64 gives the HDF5 file's values exactly. NaN is written `nan`, booleans 1 / 0."""
    f32 = "%.9g"
    fmt = ",".join(["%d", "%d", "%r", "%r"] + [f32] * 5 + ["%d", "%d", f32] + [f32] * (2 * N_POINTS)
                   + [f32] * 3 + ["%d", "%s"]) + "\n"
    n = len(rows["frame_index"])
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as out:
            out.write(",".join(csv_header()) + "\n")
            for start in range(0, n, batch_rows):
                part = slice(start, min(n, start + batch_rows))
                box = rows["det_box_px"][part].astype(np.float64)
                lm = rows["landmarks_px"][part].astype(np.float64)
                pose = rows["pose_deg"][part].astype(np.float64)
                columns = ([rows["frame_index"][part].tolist(), rows["face_id"][part].tolist(),
                            rows["timestamp"][part].tolist(), rows["movie_time_s"][part].tolist()]
                           + [box[:, k].tolist() for k in range(4)]
                           + [rows["det_score"][part].astype(np.float64).tolist(), rows["det_band"][part].tolist(),
                              rows["fit_ok"][part].astype(int).tolist(),
                              rows["fit_score"][part].astype(np.float64).tolist()]
                           + [lm[:, i, 0].tolist() for i in range(N_POINTS)]
                           + [lm[:, i, 1].tolist() for i in range(N_POINTS)]
                           + [pose[:, k].tolist() for k in range(3)]
                           + [rows["frontal_ok"][part].astype(int).tolist(),
                              [_csv_field(str(m)) for m in rows["member_id"][part]]])
                out.write("".join(fmt % values for values in zip(*columns)))
    return Path(path)


def read_faces_h5(path: Path) -> tuple[dict, dict]:
    """(rows, attrs) of a .faces.h5 file (plain h5py would do as well; see data/README.md)."""
    import h5py

    with h5py.File(path, "r") as h5:
        rows = {name: h5[name][()] for name in h5}
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in h5.attrs.items()}
    if "member_id" in rows:
        rows["member_id"] = np.array([m.decode() if isinstance(m, bytes) else m for m in rows["member_id"]],
                                     dtype=object)
    return rows, attrs


def read_faces_csv(path: Path) -> dict:
    """A .faces.csv file → the rows as HDF5-shaped arrays (the inverse of write_faces_csv)."""
    import csv

    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        records = list(reader)
    if header != csv_header():
        raise DataError(f"{path}: not a faces CSV of schema version {FACES_SCHEMA_VERSION} (unexpected header).")
    col = {name: i for i, name in enumerate(header)}
    table = list(zip(*records)) if records else [()] * len(header)

    def numbers(names, dtype):
        values = np.array([[float(v) for v in table[col[name]]] for name in names], np.float64).T
        return values.astype(dtype).reshape(len(records), len(names))

    xs, ys = [f"x_{i}" for i in range(N_POINTS)], [f"y_{i}" for i in range(N_POINTS)]
    return {
        "frame_index": numbers(["frame_index"], np.int64)[:, 0], "face_id": numbers(["face_id"], np.int32)[:, 0],
        "timestamp": numbers(["timestamp"], np.float64)[:, 0],
        "movie_time_s": numbers(["movie_time_s"], np.float64)[:, 0],
        "det_box_px": numbers(BOX_COLUMNS, np.float32), "det_score": numbers(["det_score"], np.float32)[:, 0],
        "det_band": numbers(["det_band"], np.int8)[:, 0], "fit_ok": numbers(["fit_ok"], np.int8)[:, 0] == 1,
        "fit_score": numbers(["fit_score"], np.float32)[:, 0],
        "landmarks_px": np.stack([numbers(xs, np.float32), numbers(ys, np.float32)], axis=2),
        "pose_deg": numbers(POSE_COLUMNS, np.float32), "frontal_ok": numbers(["frontal_ok"], np.int8)[:, 0] == 1,
        "member_id": np.array(table[col["member_id"]], dtype=object),
    }


# ----------------------------------------------------------------------------- stage


def output_path(workspace: Workspace, movie: str, session: str, camera: str, fmt: str) -> Path:
    return workspace.root / EXPORT_DIR / movie / session / f"{camera}{SUFFIXES[fmt]}"


def plan(cfg, workspace: Workspace) -> list[Unit]:
    """One unit per movie, session, camera and format; inputs = every cache file the rows come from."""
    units = []
    for cam in find_caches(workspace):
        inputs = tuple(p for stage in CACHE_STAGES for p in cam.files[stage])
        inputs += tuple(p for p in (cam.members, cam.session_yaml) if p is not None)
        payload = (("landmarks", tuple(map(str, cam.files["landmarks"]))),
                   ("frontal", tuple(map(str, cam.files["frontalize"]))),
                   ("members", str(cam.members or "")), ("root", str(workspace.root)),
                   ("missing", tuple((s, tuple(cam.missing[s])) for s in ("landmarks", "frontalize"))))
        for fmt in SUFFIXES:
            units.append(Unit(stage="export", key=(cam.movie, cam.session, cam.camera, fmt), inputs=inputs,
                              outputs=((fmt, output_path(workspace, cam.movie, cam.session, cam.camera, fmt)),),
                              payload=payload))
    return units


def compute(unit: Unit, cfg, tmp_outputs: dict[str, Path]) -> None:
    from pipeline.screenings import session_offset_s

    movie, session, camera, fmt = unit.key
    where = f"{movie}/{session}/{camera}"
    for stage, chunks in unit.get("missing"):
        if chunks:
            raise DataError(f"{where}: no {stage} output for chunk(s) {', '.join(chunks)} "
                            f"(cache/{stage}/{where}/): run `audience run` first, or `audience {stage}`.")
    landmarks = [read_landmarks_chunk(Path(p)) for p in unit.get("landmarks")]
    frontal = [read_frontal_chunk(Path(p)) for p in unit.get("frontal")]
    members = read_members(Path(unit.get("members"))) if unit.get("members") else None
    offset = session_offset_s(Workspace(Path(unit.get("root"))), movie, session)
    rows = face_rows(landmarks, frontal, members, offset, where)
    if fmt == "csv":
        write_faces_csv(tmp_outputs["csv"], rows)
        return
    first = landmarks[0].attrs if landmarks else {}
    attrs = {k: first[k] for k in COPIED_ATTRS if k in first}
    attrs.update(movie=movie, session=session, camera=camera, offset_s=float(offset),
                 has_members=np.bool_(members is not None))
    write_faces_h5(tmp_outputs["h5"], rows, attrs)


EXPORT = Stage(name="export", help="per-face table of every detection → export/", version="1", sections=(),
               plan=plan, compute=compute)


# ----------------------------------------------------------------------------- command


@dataclass
class ExportReport:
    """What an export did: the runner's report, the cameras exported, warnings and per-file face counts."""
    stage: StageReport
    cameras: list
    formats: tuple
    warnings: list = field(default_factory=list)
    files: dict = field(default_factory=dict)   # camera name → (formats, (faces, with a member, members))

    @property
    def no_members(self) -> set:
        """Cameras exported without member ids (members.h5 missing)."""
        return {c.name for c in self.cameras if c.members is None}


def export_faces(cfg, workspace: Workspace, formats=("csv", "h5"), movie: str | None = None, *,
                 force: bool = False, workers: int = 1, progress: bool = True) -> ExportReport:
    """Export every camera of the workspace (or of one movie); failures are collected, not raised,
    except a workspace with nothing to export (DataError)."""
    cameras = find_caches(workspace, movie)
    warnings = check_caches(workspace, cameras, movie)
    for text in warnings:
        print(f"warning: {text}", file=sys.stderr, flush=True)
    formats = tuple(formats)
    select = (lambda u: u.key[3] in formats and (movie is None or u.key[0] == movie))
    report = run_stage(EXPORT, cfg, workspace, workers=workers, force=force, select=select, progress=progress)
    result = ExportReport(report, cameras, formats, warnings)
    for cam in cameras:
        written = [output_path(workspace, cam.movie, cam.session, cam.camera, fmt) for fmt in formats
                   if f"{cam.name}/{fmt}" not in report.failed]
        written = [path for path in written if path.is_file()]
        if written:   # counted from the HDF5 file when there is one (cheaper than parsing the CSV)
            result.files[cam.name] = ([p.name.rsplit(".", 1)[1] for p in written], file_counts(written[-1]))
    return result


def file_counts(path: Path) -> tuple[int, int, int]:
    """(faces, faces with a member, distinct members) of an exported .faces.h5 or .faces.csv file."""
    import csv

    import h5py

    if str(path).endswith(SUFFIXES["h5"]):
        with h5py.File(path, "r") as h5:
            ids = [m.decode() if isinstance(m, bytes) else m for m in h5["member_id"][()]]
    else:
        with open(path, newline="") as handle:
            reader = csv.reader(handle)
            next(reader)
            ids = [record[-1] for record in reader]
    named = [m for m in ids if m]
    return len(ids), len(named), len(set(named))


def print_summary(result: ExportReport, root: Path, max_lines: int = 20) -> None:
    report = result.stage
    print(f"export-faces: {len(report.done)} file(s) written, {len(report.skipped)} up to date, "
          f"{len(report.failed)} failed, {report.seconds:.1f} s → {Path(root) / EXPORT_DIR}")
    if result.files:
        print(f"  {'movie/session/camera':<40} {'faces':>8} {'with member':>12} {'members':>8}  files")
        for i, (name, (kinds, (faces, named, members))) in enumerate(sorted(result.files.items())):
            if i == max_lines:
                print(f"  … {len(result.files) - max_lines} more camera(s)")
                break
            share = f"{named} ({100.0 * named / faces:.0f}%)" if faces else "0"
            if name in result.no_members:
                share, members = "-", "missing"
            print(f"  {name:<40} {faces:>8} {share:>12} {members:>8}  {' '.join(kinds)}")
        total = sum(counts[0] for _, counts in result.files.values())
        print(f"  {'total':<40} {total:>8}")
    for text in result.warnings:
        print(f"warning: {text}")
    if report.failed:
        print(f"\n{len(report.failed)} file(s) failed (the others are written; fix and rerun):")
        for unit, err in sorted(report.failed.items()):
            print(f"  {unit}: {err.strip().splitlines()[-1] if err.strip() else err}")


def _cmd_export(args, cfg) -> int:
    workspace = Workspace(Path(cfg.workspace.root))
    result = export_faces(cfg, workspace, FORMAT_CHOICES[args.format], args.movie, force=args.force,
                          workers=cfg.workspace.workers, progress=not args.quiet)
    print_summary(result, workspace.root)
    return 1 if result.stage.failed else 0


def register(subparsers) -> None:
    """`audience export-faces`: the per-face CSV / HDF5 export (handler(args, cfg))."""
    text = ("write every detected face (frame, time, box, 68 image landmarks, fit score, pose, member) to "
            "export/<movie>/<session>/<camera>.faces.csv / .faces.h5 (columns: data/README.md)")
    parser = subparsers.add_parser("export-faces", help="per-face CSV / HDF5 table of every detection",
                                   description=text)
    parser.add_argument("--format", choices=tuple(FORMAT_CHOICES), default="both",
                        help="csv, h5 or both (default both)")
    parser.set_defaults(handler=_cmd_export)


__all__ = ["EXPORT", "export_faces", "face_rows", "csv_header", "write_faces_csv", "write_faces_h5",
           "read_faces_csv", "read_faces_h5", "find_caches", "check_caches", "output_path", "register"]
