"""Issue 11, item 2: a bad recording fails its own units (with the reason and the fix), every other recording
runs to the end, the movie's tensor is built from the sessions that succeeded and says it is partial, and
registration follows the screening list (removing the entry and rerunning works). Item 7: a malformed
screening list is a clean error."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import pytest
import yaml

from pipeline.screenings import read_screening_list
from pipeline.sources import diagnose_unreadable
from pipeline.store import DataError

REPO = Path(__file__).resolve().parents[1]
SMALL = ("synthetic.duration_s=2", "synthetic.sessions=2", "synthetic.fps=6", "sources.chunk_s=1")


def audience(*args, cwd: Path):
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})


@pytest.fixture(scope="module")
def good_videos(tmp_path_factory) -> Path:
    """Two small synthetic recordings (2 s each) with their session.yaml (the seat map)."""
    folder = tmp_path_factory.mktemp("recordings")
    result = audience("synthesize", "--small", "--workspace", "syn", "--quiet", *SMALL, cwd=folder)
    assert result.returncode == 0, result.stdout + result.stderr
    return folder / "syn" / "raw" / "synthmovie"


def bad_recordings(folder: Path, good: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    empty, cut, text = folder / "empty.mp4", folder / "cut.mp4", folder / "notes.mp4"
    empty.write_bytes(b"")
    data = good.read_bytes()
    cut.write_bytes(data[: len(data) * 6 // 10])          # stopped mid-recording: no index at the end
    text.write_text("camera 3 was switched off tonight\n")
    return {"empty": empty, "cut": cut, "text": text}


def test_each_kind_of_unreadable_recording_is_named_with_what_can_be_saved(good_videos, tmp_path):
    bad = bad_recordings(tmp_path, good_videos / "s01" / "cam0.mp4")
    assert "is empty (0 bytes)" in diagnose_unreadable(bad["empty"])
    message = diagnose_unreadable(bad["cut"])
    assert "index (the 'moov' atom) is missing" in message and "Re-muxing cannot fix this" in message
    assert "untrunc" in message and "remove it from the screening list" in message
    assert "is a text file, not a video" in diagnose_unreadable(bad["text"])


def write_list(path: Path, entries: list[tuple[str, Path]]) -> Path:
    path.write_text(yaml.safe_dump({"screenings": [
        {"movie": "m", "session": session, "camera": "cam0", "path": str(video), "offset_s": 0.0}
        for session, video in entries]}))
    return path


def test_bad_recordings_fail_alone_the_tensor_is_partial_and_removing_them_from_the_list_works(good_videos, tmp_path):
    recordings = tmp_path / "recordings"
    bad = bad_recordings(recordings, good_videos / "s01" / "cam0.mp4")
    good = {}
    for session in ("s01", "s02"):
        good[session] = recordings / f"{session}.mp4"
        shutil.copy(good_videos / session / "cam0.mp4", good[session])
        folder = tmp_path / "ws" / "raw" / "m" / session        # the seat map, as an operator would give it
        folder.mkdir(parents=True)
        shutil.copy(good_videos / session / "session.yaml", folder / "session.yaml")
    entries = [("s01", good["s01"]), ("s02", good["s02"]), ("s03", bad["empty"]), ("s04", bad["cut"]),
               ("s05", bad["text"])]
    listing = write_list(tmp_path / "screenings.yaml", entries)

    result = audience("run", "--screenings", listing, "--workspace", "ws", "--quiet", *SMALL, cwd=tmp_path)
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    assert "registered 5 recording(s)" in out
    assert "3 unit(s) failed" in out
    assert "survey m/s03/cam0: DataError: video" in out and "is empty (0 bytes)" in out
    assert "survey m/s04/cam0: DataError:" in out and "index (the 'moov' atom) is missing" in out
    assert "survey m/s05/cam0: DataError:" in out and "is a text file" in out
    assert "moov atom not found" not in result.stderr          # no decoder noise: the file is checked first
    assert "PARTIAL bin m: made without 3 upstream unit(s)" in out
    assert "PARTIAL: built without 3 recording(s) whose units failed: m/s03/cam0, m/s04/cam0, m/s05/cam0" in out
    tensor = tmp_path / "ws" / "tensors" / "m.h5"
    with h5py.File(tensor, "r") as h5:
        assert sorted(set(v.decode() for v in h5["session_id"][()])) == ["s01", "s02"]
        assert [v.decode() if isinstance(v, bytes) else v for v in h5.attrs["partial_left_out"]] == \
            ["m/s03/cam0", "m/s04/cam0", "m/s05/cam0"]
    # the same command again: the bad ones fail again, the partial tensor is up to date
    again = audience("run", "--screenings", listing, "--workspace", "ws", "--quiet", *SMALL, cwd=tmp_path)
    assert again.returncode == 1 and "3 unit(s) failed" in again.stdout
    assert [line for line in again.stdout.splitlines() if line.startswith("bin ")][0].split()[1] == "0"

    # the operator follows the advice: the bad entries leave the list, the links go with them
    write_list(listing, entries[:2])
    fixed = audience("run", "--screenings", listing, "--workspace", "ws", "--quiet", *SMALL, cwd=tmp_path)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "unregistered" in fixed.stdout and "failed" not in fixed.stdout.split("where faces")[0].replace(
        "0 failed", "")
    assert not any((tmp_path / "ws" / "raw" / "m" / s / "cam0.mp4").exists() for s in ("s03", "s04", "s05"))
    with h5py.File(tensor, "r") as h5:
        assert "partial_left_out" not in h5.attrs
        assert sorted(set(v.decode() for v in h5["session_id"][()])) == ["s01", "s02"]


@pytest.mark.parametrize("text, expected", [
    ("screenings:\n  - movie: m\n    session: [unclosed\n", "not valid YAML at line"),
    ("screenings:\n  - {movie: m, session: s, camera: c, path: VIDEO, offset_s: soon}\n",
     "offset_s must be a number of seconds"),
    ("screenings:\n  - {movie: m, session: ../up, camera: c, path: VIDEO}\n", "cannot name a folder"),
])
def test_a_malformed_screening_list_is_an_error_naming_the_place_and_the_fix(tmp_path, text, expected):
    video = tmp_path / "v.mp4"
    video.write_bytes(b"x")
    listing = tmp_path / "list.yaml"
    listing.write_text(text.replace("VIDEO", str(video)))
    with pytest.raises(DataError, match=expected):
        read_screening_list(listing)
    result = audience("run", "--screenings", listing, "--workspace", tmp_path / "ws", "--quiet", cwd=tmp_path)
    assert result.returncode == 2 and expected in result.stderr and "Traceback" not in result.stderr
