"""Kill a command's whole process group with SIGKILL, and wait until every
process of it has really exited (a SIGKILLed worker may still be finishing an
fsync when its parent is already gone)."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path


def group_members(pgid: int) -> list[int]:
    """Pids of the live (non-zombie) processes in process group `pgid`."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        state, pgrp = fields[0], int(fields[2])
        if pgrp == pgid and state not in ("Z", "X"):
            pids.append(int(stat.parent.name))
    return pids


def kill_group_and_wait(proc: subprocess.Popen, timeout_s: float = 60.0) -> None:
    """SIGKILL the group that `proc` leads (started with start_new_session=True)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    deadline = time.monotonic() + timeout_s
    while group_members(proc.pid):
        if time.monotonic() > deadline:
            raise TimeoutError(f"processes of group {proc.pid} survive SIGKILL: {group_members(proc.pid)}")
        time.sleep(0.05)


def start_and_kill(command: list[str], after_s: float, **popen_kw) -> bool:
    """Run `command`, SIGKILL it `after_s` seconds in; True if it was still running then."""
    proc = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, **popen_kw)
    try:
        proc.wait(timeout=after_s)
        return False
    except subprocess.TimeoutExpired:
        kill_group_and_wait(proc)
        return True
