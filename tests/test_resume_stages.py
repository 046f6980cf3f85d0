"""Kill-and-resume on the real stages, through the real CLI.

A small synthetic screening goes through `audience run --synthesize` once
uninterrupted (the reference), and again in other workspaces that are
SIGKILLed (whole process group, workers included) at random moments inside
chosen stages, one to three times, then rerun to completion (one trial runs
`audience synthesize` alone, with two workers). Every output must then equal
the reference's, no temp file may remain, and nothing may be left to compute.
A parameter change must recompute exactly the stage that reads it and the
stages after it.

Every command runs in its own folder with the relative workspace `ws`, so the
manifests hold relative paths and compare across workspaces as they are.

Determinism (checked, not assumed): two independent runs of this command, one
serial and one with --workers 2, gave byte-identical files everywhere under
raw/, cache/ and tensors/, the .mp4 videos included (same frames into the same
OpenCV mp4v encoder; h5py records no timestamps by default). So nothing is
excluded from the comparison except the manifests' "seconds" (wall time of the
unit) and the resolved configs under configs/, whose names carry the clock time.

Run with `-s` to see where each kill landed and how many temp files it left.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from killing import kill_group_and_wait

REPO = Path(__file__).resolve().parents[1]
STAGES = ("synthesize", "survey", "detect", "landmarks", "frontalize", "members", "bin")
WS = "ws"
# 2 sessions × 2 s at 6 fps, 1 s chunks: 2 synthesize units, 4 per chunk stage, 2 members, 1 bin
OVERRIDES = ("synthetic.duration_s=2", "synthetic.sessions=2", "synthetic.fps=6", "sources.chunk_s=1")
UNITS = {"synthesize": 2, "survey": 2, "detect": 4, "landmarks": 4, "frontalize": 4, "members": 2, "bin": 1}
OUTPUT_DIRS = ("raw", "cache", "tensors")
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
SUMMARY = re.compile(r"^(\w+)\s+(\d+) computed\s+(\d+) up to date\s+(\d+) failed\s+([\d.]+) s$", re.M)
TIMEOUT_S = 300
WRITING_S = 0.5  # a kill aimed at a half-written unit comes this long at most after its temp file
SPAWN_S = 1.5   # about how long a spawned worker takes to import a stage, on 2 busy cores
MAX_ATTEMPTS = 4  # a trial whose kill missed (the run had finished) is redone with shorter delays


def command(*extra: str, workers: int = 1, sub: str = "run") -> list[str]:
    """`audience run --synthesize …` (sub "run") or `audience synthesize …` (sub "synthesize")."""
    head = ["run", "--synthesize"] if sub == "run" else [sub]
    return [sys.executable, "-m", "pipeline.cli", *head, "--small", "--workspace", WS, "--quiet",
            "--workers", str(workers), *OVERRIDES, *extra]


def stages_of(sub: str) -> tuple[str, ...]:
    return STAGES if sub == "run" else (sub,)


def parse_summary(text: str) -> dict[str, dict]:
    """{stage: {computed, up_to_date, failed, seconds}} from the CLI's summary lines."""
    return {m[1]: {"computed": int(m[2]), "up_to_date": int(m[3]), "failed": int(m[4]), "seconds": float(m[5])}
            for m in SUMMARY.finditer(text)}


def run_to_end(folder: Path, *extra: str, workers: int = 1, sub: str = "run") -> dict[str, dict]:
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    result = subprocess.run(command(*extra, workers=workers, sub=sub), cwd=folder, env=ENV, capture_output=True, text=True,
                            timeout=TIMEOUT_S)
    assert result.returncode == 0, f"rc={result.returncode}\n{result.stdout}\n{result.stderr[-3000:]}"
    summary = parse_summary(result.stdout)
    print(f"{sub} {' '.join(extra)} (workers {workers}) in {time.perf_counter() - started:.1f} s: {computed(summary)}")
    assert list(summary) == list(stages_of(sub)), result.stdout
    assert all(s["failed"] == 0 for s in summary.values()), result.stdout
    return summary


def computed(summary: dict) -> dict[str, int]:
    return {stage: s["computed"] for stage, s in summary.items()}


# ----------------------------------------------------------------------------- killing


def _stage_started(stage: str, log: Path, configs: Path, launched_ns: int) -> bool:
    """The run has entered `stage`: the summary line of the stage before it is out (for the
    first stage: this run has saved its resolved config, which happens just before it)."""
    i = STAGES.index(stage)
    if i == 0:
        return configs.is_dir() and any(p.stat().st_mtime_ns >= launched_ns for p in configs.iterdir())
    return STAGES[i - 1] in parse_summary(log.read_text())


def stage_folder(root: Path, stage: str) -> Path:
    """Where `stage` writes its outputs and their manifests."""
    return root / ("raw" if stage == "synthesize" else "tensors" if stage == "bin" else f"cache/{stage}")


def _new_manifests(root: Path, stage: str, since_ns: int) -> int:
    folder = stage_folder(root, stage)
    return sum(p.stat().st_mtime_ns >= since_ns for p in folder.rglob("*.manifest.json")) if folder.is_dir() else 0


def run_and_kill(folder: Path, stage: str, delay_s: float, workers: int, tag: str, trigger: str = "start",
                 sub: str = "run") -> str | None:
    """Start the run; once it has entered `stage` ("start"), and for "temp" once a new temp file
    shows that a unit is being written, for "unit" once this run has committed a unit of `stage`,
    wait `delay_s`, then SIGKILL its whole process group. Returns the stage that was running when
    the kill landed (None: it had finished)."""
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / f"kill-{tag}.log"
    old_temps = set(temp_files(folder / WS))
    launched_ns = time.time_ns() - 10_000_000   # mtime granularity slack
    with open(log, "w") as out:
        proc = subprocess.Popen(command(workers=workers, sub=sub), cwd=folder, env=ENV, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)

    def waiting() -> bool:
        if _stage_started(stage, log, folder / WS / "configs", launched_ns):
            if trigger == "start" or stage in parse_summary(log.read_text()):   # (the stage has finished)
                return False
            if trigger == "temp":
                return not set(temp_files(folder / WS)) - old_temps
            return _new_manifests(folder / WS, stage, launched_ns) == 0
        return True

    try:
        deadline = time.monotonic() + TIMEOUT_S
        while proc.poll() is None and waiting():
            assert time.monotonic() < deadline, f"no {trigger} of {stage}:\n{log.read_text()}"
            time.sleep(0.005)
        if proc.poll() is None:
            time.sleep(delay_s)
        finished = proc.poll() is not None
    finally:
        kill_group_and_wait(proc)
    if finished:
        assert proc.returncode == 0, log.read_text()
        return None
    printed = parse_summary(log.read_text())
    landed = next((s for s in stages_of(sub) if s not in printed), None)   # None: every stage had finished
    print(f"killed in {landed} after {(time.time_ns() - launched_ns) / 1e9:.1f} s, "
          f"{len(temp_files(folder / WS))} temp file(s) left behind")
    return landed


# ----------------------------------------------------------------------------- comparing workspaces


def _h5_items(path: Path) -> dict[str, object]:
    """Every dataset's value and every attribute (file, groups, datasets) of an HDF5 file."""
    items: dict[str, object] = {}
    with h5py.File(path, "r") as h5:
        def visit(name, obj):
            for key, value in obj.attrs.items():
                items[f"{name}@{key}"] = value
            if isinstance(obj, h5py.Dataset):
                items[name] = obj[()]
        for key, value in h5.attrs.items():
            items[f"/@{key}"] = value
        h5.visititems(visit)
    return items


def snapshot(root: Path) -> dict[str, object]:
    """What must not depend on interruptions: HDF5 contents, every file's bytes, manifests less timing."""
    items: dict[str, object] = {}
    for top in OUTPUT_DIRS:
        for path in sorted((root / top).rglob("*")):
            if not path.is_file():
                continue
            rel = str(path.relative_to(root))
            if path.name.endswith(".manifest.json"):
                manifest = json.loads(path.read_text())
                manifest.pop("seconds", None)   # wall time of the unit
                items[rel] = manifest
                continue
            items[rel + " (sha256)"] = hashlib.sha256(path.read_bytes()).hexdigest()
            if path.suffix == ".h5":
                items.update({f"{rel}:{k}": v for k, v in _h5_items(path).items()})
    return items


def _same(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype.kind in "fc":
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.array_equal(a, b))


def differences(reference: dict, other: dict) -> list[str]:
    out = [f"only in reference: {k}" for k in sorted(reference.keys() - other.keys())]
    out += [f"only in resumed run: {k}" for k in sorted(other.keys() - reference.keys())]
    for key in sorted(reference.keys() & other.keys()):
        a, b = reference[key], other[key]
        if isinstance(a, dict) and isinstance(b, dict):   # a manifest: name the fields that differ
            fields = sorted(f for f in a.keys() | b.keys() if a.get(f) != b.get(f))
            out += [f"differs: {key} [{f}]: {a.get(f)!r:.300} != {b.get(f)!r:.300}" for f in fields]
        elif not _same(a, b):
            out.append(f"differs: {key}")
    return out


def units_left_to_do(folder: Path, *extra: str, sub: str = "run") -> dict[str, list[str]]:
    """The stale or missing units of each stage, as a rerun of `command(*extra)` in `folder` sees
    them: the runner computes exactly these (what `audience status` lists), so an empty list for
    every stage means a rerun computes nothing. Asked in this process (no CLI start-up per check);
    the test of parameter changes reruns the CLI itself for the same assertion."""
    from pipeline.cli import build_parser, load_cli_config
    from pipeline.runner import stage_status
    from pipeline.stages import get_stage
    from pipeline.store import Workspace

    args = build_parser().parse_args(command(*extra, sub=sub)[3:])
    with contextlib.chdir(folder):
        cfg = load_cli_config(args)
        workspace = Workspace(Path(cfg.workspace.root))
        status = {name: stage_status(get_stage(name), cfg, workspace) for name in stages_of(sub)}
    return {name: s["stale"] + s["missing"] for name, s in status.items()}


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if ".tmp-" in p.name]


# ----------------------------------------------------------------------------- the reference


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reference")
    started = time.perf_counter()
    summary = run_to_end(folder)
    wall_s = time.perf_counter() - started
    assert computed(summary) == UNITS
    snap = snapshot(folder / WS)
    assert any(k.startswith("tensors/") for k in snap) and any(k.endswith(".mp4 (sha256)") for k in snap)
    unit_s = {s: float(np.median([json.loads(p.read_text())["seconds"]
                                  for p in stage_folder(folder / WS, s).rglob("*.manifest.json")])) for s in STAGES}
    print(f"reference run: {wall_s:.1f} s; stages {[(s, v['seconds']) for s, v in summary.items()]}")
    return {"folder": folder, "seconds": {s: v["seconds"] for s, v in summary.items()}, "unit_s": unit_s,
            "wall_s": wall_s, "snapshot": snap}


def assert_resumed_equals_reference(root: Path, reference: dict, tops: tuple[str, ...] = OUTPUT_DIRS) -> None:
    """Everything under `tops` (of raw/, cache/, tensors/) equals the reference; no temp file anywhere."""
    assert temp_files(root) == []
    wanted = {k: v for k, v in reference["snapshot"].items() if k.split("/")[0] in tops}
    diff = differences(wanted, snapshot(root))
    assert diff == [], "resumed outputs differ from the uninterrupted run:\n" + "\n".join(diff[:40])


def head_start(reference: dict, folder: Path, stages: tuple[str, ...]) -> None:
    """Copy the reference's finished outputs of `stages` (relative manifests stay valid)."""
    for stage in stages:
        shutil.copytree(stage_folder(reference["folder"] / WS, stage), stage_folder(folder / WS, stage))


# ----------------------------------------------------------------------------- kill trials

# name: (subcommand, workers, stages whose outputs are copied from the reference first, seed, kills). A kill
# (stage, lo, hi, trigger) waits for its trigger, then a fraction drawn from [lo, hi) of a time:
#   "start": the run has entered `stage`; then lo..hi × the stage's reference time, so kills land
#            at different points inside their stages;
#   "temp":  a new temp file shows a unit being written; then lo..hi × WRITING_S, so the kill
#            lands while a unit is half written (the synthesizer renders its video into the temp
#            file for about a second), which timed kills on these short units rarely do;
#   "unit":  this run has committed a unit of `stage`; then lo..hi × the stage's median unit time
#            in the reference, so the kill lands among the later units, not in the model load
#            that makes most of the landmarks stage's time.
# The copies save time: a run that finds them skips those stages as up to date, as if an earlier
# run had done them.
TRIALS = {
    "serial-from-scratch": ("run", 1, (), 1, [("synthesize", 0.1, 0.9, "temp"), ("detect", 0.1, 0.9, "start"),
                                              ("detect", 0.2, 1.5, "unit")]),
    # `audience synthesize` alone: both workers render a video when the kill comes
    "workers2-synthesize": ("synthesize", 2, (), 2, [("synthesize", 0.1, 0.9, "temp")]),
    "workers2-late-stages": ("run", 2, ("synthesize", "detect", "landmarks"), 3,
                             [("frontalize", 0.1, 0.9, "start"), ("members", 0.1, 0.9, "start")]),
}


def kill_trial(folder: Path, reference: dict, trial: str, shrink: float) -> list[str | None]:
    """Run the trial's kills in `folder` (delays × shrink); the stage each kill landed in (None: missed)."""
    sub, workers, copied, seed, kills = TRIALS[trial]
    head_start(reference, folder, copied)
    rng = random.Random(seed)
    landed = []
    for i, (stage, lo, hi, trigger) in enumerate(kills):
        if trigger == "start":
            # the stage's reference (serial) time, at least 0.3 s so a short stage still gets a spread
            # of moments; with workers, plus the time spawned workers take to start before they compute
            span_s = max(reference["seconds"][stage], 0.3) + (SPAWN_S if workers > 1 else 0.0)
        else:
            span_s = WRITING_S if trigger == "temp" else reference["unit_s"][stage]
        landed.append(run_and_kill(folder, stage, shrink * rng.uniform(lo, hi) * span_s, workers, str(i), trigger,
                                   sub))
    return landed


@pytest.mark.slow
@pytest.mark.parametrize("trial", list(TRIALS))
def test_sigkilled_run_resumes_to_the_uninterrupted_result(tmp_path, reference, trial):
    sub, workers = TRIALS[trial][:2]
    # A kill that comes after the run finished its work tests nothing: how long a stage or a worker's
    # start-up takes depends on the machine and its load, so such a trial is redone afresh with the
    # delays halved (the same random fractions), until every kill lands with work still to do.
    for attempt in range(MAX_ATTEMPTS):
        if tmp_path.exists():
            shutil.rmtree(tmp_path)
        landed = kill_trial(tmp_path, reference, trial, shrink=0.5 ** attempt)
        print(f"{trial} (delays × {0.5 ** attempt:g}): kills aimed at {[k[0] for k in TRIALS[trial][4]]} "
              f"landed in {landed}")
        if None not in landed and any(units_left_to_do(tmp_path, sub=sub).values()):
            break
    assert None not in landed, f"a kill came after the run had finished, {MAX_ATTEMPTS} times"
    assert any(units_left_to_do(tmp_path, sub=sub).values()), "every kill came after the last unit was written"

    resumed = run_to_end(tmp_path, workers=workers, sub=sub)
    assert sum(computed(resumed).values()) > 0
    assert_resumed_equals_reference(tmp_path / WS, reference, OUTPUT_DIRS if sub == "run" else ("raw",))
    assert units_left_to_do(tmp_path, sub=sub) == dict.fromkeys(stages_of(sub), [])   # a rerun computes nothing


# ----------------------------------------------------------------------------- parameter changes


def _mtimes(root: Path, top: str) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in (root / top).rglob("*") if p.is_file()}


def test_a_parameter_change_recomputes_its_stage_and_the_later_ones_only(tmp_path, reference):
    head_start(reference, tmp_path, STAGES)
    ws = tmp_path / WS
    with h5py.File(ws / "tensors" / "synthmovie.h5", "r") as h5:
        ref_bins = h5["landmarks"].shape[1]
    upstream = {top: _mtimes(ws, top) for top in ("raw", "cache/detect", "cache/landmarks")}

    # the copied reference is complete: a second run computes nothing (and relative manifests survive a copy)
    summary = run_to_end(tmp_path)
    assert computed(summary) == dict.fromkeys(STAGES, 0)
    assert {s: v["up_to_date"] for s, v in summary.items()} == UNITS

    # frontalize.iterations: frontalize, members and bin recompute; the earlier stages are up to date
    summary = run_to_end(tmp_path, "frontalize.iterations=6")
    early = ("synthesize", "survey", "detect", "landmarks")
    assert computed(summary) == {**UNITS, **dict.fromkeys(early, 0)}
    assert {s: summary[s]["up_to_date"] for s in early} == {s: UNITS[s] for s in early}
    assert upstream == {top: _mtimes(ws, top) for top in upstream}

    # binning.bin_seconds: only bin
    summary = run_to_end(tmp_path, "frontalize.iterations=6", "binning.bin_seconds=0.5")
    assert computed(summary) == {**dict.fromkeys(STAGES, 0), "bin": 1}
    with h5py.File(ws / "tensors" / "synthmovie.h5", "r") as h5:
        assert h5.attrs["bin_seconds"] == 0.5 and h5["landmarks"].shape[1] > ref_bins

    # detect.threshold: detect and everything after it, not synthesize
    summary = run_to_end(tmp_path, "frontalize.iterations=6", "binning.bin_seconds=0.5", "detect.threshold=0.4")
    assert computed(summary) == {**UNITS, "synthesize": 0}
    assert summary["synthesize"]["up_to_date"] == 2
    assert upstream["raw"] == _mtimes(ws, "raw")
    assert temp_files(ws) == []

