"""Files written by the pipeline follow the schemas documented in data/README.md."""
import numpy as np

from contract import check_file, documented_schemas
from pipeline.store import MovieTensor, write_movie_tensor


def test_readme_documents_the_tensor_schema():
    names = [row["name"] for row in documented_schemas()["tensor"]]
    assert {"landmarks", "mask", "member_id", "session_id", "movie", "bin_seconds"} <= set(names)


def test_written_tensor_follows_documented_schema(tmp_path):
    mask = np.ones((3, 4), bool)
    mask[0, 1] = False
    landmarks = np.zeros((3, 4, 136), np.float32)
    landmarks[~mask] = np.nan
    tensor = MovieTensor(landmarks, mask, np.array(["a", "b", "c"], dtype=object),
                         np.array(["s", "s", "s"], dtype=object), movie="m")
    path = write_movie_tensor(tmp_path / "m.h5", tensor)
    assert check_file(path, documented_schemas()["tensor"]) == []


def test_checker_catches_a_schema_violation(tmp_path):
    import h5py
    with h5py.File(tmp_path / "bad.h5", "w") as h5:
        h5["landmarks"] = np.zeros((3, 4, 100), np.float64)
        h5["mask"] = np.ones((3, 5), bool)
    problems = check_file(tmp_path / "bad.h5", documented_schemas()["tensor"])
    assert any("landmarks" in p for p in problems) and any("member_id missing" in p for p in problems)
    assert any("size of T" in p for p in problems)
