"""Files written by the pipeline follow the schemas documented in data/README.md, both ways:
every documented field is there with its dtype and shape, and every field written is documented."""
import dataclasses
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from contract import check_file, check_yaml, documented_layout, documented_schemas, tag_of
from pipeline.store import MovieTensor, write_movie_tensor

# schema name → (files of that kind under the workspace, tags of the rows the writer always writes)
KINDS = {
    "truth": ("raw/*/*/*.truth.h5", ()),
    "session": ("raw/*/*/session.yaml", ("synthetic",)),
    "geometry": ("cache/survey/*/*/*/geometry.yaml", ()),
    "detections": ("cache/detect/*/*/*/*.h5", ()),
    "landmarks": ("cache/landmarks/*/*/*/*.h5", ()),
    "frontal": ("cache/frontalize/*/*/*/*.h5", ()),
    "members": ("cache/members/*/*/*/members.h5", ()),
    "tensor": ("tensors/*.h5", ("bin stage",)),
}
pytestmark = pytest.mark.filterwarnings("ignore:All-NaN slice:RuntimeWarning")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """One tiny synthetic screening (2 s, 1 session, 2 cameras of 2 seat rows, 1 s chunks) through
    every stage: a few seconds, most of it loading the landmark model."""
    from pipeline.runner import run_stage
    from pipeline.stages import VIDEO_TO_TENSOR, get_stage
    from pipeline.synthetic.config import SMALL
    from pipeline.synthetic.testing import make_test_screening

    theatre = dataclasses.replace(SMALL, rows=2, seats_front=3, seats_back=4)
    screening = make_test_screening(tmp_path_factory.mktemp("contract"), duration_s=2.0, sessions=1, cameras=2,
                                    small=theatre)
    cfg = screening.config
    cfg = cfg.replace(sources=dataclasses.replace(cfg.sources, chunk_s=1.0))
    for name in VIDEO_TO_TENSOR:
        report = run_stage(get_stage(name), cfg, screening.workspace, progress=False)
        assert not report.failed, report.failed
    return screening.workspace.root


def _files(root: Path, kind: str) -> list[Path]:
    return sorted(root.glob(KINDS[kind][0]))


def _check(path: Path, kind: str, sizes: dict | None = None) -> list[str]:
    checker = check_yaml if path.suffix == ".yaml" else check_file
    return checker(path, documented_schemas()[kind], expect=KINDS[kind][1], sizes=sizes)


# ----------------------------------------------------------------------------- the README itself


def test_readme_documents_every_file_kind():
    schemas = documented_schemas()
    assert set(KINDS) <= set(schemas)
    names = [row["name"] for row in schemas["tensor"]]
    assert {"landmarks", "mask", "member_id", "session_id", "movie", "bin_seconds"} <= set(names)
    for kind, rows in schemas.items():
        assert len({(r["kind"], r["name"]) for r in rows}) == len(rows), f"{kind}: a row is documented twice"
        for row in rows:
            assert set(row) == {"name", "kind", "dtype", "shape", "meaning"} and row["meaning"], (kind, row)
            assert tag_of(row) in (None, "optional", "synthetic", "bin stage"), (kind, row)


# ----------------------------------------------------------------------------- real files


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_written_file_follows_its_documented_schema(workspace, kind):
    files = _files(workspace, kind)
    assert files, f"the run wrote no {kind} file ({KINDS[kind][0]})"
    for path in files:
        assert _check(path, kind) == [], path


def test_sizes_agree_across_stages(workspace):
    """A later file repeats its input's frames and faces: shape letters bound by one file hold in the next."""
    n_members = 0
    for members in _files(workspace, "members"):
        camera_dir = members.parent.relative_to(workspace / "cache" / "members")
        totals = {"F": 0, "D": 0, "C": 0}
        for detections in sorted((workspace / "cache" / "detect" / camera_dir).glob("*.h5")):
            sizes = {}
            assert _check(detections, "detections", sizes) == []
            for kind, stage in (("landmarks", "landmarks"), ("frontal", "frontalize")):
                later = workspace / "cache" / stage / camera_dir / detections.name
                assert _check(later, kind, dict(sizes)) == [], later
            totals = {"F": totals["F"] + sizes["F"], "D": totals["D"] + sizes["D"], "C": totals["C"] + 1}
        sizes = dict(totals)
        assert _check(members, "members", sizes) == [], (members, totals)
        n_members += sizes["M"]
        session_dir = workspace / "raw" / camera_dir.parent
        with h5py.File(session_dir / f"{camera_dir.name}.truth.h5") as h5:
            meta = yaml.safe_load((session_dir / "session.yaml").read_text())
            assert (h5["time_s"].shape[0], h5.attrs["width_px"], h5.attrs["height_px"]) == \
                (meta["n_frames"], meta["width_px"], meta["height_px"])
    tensor, = _files(workspace, "tensor")
    assert _check(tensor, "tensor", {"N": n_members}) == []


def test_every_written_path_is_in_the_folder_layout(workspace):
    patterns = [re.compile("[^/]+".join(map(re.escape, re.split(r"<[^>]+>", p))) + ("" if p.endswith("/") else "$"))
                for p in documented_layout()]
    for path in sorted(p for p in workspace.rglob("*") if p.is_file()):
        rel = path.relative_to(workspace).as_posix()
        output = rel.removesuffix(".manifest.json")
        assert output == rel or (workspace / output).is_file(), f"manifest without its output: {rel}"
        assert any(p.match(output) for p in patterns), f"{rel} is not in data/README.md's folder layout"


def test_registered_session_yaml_follows_schema(workspace, tmp_path):
    """`run --screenings` writes a session.yaml holding only offset_s."""
    from pipeline.screenings import Screening, register
    from pipeline.store import Workspace

    video = next(workspace.glob("raw/*/*/*.mp4"))
    register([Screening("film", "2016-05-01", "cam0", video, 12.5)], Workspace(tmp_path))
    path = tmp_path / "raw" / "film" / "2016-05-01" / "session.yaml"
    assert check_yaml(path, documented_schemas()["session"]) == []
    assert yaml.safe_load(path.read_text()) == {"offset_s": 12.5}


def test_models_synthetic_tensor_follows_schema(tmp_path):
    from models.synthetic_tensor import SyntheticSpec, make_synthetic_movie

    tensor, _ = make_synthetic_movie(SyntheticSpec(n_members=4, n_seconds=10, k_true=2, n_groups=2))
    path = write_movie_tensor(tmp_path / "synthetic.h5", tensor)
    assert check_file(path, documented_schemas()["tensor"]) == []


def test_written_tensor_follows_documented_schema(tmp_path):
    mask = np.ones((3, 4), bool)
    mask[0, 1] = False
    landmarks = np.zeros((3, 4, 136), np.float32)
    landmarks[~mask] = np.nan
    tensor = MovieTensor(landmarks, mask, np.array(["a", "b", "c"], dtype=object),
                         np.array(["s", "s", "s"], dtype=object), movie="m")
    path = write_movie_tensor(tmp_path / "m.h5", tensor)
    assert check_file(path, documented_schemas()["tensor"]) == []
    assert any("camera_id missing" in p for p in check_file(path, documented_schemas()["tensor"],
                                                             expect={"bin stage"}))


# ----------------------------------------------------------------------------- the checkers


def test_checker_catches_a_schema_violation(tmp_path):
    with h5py.File(tmp_path / "bad.h5", "w") as h5:
        h5["landmarks"] = np.zeros((3, 4, 100), np.float64)
        h5["mask"] = np.ones((3, 5), bool)
        h5["camera_id"] = np.zeros(3, np.int16)
        h5["brand_new"] = np.zeros(3)
        h5.attrs["movie"] = 3
        h5.attrs["new_attr"] = "x"
    problems = check_file(tmp_path / "bad.h5", documented_schemas()["tensor"])
    assert any("landmarks" in p for p in problems) and any("member_id missing" in p for p in problems)
    assert any("size of T" in p for p in problems)
    assert "undocumented dataset brand_new" in problems and "undocumented attr new_attr" in problems
    assert any(p.startswith("dataset camera_id: dtype") for p in problems)
    assert any(p.startswith("attr movie: dtype") for p in problems)
    assert not any("true_u" in p for p in problems)          # optional rows may be absent
    assert not any("brand_new" in p for p in check_file(tmp_path / "bad.h5", documented_schemas()["tensor"],
                                                         strict=False))


def test_checker_enforces_sizes_given_by_another_file(tmp_path):
    with h5py.File(tmp_path / "d.h5", "w") as h5:
        h5["frame_index"] = np.zeros(3, np.int64)
    problems = check_file(tmp_path / "d.h5", documented_schemas()["detections"], sizes={"F": 4})
    assert "dataset frame_index: size of F is 3, elsewhere 4" in problems


def test_yaml_checker_catches_a_schema_violation(tmp_path):
    path = tmp_path / "session.yaml"
    path.write_text(yaml.safe_dump({
        "offset_s": "soon", "cameras": ["cam0", "cam1"], "videos": {"cam0": "cam0.mp4"},
        "front_rows_band_px": [1.0, 2.0, 3.0], "rows": [{"row": 0, "y_px": 1.0, "colour": "red"}],
        "seats_px": {"cam0": [[1.0, 2.0]], "cam1": [[3.0]]}, "surprise": 1}))
    problems = check_yaml(path, documented_schemas()["session"], expect={"synthetic"})
    assert "key offset_s: 'soon' is not float" in problems
    assert "key videos: size of C is 1, elsewhere 2" in problems
    assert any(p.startswith("key front_rows_band_px: shape (3,)") for p in problems)
    assert "key rows[0].face_w_px missing" in problems and "key movie missing" in problems
    assert "undocumented key rows[].colour" in problems and "undocumented key surprise" in problems
    assert any(p.startswith("key seats_px") for p in problems)
    path.write_text(yaml.safe_dump({"offset_s": 2, "seats_px": {"cam0": [[1.0, 2.0]], "cam1": [[3, 4], [5, 6]]}}))
    assert check_yaml(path, documented_schemas()["session"]) == []
