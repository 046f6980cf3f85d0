"""Issue 11, item 4: one writing command at a time per workspace (an OS file lock, dead holders taken over)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LOCK = ".audience.lock"

# a real `audience` process whose stage handler holds the workspace (under whatever lock main takes) until told
HOLDER = (
    "import sys, time\n"
    "from pipeline import cli\n"
    "def hold(args, cfg):\n"
    "    print('HOLDING', flush=True)\n"
    "    time.sleep(float(sys.argv[1]))\n"
    "    return 0\n"
    "cli.cmd_stage = hold\n"
    "sys.exit(cli.main(sys.argv[2:]))\n")


def audience(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def start_holder(workspace: Path, seconds: float = 60.0) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(seconds), "detect", "--workspace", str(workspace)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if line.strip() != "HOLDING":
        proc.kill()
        pytest.fail(f"holder did not start: {line!r} {proc.stderr.read()[-2000:]}")
    return proc


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.communicate(timeout=30)


def test_a_second_command_is_refused_at_once_naming_the_holder_and_the_fix(tmp_path):
    ws = tmp_path / "ws"
    holder = start_holder(ws)
    try:
        for command in (["run"], ["detect"], ["synthesize", "--small"], ["inspect"],
                        ["evaluate", "--tensor", tmp_path / "t.h5"], ["report", "--run-dir", tmp_path / "run"]):
            started = time.monotonic()
            result = audience(*command, "--workspace", ws)
            assert time.monotonic() - started < 30
            assert result.returncode == 2, (command, result.stdout, result.stderr)
            err = result.stderr
            assert f"PID {holder.pid}" in err and "audience detect --workspace" in err and "since" in err, err
            assert "Wait for it to finish, or stop it" in err and "taken over automatically" in err
        assert not (ws / "configs").exists()           # the refused commands wrote nothing
        assert not (ws / "raw").exists()
        assert audience("status", "--workspace", ws).returncode == 0   # reading is allowed meanwhile
        assert holder.poll() is None                                   # and the holder carries on
    finally:
        stop(holder)


def test_the_lock_file_names_its_holder(tmp_path):
    ws = tmp_path / "new" / "ws"                      # not there yet: created, then locked
    holder = start_holder(ws)
    try:
        record = json.loads((ws / LOCK).read_text())
        assert record["pid"] == holder.pid
        assert record["command"].startswith("audience detect --workspace")
        assert record["host"] and record["started"]
    finally:
        stop(holder)


def test_a_lock_left_by_a_killed_holder_is_taken_over(tmp_path):
    ws = tmp_path / "ws"
    first = start_holder(ws)
    os.kill(first.pid, signal.SIGKILL)
    first.communicate(timeout=30)
    assert json.loads((ws / LOCK).read_text())["pid"] == first.pid     # its record is still there
    second = start_holder(ws, seconds=0.1)            # prints HOLDING only once it holds the lock
    try:
        assert json.loads((ws / LOCK).read_text())["pid"] == second.pid
        assert second.wait(timeout=30) == 0
    finally:
        stop(second)
    assert audience("run", "--workspace", ws).stderr.count("in use by") == 0   # released at exit


def test_workers_of_a_parallel_run_work_under_their_parents_lock(tmp_path):
    ws = tmp_path / "ws"
    for session in ("s1", "s2", "s3"):               # three unreadable recordings: three failing units
        (ws / "raw" / "m" / session).mkdir(parents=True)
        (ws / "raw" / "m" / session / "cam0.mp4").write_text("not a video")
    result = audience("survey", "--workspace", ws, "--workers", "2", "--quiet")
    assert "in use by" not in result.stdout + result.stderr
    assert "3 failed" in result.stdout and result.returncode == 1, result.stdout + result.stderr
    assert (ws / LOCK).read_text() == ""             # the parent held it, and released it at the end
