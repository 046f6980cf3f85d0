"""Reliability under faults (issue 11): inject each fault into a small synthetic `audience run`, and print
what the command printed, its exit code, and whether the final outputs equal an uninterrupted run's.

    python bench/bench_reliability.py [--kills 3] [--out table.md]

Faults: SIGKILL of the whole process group at random moments (1 and 2 workers), then a rerun; SIGKILL of
the parent alone with 2 workers (are workers or the resource tracker left behind?); bad recordings (empty,
cut-off MP4, text) mixed with good ones in a screening list; a full disk (a small tmpfs when this user may
mount one, else skipped); two concurrent runs on one workspace; a failing upstream stage (a missing
detector file). About 3 minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SMALL = ("--small", "synthetic.duration_s=2", "synthetic.sessions=2", "synthetic.fps=6", "sources.chunk_s=1")
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def audience(*args, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=ENV)


def snapshot(ws: Path, tops=("raw", "cache", "tensors")) -> dict[str, str]:
    """Every output's bytes (sha256) and every manifest less its wall time."""
    out = {}
    for top in tops:
        for path in sorted((ws / top).rglob("*")) if (ws / top).is_dir() else []:
            if not path.is_file() or ".tmp-" in path.name:
                continue
            rel = str(path.relative_to(ws))
            if path.name.endswith(".manifest.json"):
                manifest = json.loads(path.read_text())
                manifest.pop("seconds", None)
                out[rel] = json.dumps(manifest, sort_keys=True)
            else:
                out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def key_line(text: str, *needles: str) -> str:
    """The first printed line holding one of `needles` (what the operator reads), shortened."""
    for line in text.splitlines():
        if any(n in line for n in needles):
            line = line.strip()
            return line if len(line) <= 110 else line[:107] + "…"
    return "(nothing printed)"


def kill_group_at(cmd: list[str], cwd: Path, delay_s: float) -> None:
    proc = subprocess.Popen(cmd, cwd=cwd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    time.sleep(delay_s)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def live_children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            fields = text[text.rindex(")") + 2:].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                kids.append(int(stat.parent.name))
        except (OSError, ValueError):
            continue
    return kids


def alive(pid: int) -> bool:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return text[text.rindex(")") + 2:].split()[0] != "Z"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=3, help="random SIGKILLs per worker count (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="also write the table here (Markdown)")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    base = Path(tempfile.mkdtemp(prefix="bench-reliability-"))
    rows: list[tuple[str, str, str, str]] = []
    run_cmd = ["run", "--synthesize", "--workspace", "ws", "--quiet", *SMALL]

    started = time.perf_counter()
    ref = base / "reference"
    ref.mkdir()
    result = audience(*run_cmd, cwd=ref)
    assert result.returncode == 0, result.stdout + result.stderr
    reference = snapshot(ref / "ws")
    ref_s = time.perf_counter() - started
    print(f"reference run: {ref_s:.1f} s, {len(reference)} files")

    # 1. SIGKILL of the whole process group at random moments, then the same command again
    for workers in (1, 2):
        for i in range(args.kills):
            folder = base / f"kill-w{workers}-{i}"
            folder.mkdir()
            delay = rng.uniform(0.5, ref_s * 0.9)
            kill_group_at([sys.executable, "-m", "pipeline.cli", *run_cmd, "--workers", str(workers)], folder,
                          delay)
            rerun = audience(*run_cmd, "--workers", str(workers), cwd=folder)
            same = snapshot(folder / "ws") == reference
            rows.append((f"kill -9 (group) at {delay:.1f} s, {workers} worker(s), then rerun",
                         key_line(rerun.stdout, "bin ") + f" ({sum(' computed' in l and ' 0 computed' not in l for l in rerun.stdout.splitlines())} stages redone)",
                         str(rerun.returncode), "yes" if same else "NO"))

    # 2. SIGKILL of the parent alone, 2 workers: orphans?
    folder = base / "orphans"
    folder.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "synthesize", "--workspace", "ws", "--workers",
                             "2", "--quiet", *SMALL], cwd=folder, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    kids: list[int] = []
    while time.monotonic() < deadline and proc.poll() is None and len(kids) < 3:
        kids = live_children(proc.pid)
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(3)
    left = [p for p in kids if alive(p)]
    for p in left:
        os.kill(p, signal.SIGKILL)
    rows.append(("kill -9 of the parent alone, 2 workers", f"{len(kids)} children (workers + resource tracker); "
                 f"{len(left)} alive 3 s later", "-9", "n/a"))

    # 3. bad recordings mixed with good ones
    folder = base / "bad-recordings"
    rec = folder / "recordings"
    rec.mkdir(parents=True)
    good = ref / "ws" / "raw" / "synthmovie"
    entries = []
    for s in ("s01", "s02"):
        shutil.copy(good / s / "cam0.mp4", rec / f"{s}.mp4")
        (folder / "ws" / "raw" / "m" / s).mkdir(parents=True)
        shutil.copy(good / s / "session.yaml", folder / "ws" / "raw" / "m" / s / "session.yaml")
        entries.append((s, rec / f"{s}.mp4"))
    (rec / "empty.mp4").write_bytes(b"")
    data = (good / "s01" / "cam0.mp4").read_bytes()
    (rec / "cut.mp4").write_bytes(data[: len(data) // 2])
    (rec / "notes.mp4").write_text("camera off tonight\n")
    entries += [("s03", rec / "empty.mp4"), ("s04", rec / "cut.mp4"), ("s05", rec / "notes.mp4")]

    def listing(items) -> Path:
        import yaml

        path = folder / "screenings.yaml"
        path.write_text(yaml.safe_dump({"screenings": [{"movie": "m", "session": s, "camera": "cam0",
                                                        "path": str(p), "offset_s": 0.0} for s, p in items]}))
        return path

    mixed = audience("run", "--screenings", listing(entries), "--workspace", "ws", "--quiet", *SMALL[1:], cwd=folder)
    partial = snapshot(folder / "ws", ("tensors",))
    fixed = audience("run", "--screenings", listing(entries[:2]), "--workspace", "ws", "--quiet", *SMALL[1:],
                     cwd=folder)
    clean = base / "good-only"
    shutil.copytree(folder / "recordings", clean / "recordings")
    for s in ("s01", "s02"):
        (clean / "ws" / "raw" / "m" / s).mkdir(parents=True)
        shutil.copy(good / s / "session.yaml", clean / "ws" / "raw" / "m" / s / "session.yaml")
    alone = audience("run", "--screenings", listing(entries[:2]).replace(clean / "screenings.yaml"), "--workspace",
                     "ws", "--quiet", *SMALL[1:], cwd=clean)
    import h5py

    def tensor_rows(path: Path):
        with h5py.File(path, "r") as h5:
            return hashlib.sha256(h5["landmarks"][()].tobytes() + h5["mask"][()].tobytes()).hexdigest()

    same_rows = tensor_rows(folder / "ws" / "tensors" / "m.h5") == tensor_rows(clean / "ws" / "tensors" / "m.h5")
    rows.append(("3 bad recordings (empty, cut-off MP4, text) among 2 good",
                 key_line(mixed.stdout, "PARTIAL:") + " / " + key_line(mixed.stdout, "moov"), str(mixed.returncode),
                 f"tensor of the good sessions {'=' if same_rows else '≠'} a run of them alone"))
    rows.append(("… bad entries removed from the list, rerun", key_line(fixed.stdout, "unregistered"),
                 str(fixed.returncode), "yes" if alone.returncode == 0 and same_rows else "NO"))
    del partial

    # 4. a full disk: a 600 KB tmpfs (synthesis of 2 sessions needs about 800 KB)
    small = base / "tmpfs"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(small)],
                             capture_output=True).returncode == 0
    if mounted:
        try:
            full = audience("synthesize", "--workspace", "ws", "--quiet", *SMALL, cwd=small)
            kept = sorted(str(p.relative_to(small / "ws")) for p in (small / "ws" / "raw").rglob("*.mp4"))
            shutil.copytree(small / "ws", base / "freed" / "ws")             # more space: elsewhere
        finally:
            subprocess.run(["umount", str(small)])
        again = audience("synthesize", "--workspace", "ws", "--quiet", *SMALL, cwd=base / "freed")
        same = snapshot(base / "freed" / "ws", ("raw",)) == {k: v for k, v in reference.items() if k.startswith("raw/")}
        rows.append(("disk full during synthesize (600 KB tmpfs)", key_line(full.stdout + full.stderr, "disk full")
                     + f"; kept {kept}", str(full.returncode), "n/a"))
        rows.append(("… rerun with space", key_line(again.stdout, "synthesize"), str(again.returncode),
                     "yes" if same else "NO"))
    else:
        rows.append(("disk full (tmpfs)", "skipped: this user cannot mount a tmpfs (tests use write hooks)", "", ""))

    # 5. two concurrent runs on one workspace
    folder = base / "concurrent"
    shutil.copytree(ref, folder)
    for p in (folder / "ws" / "cache").rglob("*.manifest.json"):
        p.unlink()                                             # work for both to do
    first = subprocess.Popen([sys.executable, "-m", "pipeline.cli", *run_cmd], cwd=folder, env=ENV,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)
    second = audience(*run_cmd, cwd=folder)
    out1, _ = first.communicate(timeout=300)
    rows.append(("two concurrent runs on one workspace", key_line(second.stderr, "error"),
                 f"{first.returncode} / {second.returncode}",
                 "yes" if snapshot(folder / "ws") == reference else "NO"))

    # 6. a failing upstream stage: a missing detector file
    folder = base / "failing-upstream"
    shutil.copytree(ref, folder)
    before = snapshot(folder / "ws", ("cache/landmarks", "cache/frontalize", "cache/members", "tensors"))
    failing = audience(*run_cmd, "detect.front_detector=/nowhere/front.svm", cwd=folder)
    after = snapshot(folder / "ws", ("cache/landmarks", "cache/frontalize", "cache/members", "tensors"))
    rows.append(("detector file missing (survey fails for every unit)", key_line(failing.stdout, "blocked by"),
                 str(failing.returncode), "later stages and tensor untouched" if before == after else "CHANGED"))

    header = "| fault injected | what the command printed | exit code | outputs equal an uninterrupted run? |"
    lines = [header, "|---|---|---|---|"] + [f"| {a} | {b.replace('|', '/')} | {c} | {d} |" for a, b, c, d in rows]
    table = "\n".join(lines)
    print()
    print(table)
    print(f"\n{time.perf_counter() - started:.0f} s in all; work folder {base}")
    if args.out:
        args.out.write_text(table + "\n")
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
