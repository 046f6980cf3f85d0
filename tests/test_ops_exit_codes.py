"""Issue 11, item 6: exit codes like a Unix tool's (0 success, 1 units failed, 2 usage/config/data, 130
interrupted), and nothing to do on an empty or mistyped workspace is an error that names the fix."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def audience(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def unreadable_recordings(ws: Path, n: int) -> Path:
    """n recordings that cannot be decoded: each is one survey unit that fails at once."""
    for i in range(n):
        folder = ws / "raw" / "m" / f"s{i:03d}"
        folder.mkdir(parents=True)
        (folder / "cam0.mp4").write_text("not a video")
    return ws


@pytest.mark.parametrize("n_failed", [2, 256])
def test_failed_units_exit_1_whatever_their_number(tmp_path, n_failed):
    ws = unreadable_recordings(tmp_path / "ws", n_failed)
    result = audience("survey", "--workspace", ws, "--quiet")
    assert f"{n_failed} failed" in result.stdout, result.stdout + result.stderr
    assert result.returncode == 1          # not 2 (a usage error) for 2 failures, not 0 for 256


@pytest.mark.parametrize("command", [["run"], ["detect"], ["bin"]])
def test_nothing_to_do_on_an_empty_or_mistyped_workspace_is_an_error_naming_the_fix(tmp_path, command):
    ws = tmp_path / "typo"
    result = audience(*command, "--workspace", ws, "--quiet")
    assert result.returncode == 2, result.stdout + result.stderr
    err = result.stderr
    assert f"no recordings under {ws / 'raw'}" in err
    assert "audience synthesize" in err and "audience run --screenings FILE" in err
    assert not (ws / "configs").exists()                   # no run was recorded


def test_a_mistyped_movie_is_an_error_naming_the_movies_there(tmp_path):
    ws = unreadable_recordings(tmp_path / "ws", 1)
    result = audience("run", "--workspace", ws, "--movie", "mvoie", "--quiet")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "no movie 'mvoie'" in result.stderr and "(there: m)" in result.stderr


def test_inspect_with_nothing_to_draw_is_an_error_naming_the_fix(tmp_path):
    result = audience("inspect", "--workspace", tmp_path / "empty")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "no tensors under" in result.stderr and "audience run" in result.stderr


def _default_sigint():
    """A shell starts background jobs with SIGINT ignored, and the children inherit it: undo that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def sigint_delivered():
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_ctrl_c_exits_130_with_one_line_and_no_traceback(tmp_path, workers):
    ws = tmp_path / "ws"
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "synthesize", "--small", "--workspace", str(ws),
                             "--workers", workers, "--quiet"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=_default_sigint)   # as from a terminal, even when pytest runs in the background
    deadline = time.monotonic() + 60
    while not (ws / "configs").is_dir() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(1.5)                                        # well into the synthesis (about 30 s in all)
    assert proc.poll() is None, proc.communicate()
    os.killpg(proc.pid, signal.SIGINT)                     # as Ctrl-C in a terminal: the whole process group
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    assert err.strip().splitlines()[-1] == "interrupted; rerun the same command to resume"
    assert "Traceback" not in err, err


def test_a_ctrl_c_swallowed_by_a_finalizer_is_delivered_again_silently(sigint_delivered):
    from types import SimpleNamespace

    from pipeline.runner import deliver_interrupts

    printed = []
    hook = deliver_interrupts(printed.append)
    hook(SimpleNamespace(exc_value=ValueError("other")))      # anything else goes to the previous hook
    assert len(printed) == 1
    with pytest.raises(KeyboardInterrupt):
        hook(SimpleNamespace(exc_value=KeyboardInterrupt()))  # returns at once, raises soon after
        time.sleep(5)
    assert len(printed) == 1 and deliver_interrupts(hook) is hook
