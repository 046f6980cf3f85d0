"""Issue 11, item 5: no orphans. The worker processes of `--workers N` and the multiprocessing resource
tracker end when their parent is killed with SIGKILL (no chance to clean up), instead of idling forever."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def children_of(pid: int) -> dict[int, str]:
    """{pid: command line} of the live (not zombie) processes whose parent is `pid`."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            fields = text[text.rindex(")") + 2:].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                found[int(stat.parent.name)] = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError):
            continue
    return found


def alive(pid: int) -> bool:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return text[text.rindex(")") + 2:].split()[0] != "Z"


def test_workers_and_the_resource_tracker_die_with_a_sigkilled_parent(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "synthesize", "--small", "--workspace",
                             str(tmp_path / "ws"), "--workers", "2", "--quiet"], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        kids: dict[int, str] = {}
        while time.monotonic() < deadline and proc.poll() is None:
            kids = children_of(proc.pid)
            workers = [p for p, cmd in kids.items() if "spawn_main" in cmd]
            if len(workers) == 2 and any("resource_tracker" in cmd for cmd in kids.values()):
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before its workers could be seen"
        assert sum("spawn_main" in cmd for cmd in kids.values()) == 2, kids
        time.sleep(1.0)                                   # the workers are busy rendering
        kids = children_of(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)                 # the parent alone: its children are not signalled
        proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(alive(p) for p in kids):
            time.sleep(0.1)
        left = {p: cmd for p, cmd in kids.items() if alive(p)}
        assert left == {}, f"still alive after the parent's SIGKILL: {left}"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
