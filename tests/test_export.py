"""`audience export-faces`: the per-face CSV / HDF5 export of a tiny screening run through the real stages.

Checked against the caches it is read from (one row per detection, landmarks, pose, member ids, movie
time), CSV against HDF5, both against their schemas in data/README.md, and the error and warning paths."""
import csv
import dataclasses
import re
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from contract import check_file, documented_layout, documented_schemas
from pipeline import cli
from pipeline.export import (EXPORT_DIR, _face_ids, csv_header, export_faces, face_rows, read_faces_csv,
                             read_faces_h5)
from pipeline.store import DataError, Workspace, read_frontal_chunk, read_landmarks_chunk, read_members

pytestmark = pytest.mark.filterwarnings("ignore:All-NaN slice:RuntimeWarning")


@pytest.fixture(scope="module")
def screening(tmp_path_factory):
    """Two sessions (different offsets) × one camera of 2 small seat rows, 2 s in 1 s chunks, through
    every video → tensor stage (as tests/test_data_contract.py; a few seconds)."""
    from pipeline.runner import run_stage
    from pipeline.stages import VIDEO_TO_TENSOR, get_stage
    from pipeline.synthetic.config import SMALL
    from pipeline.synthetic.testing import make_test_screening

    theatre = dataclasses.replace(SMALL, rows=2, seats_front=3, seats_back=4)
    made = make_test_screening(tmp_path_factory.mktemp("export"), duration_s=2.0, sessions=2, cameras=1,
                               small=theatre)
    cfg = made.config.replace(sources=dataclasses.replace(made.config.sources, chunk_s=1.0))
    for name in VIDEO_TO_TENSOR:
        report = run_stage(get_stage(name), cfg, made.workspace, progress=False)
        assert not report.failed, report.failed
    return made.workspace.root


@pytest.fixture(scope="module")
def exported(screening):
    code = cli.main(["export-faces", "--workspace", str(screening), "--quiet"])
    assert code == 0
    return screening


def _cameras(root: Path) -> list[Path]:
    """cache/landmarks/<movie>/<session>/<camera> folders."""
    return sorted(p for p in (root / "cache" / "landmarks").glob("*/*/*") if p.is_dir())


def _export_file(root: Path, camera_dir: Path, suffix: str) -> Path:
    movie, session, camera = camera_dir.parts[-3:]
    return root / EXPORT_DIR / movie / session / f"{camera}.faces.{suffix}"


def _caches(root: Path, camera_dir: Path):
    rel = camera_dir.relative_to(root / "cache" / "landmarks")
    chunks = sorted(camera_dir.glob("*.h5"))
    landmarks = [read_landmarks_chunk(p) for p in chunks]
    frontal = [read_frontal_chunk(root / "cache" / "frontalize" / rel / p.name) for p in chunks]
    members = read_members(root / "cache" / "members" / rel / "members.h5")
    return landmarks, frontal, members


def _copy(root: Path, tmp_path: Path) -> Path:
    target = tmp_path / "ws"
    shutil.copytree(root, target, ignore=shutil.ignore_patterns(EXPORT_DIR))
    return target


# ----------------------------------------------------------------------------- values


def test_rows_equal_the_caches(exported):
    cameras = _cameras(exported)
    assert len(cameras) == 2
    offsets = set()
    for camera_dir in cameras:
        landmarks, frontal, members = _caches(exported, camera_dir)
        rows, attrs = read_faces_h5(_export_file(exported, camera_dir, "h5"))
        cat = lambda name, arrays=landmarks: np.concatenate([a[name] for a in arrays])  # noqa: E731
        det_frame = [a["det_frame"] for a in landmarks]
        n = sum(map(len, det_frame))
        assert n > 0 and len(rows["frame_index"]) == n, "one row per detection"
        assert np.array_equal(rows["frame_index"], np.concatenate([a["frame_index"][f] for a, f in
                                                                   zip(landmarks, det_frame)]))
        time_s = np.concatenate([a["frame_time_s"][f] for a, f in zip(landmarks, det_frame)])
        assert np.array_equal(rows["timestamp"], time_s)
        for name in ("det_box_px", "det_score", "det_band", "fit_ok"):
            assert np.array_equal(rows[name], cat(name)), name
        assert np.array_equal(rows["landmarks_px"], cat("landmarks_px"), equal_nan=True)
        assert np.array_equal(rows["pose_deg"], cat("pose_deg", frontal), equal_nan=True)
        assert np.array_equal(rows["frontal_ok"], cat("frontal_ok", frontal))
        assert np.array_equal(rows["fit_score"], members["face_fit_score"], equal_nan=True)
        assert np.isfinite(rows["fit_score"][members["face_member"] >= 0]).any()
        # member ids: members.h5 face_member → member_id, checked face by face on time and box
        assert np.array_equal(members["face_time_s"], rows["timestamp"])
        assert np.array_equal(members["face_box_px"], rows["det_box_px"])
        expected = [members["member_id"][m] if m >= 0 else "" for m in members["face_member"]]
        assert list(rows["member_id"]) == expected and any(expected)
        # movie time = recording time + the session's offset_s
        session_dir = exported / "raw" / camera_dir.parts[-3] / camera_dir.parts[-2]
        offset = yaml.safe_load((session_dir / "session.yaml").read_text())["offset_s"]
        offsets.add(offset)
        assert attrs["offset_s"] == offset and attrs["has_members"]
        assert np.allclose(rows["movie_time_s"], rows["timestamp"] + offset, atol=1e-9, rtol=0)
        # (frame_index, face_id) is a key
        keys = set(zip(rows["frame_index"].tolist(), rows["face_id"].tolist()))
        assert len(keys) == n and rows["face_id"].min() == 0
    assert len(offsets) == 2, "the two sessions should have different offsets"


def test_some_faces_have_no_member_and_are_written_empty(exported):
    ids = np.concatenate([read_faces_h5(_export_file(exported, c, "h5"))[0]["member_id"] for c in _cameras(exported)])
    members = np.concatenate([_caches(exported, c)[2]["face_member"] for c in _cameras(exported)])
    assert ((ids == "") == (members < 0)).all()


def test_csv_and_h5_agree(exported):
    for camera_dir in _cameras(exported):
        h5_rows, _ = read_faces_h5(_export_file(exported, camera_dir, "h5"))
        csv_rows = read_faces_csv(_export_file(exported, camera_dir, "csv"))
        assert set(csv_rows) == set(h5_rows)
        for name, values in h5_rows.items():
            assert csv_rows[name].dtype == values.dtype or name == "member_id", name
            assert np.array_equal(csv_rows[name], values, equal_nan=values.dtype.kind == "f"), name


def test_csv_reads_with_the_standard_library_alone(exported):
    camera_dir = _cameras(exported)[0]
    h5_rows, _ = read_faces_h5(_export_file(exported, camera_dir, "h5"))
    with open(_export_file(exported, camera_dir, "csv"), newline="") as handle:
        records = list(csv.DictReader(handle))
    assert len(records) == len(h5_rows["frame_index"])
    first = records[0]
    assert int(first["frame_index"]) == h5_rows["frame_index"][0]
    assert np.float32(float(first["x_30"])) == h5_rows["landmarks_px"][0, 30, 0]
    assert np.float32(float(first["y_67"])) == h5_rows["landmarks_px"][0, 67, 1]
    assert float(first["movie_time_s"]) == h5_rows["movie_time_s"][0]
    assert np.float32(float(first["yaw_deg"])) == h5_rows["pose_deg"][0, 0]
    assert first["member_id"] == h5_rows["member_id"][0]


def test_fit_score_is_the_members_fit_score(exported):
    landmarks, frontal, members = _caches(exported, _cameras(exported)[0])
    members.arrays["face_fit_score"] = np.linspace(0, 1, len(members["face_member"])).astype(np.float32)
    rows = face_rows(landmarks, frontal, members, 2.5)
    assert np.array_equal(rows["fit_score"], members["face_fit_score"])
    assert np.array_equal(rows["movie_time_s"], rows["timestamp"] + 2.5)
    assert np.isnan(face_rows(landmarks, frontal, None, 2.5)["fit_score"]).all()


def test_face_ids_count_faces_within_each_frame():
    assert _face_ids(np.array([0, 0, 0, 1, 1, 3])).tolist() == [0, 1, 2, 0, 1, 0]
    assert _face_ids(np.array([2, 0, 2, 0])).tolist() == [0, 0, 1, 1]
    assert _face_ids(np.zeros(0, int)).tolist() == []


# ----------------------------------------------------------------------------- data contract


def _csv_schema_columns() -> list[dict]:
    """The faces_csv rows with `x_{0..67}` expanded into x_0 … x_67."""
    out = []
    for row in documented_schemas()["faces_csv"]:
        match = re.fullmatch(r"(.*)\{(\d+)\.\.(\d+)\}", row["name"])
        names = [f"{match.group(1)}{i}" for i in range(int(match.group(2)), int(match.group(3)) + 1)] if match \
            else [row["name"]]
        out += [dict(row, name=name) for name in names]
    return out


def _parses(value: str, dtype: str) -> bool:
    try:
        if dtype.startswith("int"):
            int(value)
        elif dtype.startswith("float"):
            float(value)
        return True
    except ValueError:
        return False


def test_exports_follow_their_documented_schemas(exported):
    columns = _csv_schema_columns()
    assert all(c["kind"] == "column" and c["shape"] == "(D,)" for c in columns)
    assert [c["name"] for c in columns] == csv_header(), "data/README.md documents every column, in order"
    for camera_dir in _cameras(exported):
        sizes = {}
        h5_path = _export_file(exported, camera_dir, "h5")
        assert check_file(h5_path, documented_schemas()["faces_h5"], sizes=sizes) == [], h5_path
        with open(_export_file(exported, camera_dir, "csv"), newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader)
            records = list(reader)
        assert header == [c["name"] for c in columns]
        assert len(records) == sizes["D"]
        for record in records:
            assert len(record) == len(columns)
            bad = [c["name"] for c, v in zip(columns, record) if not _parses(v, c["dtype"])]
            assert not bad, bad
            flags = [v for c, v in zip(columns, record) if c["name"] in ("fit_ok", "frontal_ok")]
            assert set(flags) <= {"0", "1"}


def test_export_paths_are_in_the_folder_layout(exported):
    patterns = [re.compile("[^/]+".join(map(re.escape, re.split(r"<[^>]+>", p))) + "$")
                for p in documented_layout() if p.startswith(EXPORT_DIR + "/")]
    assert len(patterns) == 2
    files = sorted(p for p in (exported / EXPORT_DIR).rglob("*") if p.is_file())
    for path in files:
        rel = path.relative_to(exported).as_posix().removesuffix(".manifest.json")
        assert any(p.match(rel) for p in patterns), rel


# ----------------------------------------------------------------------------- reruns, formats, filters


def test_rerun_skips_unchanged_files_and_redoes_changed_inputs(screening, tmp_path, capsys):
    root = _copy(screening, tmp_path)
    ws = Workspace(root)
    from configs.schema import ProjectConfig

    cfg = ProjectConfig()
    first = export_faces(cfg, ws, progress=False)
    assert len(first.stage.done) == 4 and not first.stage.failed
    again = export_faces(cfg, ws, progress=False)
    assert again.stage.done == [] and len(again.stage.skipped) == 4
    # a new offset in one session.yaml: only that session's two files are rewritten, with the new movie time
    session_yaml = sorted(root.glob("raw/*/*/session.yaml"))[0]
    meta = yaml.safe_load(session_yaml.read_text())
    meta["offset_s"] = 100.0
    session_yaml.write_text(yaml.safe_dump(meta))
    third = export_faces(cfg, ws, progress=False)
    assert len(third.stage.done) == 2 and len(third.stage.skipped) == 2
    movie, session = session_yaml.parent.parts[-2:]
    rows, _ = read_faces_h5(next((root / EXPORT_DIR / movie / session).glob("*.faces.h5")))
    assert np.array_equal(rows["movie_time_s"], rows["timestamp"] + 100.0)
    forced = export_faces(cfg, ws, force=True, progress=False)
    assert len(forced.stage.done) == 4


def test_format_and_movie_options(screening, tmp_path, capsys):
    root = _copy(screening, tmp_path)
    assert cli.main(["export-faces", "--workspace", str(root), "--format", "csv", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "2 file(s) written" in out and "synthmovie/s01/cam0" in out
    assert sorted(p.name for p in (root / EXPORT_DIR).rglob("*.faces.*") if not p.name.endswith(".json")) == \
        ["cam0.faces.csv", "cam0.faces.csv"]
    code = cli.main(["export-faces", "--workspace", str(root), "--movie", "nosuchmovie", "--quiet"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_USER_ERROR and "nosuchmovie" in err and "synthmovie" in err


# ----------------------------------------------------------------------------- missing and stale inputs


def test_workspace_without_outputs_is_a_clear_error(tmp_path, capsys):
    code = cli.main(["export-faces", "--workspace", str(tmp_path / "empty"), "--quiet"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_USER_ERROR and "no face detections" in err and "audience run" in err


@pytest.mark.parametrize("stage", ["landmarks", "frontalize"])
def test_missing_vision_stage_is_named(screening, tmp_path, stage):
    root = _copy(screening, tmp_path)
    shutil.rmtree(root / "cache" / stage)
    with pytest.raises(DataError, match=f"no {stage} outputs.*audience run"):
        export_faces(None, Workspace(root), progress=False)


def test_missing_chunk_fails_that_camera_only(screening, tmp_path):
    root = _copy(screening, tmp_path)
    victim = sorted((root / "cache" / "frontalize").glob("*/*/*/000001.0.h5"))[0]
    victim.unlink()
    result = export_faces(None, Workspace(root), progress=False)
    assert len(result.stage.failed) == 2 and len(result.stage.done) == 2
    assert all("no frontalize output for chunk(s) 000001.0" in e and "audience run" in e
               for e in result.stage.failed.values())


def test_missing_members_is_a_partial_export_with_a_warning(screening, tmp_path, capsys):
    root = _copy(screening, tmp_path)
    members = sorted((root / "cache" / "members").glob("*/*/*/members.h5"))
    members[0].unlink()
    code = cli.main(["export-faces", "--workspace", str(root), "--quiet"])
    captured = capsys.readouterr()
    assert code == 0
    assert "warning: members.h5 missing for 1 of 2 camera(s)" in captured.err
    assert "member_id" in captured.out and "audience members" in captured.out     # repeated under the summary
    rel = members[0].parent.relative_to(root / "cache" / "members")
    rows, attrs = read_faces_h5(root / EXPORT_DIR / rel.parent / f"{rel.name}.faces.h5")
    assert not attrs["has_members"] and len(rows["member_id"]) and (rows["member_id"] == "").all()
    csv_rows = read_faces_csv(root / EXPORT_DIR / rel.parent / f"{rel.name}.faces.csv")
    assert (csv_rows["member_id"] == "").all()
    other = members[1].parent.relative_to(root / "cache" / "members")
    rows, attrs = read_faces_h5(root / EXPORT_DIR / other.parent / f"{other.name}.faces.h5")
    assert attrs["has_members"] and (rows["member_id"] != "").any()


def test_out_of_date_members_is_an_error_naming_the_stage(screening, tmp_path, capsys):
    """members.h5 of another session in this camera's place: the faces do not line up."""
    root = _copy(screening, tmp_path)
    first, second = sorted((root / "cache" / "members").glob("*/*/*/members.h5"))
    shutil.copy(second, first)
    code = cli.main(["export-faces", "--workspace", str(root), "--quiet"])
    out = capsys.readouterr().out
    assert code == 1
    assert "2 file(s) failed" in out and "out of date" in out and "audience members" in out


def test_out_of_date_frontal_chunk_is_an_error(screening, tmp_path):
    root = _copy(screening, tmp_path)
    chunk = sorted((root / "cache" / "frontalize").glob("*/*/*/000000.0.h5"))[0]
    with h5py.File(chunk, "r+") as h5:
        box = h5["det_box_px"][()]
        box[0, 0] += 1
        h5["det_box_px"][...] = box
    result = export_faces(None, Workspace(root), progress=False)
    assert len(result.stage.failed) == 2
    assert all("audience frontalize" in e for e in result.stage.failed.values())


def test_help():
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["export-faces", "--help"])
    assert exit_info.value.code == 0
