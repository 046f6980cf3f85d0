"""The per-row report printed by `run`: what was searched, what was found, and loud warnings."""
import dataclasses

import pytest

from pipeline.detect import read_geometry, survey_path
from pipeline.geometry import Geometry
from pipeline.rows_report import camera_report, rows_report
from pipeline.runner import run_stage
from pipeline.stages import get_stage


@pytest.fixture(scope="module")
def screening(tmp_path_factory):
    from pipeline.synthetic.testing import make_test_screening

    screening = make_test_screening(tmp_path_factory.mktemp("rows"), duration_s=3.0)
    cfg = screening.config
    cfg = cfg.replace(detect=dataclasses.replace(cfg.detect, use_known_rows=False))
    for name in ("survey", "detect", "landmarks", "frontalize", "members"):
        assert not run_stage(get_stage(name), cfg, screening.workspace, progress=False).failed
    return screening, cfg


def test_every_row_of_the_survey_is_reported_with_its_faces_and_members(screening):
    screening, cfg = screening
    (report,) = rows_report(screening.workspace, cfg)
    table = [line for line in report.lines if line.strip()[:1].isdigit()]
    survey = read_geometry(survey_path(screening.workspace, "synthmovie", "s01", "cam0"))
    assert len(table) == len(survey.rows) >= 3
    from pipeline.store import read_members

    members = read_members(screening.workspace.stage_output("members", "synthmovie", "s01", "cam0", "members"))
    assert sum(int(line.split()[-1]) for line in table) == len(members["member_id"]) > 0   # every member in a row
    assert all(float(line.split()[-2]) > 0 for line in table)                              # faces in every row
    assert not report.warnings, report.warnings


def test_missing_members_and_a_row_the_seat_map_leaves_out_are_warned(screening):
    screening, cfg = screening
    ws = screening.workspace
    survey = read_geometry(survey_path(ws, "synthmovie", "s01", "cam0"))
    seat_map = Geometry("seat map", survey.rows[:1], (), survey.frame_hw)          # forgets the other rows
    members = ws.stage_output("members", "synthmovie", "s01", "cam0", "members")
    report = camera_report("cam", members, seat_map, survey, min_observed_fraction=0.2)
    left_out = [w for w in report.warnings if "seat map searches no row" in w]
    assert len(left_out) == len(survey.rows) - 1
    import h5py

    with h5py.File(members, "r+") as h5:          # as if most seats had been seen too rarely
        h5.attrs["seats_discovered"] = 10 * len(h5["member_id"])
    report = camera_report("cam", members, survey, None, min_observed_fraction=0.2)
    assert any("seats with faces became members" in w for w in report.warnings)


def test_far_more_members_than_faces_in_a_frame_is_warned(screening, tmp_path):
    """The issue's case: a threshold that lets false detections settle into seats gave 372 'members' for 39
    people. Members here are made to outnumber the faces of a busy frame three to one."""
    import shutil

    import h5py
    import numpy as np

    screening, cfg = screening
    ws = screening.workspace
    survey = read_geometry(survey_path(ws, "synthmovie", "s01", "cam0"))
    members = tmp_path / "members.h5"
    shutil.copy(ws.stage_output("members", "synthmovie", "s01", "cam0", "members"), members)
    assert not [w for w in camera_report("cam", members, survey, None, 0.2).warnings if "implausible" in w]
    with h5py.File(members, "r+") as h5:
        per_frame = np.bincount(h5["face_frame"][()]).max()
        seats = h5["seat_xy_px"][()]
        many = np.concatenate([seats] * int(np.ceil(3 * per_frame / len(seats))))
        del h5["seat_xy_px"]
        h5["seat_xy_px"] = many
    warned = [w for w in camera_report("cam", members, survey, None, 0.2).warnings if "implausible" in w]
    assert len(warned) == 1 and "detect.threshold" in warned[0]
