"""The stage runner: skip when up to date, rerun only what changed, survive failures and kills."""
import dataclasses
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from pipeline.runner import RunProgress, run_stage, stage_status, unit_state
from pipeline.store import Workspace, sweep_orphans, tmp_path_for
from killing import start_and_kill
from toy_stages import KEYS, NUMBERS, SUMS, NumbersConfig, SumsConfig, ToyConfig

TESTS_DIR = Path(__file__).resolve().parent


def run_both(cfg, ws, **kw):
    return [run_stage(stage, cfg, ws, progress=False, **kw) for stage in (NUMBERS, SUMS)]


def read_all(root: Path) -> dict:
    out = {}
    for path in sorted(root.rglob("*.h5")):
        with h5py.File(path, "r") as h5:
            out[str(path.relative_to(root))] = {k: h5[k][()] for k in h5}
    return out


def assert_same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].keys() == b[name].keys()
        for key in a[name]:
            np.testing.assert_array_equal(a[name][key], b[name][key])


def test_second_run_skips_everything(tmp_path):
    ws, cfg = Workspace(tmp_path), ToyConfig()
    first = run_both(cfg, ws)
    assert [len(r.done) for r in first] == [len(KEYS), 1]
    second = run_both(cfg, ws)
    assert [len(r.done) for r in second] == [0, 0]
    assert [len(r.skipped) for r in second] == [len(KEYS), 1]


def test_changing_a_parameter_reruns_only_dependent_units(tmp_path):
    ws, cfg = Workspace(tmp_path), ToyConfig()
    run_both(cfg, ws)
    numbers_mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "cache" / "numbers").glob("*.h5")}
    changed = dataclasses.replace(cfg, sums=SumsConfig(offset=5.0))
    reports = run_both(changed, ws)
    assert len(reports[0].done) == 0 and len(reports[1].done) == 1
    assert numbers_mtimes == {p: p.stat().st_mtime_ns for p in numbers_mtimes}
    # an upstream change whose outputs differ reruns the upstream stage and its dependant
    scaled = dataclasses.replace(changed, numbers=NumbersConfig(scale=2.0))
    reports = run_both(scaled, ws)
    assert len(reports[0].done) == len(KEYS) and len(reports[1].done) == 1


def test_force_recomputes_and_results_are_identical(tmp_path):
    ws, cfg = Workspace(tmp_path), ToyConfig()
    run_both(cfg, ws)
    before = read_all(tmp_path / "cache")
    reports = run_both(cfg, ws, force=True)
    assert len(reports[0].done) == len(KEYS)
    assert_same(before, read_all(tmp_path / "cache"))


def test_truncated_output_is_stale_and_recomputed(tmp_path):
    ws, cfg = Workspace(tmp_path), ToyConfig()
    run_both(cfg, ws)
    victim = tmp_path / "cache" / "numbers" / "k2.h5"
    with open(victim, "r+b") as handle:
        handle.truncate(100)
    unit = [u for u in NUMBERS.plan(cfg, ws) if u.key == ("k2",)][0]
    assert unit_state(NUMBERS, unit, cfg) == "stale"
    reports = run_both(cfg, ws)
    assert reports[0].done == ["k2"]


def test_a_failing_unit_does_not_stop_the_others(tmp_path):
    ws = Workspace(tmp_path)
    cfg = ToyConfig(numbers=NumbersConfig(fail_key="k3"))
    numbers, sums = run_both(cfg, ws)
    assert set(numbers.failed) == {"k3"} and "told to fail" in numbers.failed["k3"]
    assert len(numbers.done) == len(KEYS) - 1
    assert "missing" in sums.failed["all"]          # the dependant reports its missing input
    status = stage_status(NUMBERS, cfg, ws)
    assert status["missing"] == ["k3"] and len(status["done"]) == len(KEYS) - 1


def test_one_progress_bar_counts_every_stage_and_the_failures(tmp_path, capsys):
    ws = Workspace(tmp_path)
    cfg = ToyConfig(numbers=NumbersConfig(fail_key="k3"))
    overall = RunProgress()
    run_stage(NUMBERS, cfg, ws, workers=2, overall=overall)
    run_stage(SUMS, cfg, ws, overall=overall)
    assert (overall.bar.n, overall.bar.total) == (len(KEYS) + 1, len(KEYS) + 1)
    assert overall.counts == {"numbers": [len(KEYS), len(KEYS)], "sums": [1, 1]} and overall.failed == 2
    overall.close()
    shown = capsys.readouterr().err.replace("\r", "\n").splitlines()
    assert any(f"numbers {len(KEYS)}/{len(KEYS)} · sums 1/1 · 2 failed" in line for line in shown)
    rerun = RunProgress()
    run_stage(NUMBERS, cfg, ws, overall=rerun)          # only the failed unit is left to do
    assert rerun.counts == {"numbers": [1, 1]} and rerun.failed == 1


def test_parallel_workers_give_the_same_outputs(tmp_path):
    cfg = ToyConfig()
    run_both(cfg, Workspace(tmp_path / "serial"))
    reports = run_both(cfg, Workspace(tmp_path / "parallel"), workers=2)
    assert not reports[0].failed and len(reports[0].done) == len(KEYS)
    assert_same(read_all(tmp_path / "serial" / "cache"), read_all(tmp_path / "parallel" / "cache"))


def test_manifest_records_inputs_params_and_config(tmp_path):
    ws, cfg = Workspace(tmp_path), ToyConfig()
    run_both(cfg, ws)
    manifest = json.loads((tmp_path / "cache" / "sums" / "all.h5.manifest.json").read_text())
    assert len(manifest["inputs"]) == len(KEYS)
    assert manifest["config"] == {"sums": {"offset": 0.0}}
    assert manifest["params_hash"] == SUMS.params_hash(cfg)
    assert manifest["outputs"]["sums"]["size"] == (tmp_path / "cache" / "sums" / "all.h5").stat().st_size


def test_orphan_temp_files_of_dead_writers_are_swept(tmp_path):
    final = tmp_path / "out.h5"
    live = tmp_path / tmp_path_for(final).name                       # ours: pid alive
    dead = tmp_path / tmp_path_for(final).name.replace(f"-{os.getpid()}-", "-999999999-")
    live.write_text("x")
    dead.write_text("x")
    removed = sweep_orphans(tmp_path)
    assert removed == [dead] and live.exists() and not dead.exists()


@pytest.mark.slow
@pytest.mark.parametrize("trial", range(4))
def test_sigkill_at_a_random_moment_then_resume_equals_uninterrupted_run(tmp_path, trial):
    script = [sys.executable, str(TESTS_DIR / "toy_stages.py")]
    subprocess.run(script + [str(tmp_path / "reference")], check=True)
    reference = read_all(tmp_path / "reference" / "cache")

    rng = random.Random(trial)
    root = tmp_path / "killed"
    workers = "2" if trial % 2 else "1"
    for _ in range(2):                        # kill twice, at random moments
        start_and_kill(script + [str(root), "--delay", "0.3", "--workers", workers], rng.uniform(0.3, 2.5))
    subprocess.run(script + [str(root)], check=True)
    assert_same(reference, read_all(root / "cache"))
    leftovers = [p for p in root.rglob("*") if ".tmp-" in p.name]
    assert leftovers == []
