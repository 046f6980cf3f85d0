"""The screening list: which recordings belong to which movie, session and
camera, and where each session starts on the movie's time axis.

A screening list is a YAML file:

    screenings:
      - movie: inside_out
        session: 2016-05-01_evening
        camera: cam0
        path: /recordings/io_0501_cam0.mp4
        offset_s: 12.5      # recording start relative to the movie start

Registering it links each recording into the workspace layout
(`raw/<movie>/<session>/<camera>.<ext>`) and writes the offset into
`raw/<movie>/<session>/session.yaml`, so every stage reads one layout.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from pipeline.store import DataError, Workspace, ensure_dir, write_text_atomic

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".m4v")
REQUIRED_KEYS = ("movie", "session", "camera", "path")


@dataclass(frozen=True)
class Screening:
    movie: str
    session: str
    camera: str
    path: Path
    offset_s: float = 0.0


def read_screening_list(path: Path) -> list[Screening]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"screening list not found: {path}. Pass an existing YAML file (see "
                        f"pipeline/screenings.py for the format).")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise DataError(f"{path}: not valid YAML{where} ({problem}). Fix the file (see pipeline/screenings.py "
                        f"for the format); nothing has been registered.") from None
    entries = data.get("screenings") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise DataError(f"{path}: expected a top-level 'screenings:' list with at least one entry.")
    screenings, problems = [], []
    for number, entry in enumerate(entries, 1):
        missing = [k for k in REQUIRED_KEYS if not isinstance(entry, dict) or k not in entry]
        if missing:
            problems.append(f"entry {number}: missing {', '.join(missing)}")
            continue
        unknown = set(entry) - set(REQUIRED_KEYS) - {"offset_s"}
        if unknown:
            problems.append(f"entry {number}: unknown key(s) {', '.join(sorted(unknown))}")
            continue
        video = Path(entry["path"]).expanduser()
        if not video.is_absolute():
            video = (path.parent / video).resolve()
        if not video.is_file():
            problems.append(f"entry {number} ({entry['movie']}/{entry['session']}/{entry['camera']}): "
                            f"recording not found: {video}")
            continue
        offset = entry.get("offset_s", 0.0)
        try:
            offset_s = float(offset)
            if isinstance(offset, bool) or not math.isfinite(offset_s):
                raise ValueError
        except (TypeError, ValueError):
            problems.append(f"entry {number} ({entry['movie']}/{entry['session']}/{entry['camera']}): offset_s "
                            f"must be a number of seconds (the recording's start on the movie clock, e.g. "
                            f"12.5 or -3), got {offset!r}")
            continue
        bad_names = [f"{k}={entry[k]!r}" for k in ("movie", "session", "camera")
                     if not str(entry[k]).strip() or "/" in str(entry[k]) or str(entry[k]).startswith(".")]
        if bad_names:
            problems.append(f"entry {number}: {', '.join(bad_names)} cannot name a folder (no '/', no leading '.')")
            continue
        screenings.append(Screening(str(entry["movie"]), str(entry["session"]), str(entry["camera"]),
                                    video, offset_s))
    if problems:
        raise DataError(f"{path}: " + "; ".join(problems) + ". Fix these entries and rerun; "
                        f"nothing has been registered.")
    return screenings


def register(screenings: list[Screening], workspace: Workspace) -> list[Path]:
    """Link recordings into raw/<movie>/<session>/<camera>.<ext>; write each session's offset.

    Registration follows the list: a linked recording of one of the list's movies that the list no longer
    names is unlinked (a recording copied into raw/, not linked, is never touched), so removing a bad
    entry and rerunning works. A link to another file is pointed at the list's file."""
    linked = []
    offsets: dict[tuple[str, str], float] = {}
    for s in screenings:
        folder = ensure_dir(workspace.session_dir(s.movie, s.session))
        target = folder / f"{s.camera}{s.path.suffix.lower()}"
        if target.is_symlink():
            if target.resolve() != s.path.resolve():
                target.unlink()
                os.symlink(s.path.resolve(), target)
        elif target.exists():
            if target.resolve() != s.path.resolve():
                raise DataError(f"{target} already holds another recording (a file, not a link to "
                                f"{s.path}); use another camera name or remove it.")
        else:
            os.symlink(s.path.resolve(), target)
        linked.append(target)
        previous = offsets.setdefault((s.movie, s.session), s.offset_s)
        if previous != s.offset_s:
            raise DataError(f"session {s.movie}/{s.session} has two offsets ({previous} and {s.offset_s}); "
                            f"all cameras of a session share one offset.")
    wanted = set(linked)
    for movie in sorted({s.movie for s in screenings}):
        for _, _, _, path in discover_recordings(workspace, movie):
            if path.is_symlink() and path not in wanted:
                path.unlink()
                print(f"unregistered {path}: the screening list no longer names it")
    for (movie, session), offset in offsets.items():
        meta_path = workspace.session_dir(movie, session) / "session.yaml"
        meta = yaml.safe_load(meta_path.read_text()) if meta_path.exists() else {}
        if meta.get("offset_s") != offset:
            meta["offset_s"] = offset
            write_text_atomic(meta_path, yaml.safe_dump(meta, sort_keys=False))
    return linked


def discover_recordings(workspace: Workspace, movie: str | None = None) -> list[tuple[str, str, str, Path]]:
    """(movie, session, camera, path) for every recording in raw/, sorted."""
    found = []
    if not workspace.raw.is_dir():
        return found
    for path in sorted(workspace.raw.glob("*/*/*")):
        if path.suffix.lower() in VIDEO_EXTENSIONS and not path.name.startswith("."):
            m, s = path.parent.parent.name, path.parent.name
            if movie is None or m == movie:
                found.append((m, s, path.stem, path))
    return found


def session_offset_s(workspace: Workspace, movie: str, session: str) -> float:
    meta_path = workspace.session_dir(movie, session) / "session.yaml"
    if not meta_path.exists():
        return 0.0
    meta = yaml.safe_load(meta_path.read_text()) or {}
    return float(meta.get("offset_s", 0.0))
