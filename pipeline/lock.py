"""One command at a time per workspace: an OS file lock on `<workspace root>/.audience.lock`.

Every command that writes to a workspace holds `workspace_lock(root)` for its whole run
(`pipeline/cli.py` takes it around the handler). A second command on the same workspace is
refused at once (`WorkspaceBusy`, exit code 2) with the holder's PID, command line, host and
start time, which the holder writes into the lock file after acquiring it.

The lock is `flock(LOCK_EX | LOCK_NB)` on the file: the kernel drops it when the holder's
process dies, however it dies (kill -9 included), so a lock left by a dead process is taken
over by the next command with nothing to clean up. The lock file itself is never deleted or
replaced (a new inode would be a second, independent lock); its text is only informative.
Worker processes of a `--workers N` run do not take it: they are spawned by the runner, never
call the CLI, and run under their parent's lock (the descriptor is not inherited).
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import shlex
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from pipeline.store import DataError, ensure_dir

LOCK_NAME = ".audience.lock"

_held: dict[str, list] = {}      # realpath of a lock file this process holds -> [fd, depth]


class WorkspaceBusy(DataError):
    """Another command holds the workspace lock (the CLI prints it and exits with 2)."""


def lock_path(root: str | Path) -> Path:
    return Path(root) / LOCK_NAME


def read_holder(path: str | Path) -> dict:
    """What the current (or last) holder wrote into the lock file; {} when unreadable or empty."""
    try:
        text = Path(path).read_text()
        holder = json.loads(text) if text.strip() else {}
        return holder if isinstance(holder, dict) else {}
    except (OSError, ValueError):
        return {}


def describe_holder(holder: dict) -> str:
    if not holder.get("pid"):
        return "another command (it is just starting: no details written yet)"
    started = holder.get("started_unix")
    since = ""
    if isinstance(started, (int, float)):
        minutes = max(0.0, time.time() - started) / 60.0
        ago = f"{minutes:.0f} min ago" if minutes >= 1 else "less than a minute ago"
        since = f", since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(started))} ({ago})"
    host = holder.get("host")
    on_host = f" on host {host}" if host and host != socket.gethostname() else ""
    return f"PID {holder['pid']}{on_host} (`{holder.get('command', '?')}`){since}"


@contextmanager
def workspace_lock(root: str | Path, command: str | None = None):
    """Hold the workspace's lock for the `with` block; raise WorkspaceBusy when another process holds it.

    The root is created first when it does not exist yet (e.g. `synthesize` making a new workspace).
    Re-entrant within one process (a command that runs another command's code keeps one lock).
    """
    root = ensure_dir(Path(root))
    path = lock_path(root)
    key = os.path.realpath(path)
    if key in _held:
        _held[key][1] += 1
        try:
            yield path
        finally:
            _held[key][1] -= 1
        return
    fd = _acquire(path)
    _held[key] = [fd, 1]
    try:
        if fd is not None:
            _write_holder(fd, command)
        yield path
    finally:
        del _held[key]
        if fd is not None:
            try:
                os.ftruncate(fd, 0)      # still held: nobody reads a finished command as the holder
            except OSError:
                pass
            os.close(fd)                 # closing the last descriptor releases the flock


def _acquire(path: Path) -> int | None:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as err:
        raise DataError(f"cannot open the workspace lock {path}: {err.strerror or err}. "
                        f"The workspace must be writable.") from err
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        os.close(fd)
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise WorkspaceBusy(
                f"workspace {path.parent} is in use by {describe_holder(read_holder(path))}. "
                f"Wait for it to finish, or stop it; a lock left by a dead process is taken over "
                f"automatically.") from None
        # a file system without flock (some network mounts): run, but say what is not guarded
        print(f"warning: cannot lock {path} ({err.strerror or err}); a second command on this workspace "
              f"at the same time would not be refused", file=sys.stderr)
        return None
    return fd


def _write_holder(fd: int, command: str | None) -> None:
    holder = {"pid": os.getpid(), "command": command or shlex.join(sys.argv), "host": socket.gethostname(),
              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "started_unix": round(time.time(), 3)}
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
    except OSError:
        pass      # the lock holds without its description (e.g. a full disk)


__all__ = ["LOCK_NAME", "WorkspaceBusy", "workspace_lock", "lock_path", "read_holder", "describe_holder"]
