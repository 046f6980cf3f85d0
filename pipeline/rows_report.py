"""What each run searched and found, row by row, with loud warnings (printed at the end of `run`).

For every recording with a members file: each searched row (from the seat
map, the session's bands or the survey) with its detector, face size, faces
found per sampled frame and members made there; faces found outside the rows
(rescans); and warnings when a row with faces yields no member, when far fewer
members than seats with faces come out, when small faces were searched by the
front detector, or when the survey saw faces in a region a seat map leaves out.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.geometry import BAND_NAMES, Geometry, Row, geometry_from_session
from pipeline.store import DataError, Workspace, read_members

MIN_MEMBER_SHARE = 0.8      # warn when fewer than this share of the seats with faces become members
MAX_MEMBERS_PER_FACE = 1.5  # warn when members outnumber the faces of a busy frame by more than this


@dataclass
class CameraReport:
    name: str
    lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _in_strip(row: Row, xy: np.ndarray) -> np.ndarray:
    s = row.strip
    inside = (xy[:, 1] >= s.top_px) & (xy[:, 1] < s.bottom_px)
    if s.right_px:
        inside &= (xy[:, 0] >= s.left_px) & (xy[:, 0] < s.right_px)
    return inside


def camera_report(name: str, members_path: Path, geometry: Geometry, survey: Geometry | None,
                  min_observed_fraction: float) -> CameraReport:
    faces = read_members(members_path)
    box = faces["face_box_px"]
    centres = np.stack([(box[:, 0] + box[:, 2]) / 2, (box[:, 1] + box[:, 3]) / 2], axis=1)
    n_frames = max(int(faces["frame_ok"].sum()), 1)
    seats = faces["seat_xy_px"]
    report = CameraReport(name, warnings=[f"{name}: {n}" for n in geometry.notes if not n.startswith("info: ")])
    report.lines.append(f"{name}: rows from the {geometry.source}, {n_frames} good sampled frames")
    report.lines.append(f"  {'row y px':>9} {'searched y px':>14} {'face px':>8} {'detector':>9} {'faces/frame':>12} "
                        f"{'members':>8}")
    counted = np.zeros(len(centres), bool)
    for row in geometry.rows:
        here = _in_strip(row, centres) & ~counted
        counted |= here
        members = int(_in_strip(row, seats).sum()) if len(seats) else 0
        per_frame = here.sum() / n_frames
        report.lines.append(f"  {row.y_px:>9.0f} {f'{row.strip.top_px}-{row.strip.bottom_px}':>14} {row.face_px:>8.0f} "
                            f"{BAND_NAMES[row.strip.band_id]:>9} {per_frame:>12.1f} {members:>8}")
        if per_frame >= 0.5 and members == 0:
            report.warnings.append(f"{name}: the row at y={row.y_px:.0f} px has {per_frame:.1f} faces per frame but no "
                                   f"member (faces too unsteady to make seats?): check it with `audience inspect`.")
    report.lines += [f"  ({n[len('info: '):]})" for n in geometry.notes if n.startswith("info: ")]
    if (~counted).any():
        report.lines.append(f"  {'other':>9} {'(rescans)':>14} {'':>8} {'':>9} {(~counted).sum() / n_frames:>12.1f}")
    discovered = int(faces.attrs.get("seats_discovered", len(seats)))
    report.lines.append(f"  members {len(seats)} of {discovered} seats with faces "
                        f"(a seat becomes a member when seen in ≥ {min_observed_fraction:g} of the frames)")
    if discovered and len(seats) < MIN_MEMBER_SHARE * discovered:
        report.warnings.append(f"{name}: only {len(seats)} of {discovered} seats with faces became members; the others "
                               f"were seen in too few frames (low detector recall in some rows, or people who left). "
                               f"Look at the rows above; retrain the detectors on your footage "
                               f"(`audience label-frames`, `audience train-detector`) or lower "
                               f"members.min_observed_fraction.")
    busy = float(np.percentile(np.bincount(faces["face_frame"], minlength=n_frames), 90)) if len(box) else 0.0
    if len(seats) > MAX_MEMBERS_PER_FACE * busy + 2:
        report.warnings.append(f"{name}: {len(seats)} members, but a busy frame shows only {busy:.0f} faces: an "
                               f"audience member is a seat seen in many frames, so most of these are implausible "
                               f"(false detections that settled into seats?). Check detect.threshold and the "
                               f"overlays of `audience inspect` before trusting the tensor.")
    if survey is not None and geometry.source == "seat map":
        for row in survey.rows:
            if not any(r.strip.top_px <= row.y_px < r.strip.bottom_px for r in geometry.rows):
                report.warnings.append(f"{name}: the survey found {row.faces} faces at y={row.y_px:.0f} px "
                                       f"({row.face_px:.0f} px) where the seat map searches no row: add that row "
                                       f"to session.yaml or set detect.use_known_rows=false.")
    return report


def rows_report(workspace: Workspace, cfg, movie: str | None = None) -> list[CameraReport]:
    """One report per recording that has a members file."""
    from pipeline.detect import find_videos, read_geometry, read_session_meta, survey_path
    from pipeline.sources import probe_video

    reports = []
    for mv, session, camera, video in find_videos(workspace):
        members = workspace.stage_output("members", mv, session, camera, "members")
        if (movie and mv != movie) or not members.is_file():
            continue
        name = f"{mv}/{session}/{camera}"
        try:
            spath = survey_path(workspace, mv, session, camera)
            survey = read_geometry(spath) if spath.is_file() else None
            info = probe_video(video)
            given = geometry_from_session(cfg, info.height_px, info.width_px, read_session_meta(video.parent))
            geometry = given or survey
            if geometry is None:
                continue
            reports.append(camera_report(name, members, geometry, survey, cfg.members.min_observed_fraction))
        except DataError as err:
            reports.append(CameraReport(name, warnings=[f"{name}: no row report ({err})"]))
    return reports


def print_rows_report(reports: list[CameraReport], max_cameras: int = 8) -> None:
    if not reports:
        return
    print("\nwhere faces were searched and found, per row:")
    for r in reports[:max_cameras]:
        print("\n".join(r.lines))
    if len(reports) > max_cameras:
        print(f"(and {len(reports) - max_cameras} more recordings; their warnings follow)")
    warnings = [w for r in reports for w in r.warnings]
    if warnings:
        print(f"\nWARNING: {len(warnings)} problem(s) with where faces were looked for:")
        for w in warnings:
            print(f"  ! {w}")


__all__ = ["rows_report", "print_rows_report", "camera_report", "CameraReport"]
