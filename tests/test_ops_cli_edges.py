"""Issue 11, item 7: the CLI's unfriendly edges (`--version`, `--workers 0`, `status | head`, help texts)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import __version__

REPO = Path(__file__).resolve().parents[1]


def audience(*args, **kw):
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=120, **kw)


def test_version():
    result = audience("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"audience {__version__}"


@pytest.mark.parametrize("value", ["0", "-2", "two"])
def test_workers_below_one_is_refused(tmp_path, value):
    result = audience("survey", "--workspace", tmp_path / "ws", "--workers", value)
    assert result.returncode == 2 and "argument --workers" in result.stderr
    assert "1 or more" in result.stderr and "Traceback" not in result.stderr


def test_status_into_a_closed_pipe_ends_quietly(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "status", "--workspace", str(tmp_path / "ws"),
                             "-v"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()                                      # `| head` that has read what it wanted
    _, err = proc.communicate(timeout=120)
    assert b"Traceback" not in err and b"BrokenPipe" not in err, err.decode()
    assert proc.returncode == 141                            # as a Unix tool ended by SIGPIPE (128 + 13)


def test_every_command_has_a_description_without_developer_notes():
    from pipeline.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name in ("synthesize", "survey", "detect", "landmarks", "frontalize", "members", "bin", "run", "status"):
        description = sub.choices[name].description
        assert description and len(description) > 40, name
        assert "Exit codes" in description or name == "status"


def test_a_replayed_capture_is_finished_by_run(tmp_path):
    """`capture --replay` used to write detections only, and a later `run` found no recording and did nothing."""
    small = ("synthetic.duration_s=2", "synthetic.sessions=1", "synthetic.fps=6")
    made = audience("synthesize", "--small", "--workspace", tmp_path / "syn", "--quiet", *small)
    assert made.returncode == 0, made.stdout + made.stderr
    video = tmp_path / "syn" / "raw" / "synthmovie" / "s01" / "cam0.mp4"
    ws = tmp_path / "ws"
    captured = audience("capture", "--replay", video, "--movie", "mv", "--session", "s1", "--workspace", ws,
                        "--quiet", "sources.replay_speed=20")
    assert captured.returncode == 0, captured.stdout + captured.stderr
    assert (ws / "raw" / "mv" / "s1" / "cam0.mp4").resolve() == video.resolve()
    assert "audience run" in captured.stdout
    result = audience("run", "--workspace", ws, "--quiet")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (ws / "tensors" / "mv.h5").is_file()


def _tensor_with_faces(folder: Path, faces: int) -> Path:
    """The tiny test tensor keeping only its first `faces` observed faces."""
    import dataclasses

    import numpy as np

    sys.path.insert(0, str(REPO / "tests"))
    from models_fixtures import tiny_tensor
    from pipeline.store import write_movie_tensor

    tensor = tiny_tensor()
    keep = np.zeros(tensor.mask.size, bool)
    keep[np.flatnonzero(tensor.mask.ravel())[:faces]] = True
    mask = keep.reshape(tensor.mask.shape)
    landmarks = np.where(mask[..., None], tensor.landmarks, np.nan).astype(np.float32)
    return write_movie_tensor(folder / f"faces{faces}.h5", dataclasses.replace(tensor, mask=mask, landmarks=landmarks))


def test_a_tensor_with_almost_nothing_observed_is_refused_and_nothing_is_written(tmp_path):
    tensor = _tensor_with_faces(tmp_path, 1)
    result = audience("train", "--tensor", tensor, "--workspace", tmp_path / "ws", "--quiet", "models.k=1")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "1 observed face(s) of 1 member(s) over 1 second(s)" in result.stderr and "Traceback" not in result.stderr
    assert not list((tmp_path / "ws").rglob("data_summary.json"))


def test_a_refused_train_writes_no_run_files(tmp_path):
    """K larger than the tensor supports is refused before the run's config and data summary are written."""
    tensor = _tensor_with_faces(tmp_path, 10 ** 6)
    result = audience("train", "--tensor", tensor, "--workspace", tmp_path / "ws", "--quiet", "models.k=50")
    assert result.returncode == 2 and "models.k=50 is more than this tensor supports" in result.stderr
    assert not list((tmp_path / "ws").rglob("data_summary.json")) and not list((tmp_path / "ws").rglob("config.yaml"))


def test_force_retrains_from_scratch_in_train_and_evaluate(tmp_path):
    """train on a run folder that holds checkpoints is refused unless --resume; --force discards them and
    trains anew; evaluate reuses trained models unless --force."""
    tensor = _tensor_with_faces(tmp_path, 10 ** 6)
    common = ("--tensor", tensor, "--workspace", tmp_path / "ws", "--quiet", "--models", "tf", "models.k=2",
              "train.epochs=2")
    assert audience("train", *common).returncode == 0
    again = audience("train", *common)
    assert again.returncode == 2 and "already holds checkpoints" in again.stderr
    forced = audience("train", "--force", *common)
    assert forced.returncode == 0 and "tf: trained" in forced.stdout, forced.stderr
    both = audience("train", "--force", "--resume", *common)
    assert both.returncode == 2 and "contradict" in both.stderr
    first = audience("evaluate", "--protocol", "completion", *common)
    assert first.returncode == 0 and "reusing the trained model" in first.stdout, first.stdout + first.stderr
    refit = audience("evaluate", "--protocol", "completion", "--force", *common)
    assert refit.returncode == 0 and "tf: fitting" in refit.stdout and "reusing" not in refit.stdout
