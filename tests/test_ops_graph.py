"""Issue 11, item 1: the stage graph is declared (each stage's upstream stages and the config sections it
reads), the runner derives parameter hashes and input fingerprints from it, and a unit whose upstream unit
failed or is not done is not run but reported as blocked, naming the upstream failure: no manifest ever
records a config its inputs were not made with."""
from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.runner import run_stage, stage_status
from pipeline.store import Workspace
from toy_stages import KEYS, NUMBERS, SUMS, NumbersConfig, ToyConfig

REPO = Path(__file__).resolve().parents[1]
# 2 sessions × 2 s at 6 fps, 1 s chunks (as tests/test_resume_stages.py): about 8 s on 2 cores
SMALL = ("--small", "synthetic.duration_s=2", "synthetic.sessions=2", "synthetic.fps=6", "sources.chunk_s=1")

# the toy chain with its graph declared: sums reads the numbers units' outputs
DECLARED_NUMBERS = NUMBERS
DECLARED_SUMS = dataclasses.replace(SUMS, needs=(NUMBERS,))


def audience(*args, cwd: Path):
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})


def files_of(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small_workspace(tmp_path_factory) -> Path:
    """A small synthetic screening run through every stage once (copied by each test)."""
    folder = tmp_path_factory.mktemp("graph")
    result = audience("run", "--synthesize", "--workspace", "ws", "--quiet", *SMALL, cwd=folder)
    assert result.returncode == 0, result.stdout + result.stderr
    return folder


def test_the_declared_graph_gives_each_stage_its_upstream_stages_and_every_section_that_shapes_it():
    from pipeline.stages import GRAPH, get_stage

    for name, decl in GRAPH.items():
        stage = get_stage(name)
        assert [up.name for up in stage.needs] == list(decl.needs)
        # the hash covers the stage's own sections and every upstream stage's: these are exactly the
        # sections the stage modules list by hand, so the hashes (and existing manifests) did not change
        module_name, attr = decl.target.split(":")
        hand_listed = getattr(__import__(module_name, fromlist=[attr]), attr).sections
        assert set(stage.param_sections()) == set(hand_listed), name
    assert get_stage("bin").param_sections()[0] == "binning"
    assert {"sources", "detect", "landmarks", "frontalize", "members"} <= set(get_stage("bin").param_sections())


def test_a_unit_whose_upstream_unit_failed_is_blocked_and_its_previous_output_untouched(tmp_path):
    ws = Workspace(tmp_path)
    good = ToyConfig()
    for stage in (DECLARED_NUMBERS, DECLARED_SUMS):
        assert not run_stage(stage, good, ws, progress=False).failed
    sums = tmp_path / "cache" / "sums" / "all.h5"
    before = files_of(tmp_path / "cache" / "sums")

    # a new parameter for numbers, and one numbers unit fails under it
    bad = dataclasses.replace(good, numbers=NumbersConfig(scale=3.0, fail_key="k3"))
    problems: dict = {}
    numbers = run_stage(DECLARED_NUMBERS, bad, ws, progress=False, problems=problems)
    assert set(numbers.failed) == {"k3"} and len(numbers.done) == len(KEYS) - 1
    summed = run_stage(DECLARED_SUMS, bad, ws, progress=False, problems=problems)
    assert summed.done == [] and summed.failed == {}
    assert set(summed.blocked) == {"all"}
    assert summed.blocked["all"].startswith("numbers k3 failed: ValueError: unit k3 was told to fail")
    # sums did not run on k3's old output: its file and manifest (for the good config) are as they were
    assert files_of(tmp_path / "cache" / "sums") == before
    manifest = json.loads(Path(str(sums) + ".manifest.json").read_text())
    assert manifest["params_hash"] == DECLARED_SUMS.params_hash(good) != DECLARED_SUMS.params_hash(bad)
    assert manifest["config"]["numbers"]["scale"] == 1.0


def test_a_unit_whose_upstream_unit_is_stale_is_blocked_naming_the_command_to_run(tmp_path):
    ws = Workspace(tmp_path)
    good = ToyConfig()
    for stage in (DECLARED_NUMBERS, DECLARED_SUMS):
        run_stage(stage, good, ws, progress=False)
    before = files_of(tmp_path / "cache")
    changed = dataclasses.replace(good, numbers=NumbersConfig(scale=2.0))
    # sums alone, numbers not rerun: its inputs were made with scale 1, its config says 2
    report = run_stage(DECLARED_SUMS, changed, ws, progress=False)
    assert set(report.blocked) == {"all"} and report.done == []
    assert "numbers k0 is stale" in report.blocked["all"] and "run `audience numbers`" in report.blocked["all"]
    assert files_of(tmp_path / "cache") == before
    assert stage_status(DECLARED_SUMS, changed, ws)["stale"] == ["all"]
    # once numbers is redone, sums runs
    run_stage(DECLARED_NUMBERS, changed, ws, progress=False)
    assert run_stage(DECLARED_SUMS, changed, ws, progress=False).done == ["all"]


def test_an_input_whose_producer_lost_its_manifest_is_not_vouched_for(tmp_path):
    """A producing unit that failed (its manifest is removed when it starts) no longer vouches for the old
    file it left: the unit that read it is stale, not done."""
    ws = Workspace(tmp_path)
    for stage in (DECLARED_NUMBERS, DECLARED_SUMS):
        run_stage(stage, ToyConfig(), ws, progress=False)
    (tmp_path / "cache" / "numbers" / "k2.h5.manifest.json").unlink()
    assert stage_status(DECLARED_SUMS, ToyConfig(), ws)["stale"] == ["all"]


def test_cli_a_failing_stage_blocks_every_later_stage_and_the_tensor_stays_untouched(small_workspace, tmp_path):
    """The issue's case: detection failing for every unit (a missing detector file). Before, the later
    stages ran on the previous detections and rebuilt the tensor, recording the failing config."""
    shutil.copytree(small_workspace, tmp_path, dirs_exist_ok=True)
    ws = tmp_path / "ws"
    later = ("cache/landmarks", "cache/frontalize", "cache/members", "tensors")
    before = {top: files_of(ws / top) for top in later}
    result = audience("run", "--workspace", "ws", "--quiet", *SMALL, "detect.front_detector=/nowhere/front.svm",
                      cwd=tmp_path)
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    assert "detector file not found: /nowhere/front.svm" in out
    assert "15 unit(s) blocked" in out
    assert "detect 2, landmarks 2, frontalize 2, members 1: blocked by survey synthmovie/s01/cam0 failed" in out
    assert "bin 1: blocked by survey synthmovie/s0" in out
    assert "NOT rebuilt by this command (bin blocked)" in out
    assert {top: files_of(ws / top) for top in later} == before
    # back to the good config: the failed survey units are redone (to the same bytes), everything after
    # them is still up to date: nothing had been overwritten with the failing config
    rerun = audience("run", "--workspace", "ws", "--quiet", *SMALL, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    lines = {line.split()[0]: line for line in rerun.stdout.splitlines() if " computed " in line}
    assert " 2 computed" in lines["survey"]
    assert all(" 0 computed" in lines[s] for s in ("detect", "landmarks", "frontalize", "members", "bin")), lines
    assert {top: files_of(ws / top) for top in later} == before


def test_a_moved_workspace_stays_up_to_date(small_workspace, tmp_path):
    """Manifests name the workspace's files relative to its root: copied elsewhere and named by an absolute
    path, nothing is stale (before, every unit was)."""
    moved = tmp_path / "elsewhere" / "moved-ws"
    shutil.copytree(small_workspace / "ws", moved, symlinks=True)
    manifest = json.loads((moved / "tensors" / "synthmovie.h5.manifest.json").read_text())
    assert all(not Path(p).is_absolute() for p in manifest["inputs"])
    assert manifest["outputs"]["tensor"]["path"] == "tensors/synthmovie.h5"
    result = audience("run", "--workspace", moved, "--quiet", *SMALL, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if " computed " in line]
    assert len(lines) == 6 and all(" 0 computed" in line for line in lines), lines
