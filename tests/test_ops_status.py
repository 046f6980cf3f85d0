"""Issue 11, item 6: `status` judges each unit against the config the workspace's last run used (or the
one given) and says why a stale unit is stale: which config key, input, code version or output changed."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

from pipeline.runner import Graph, run_stage, stage_status, why_stale
from pipeline.store import Workspace
from toy_stages import NUMBERS, SUMS, NumbersConfig, ToyConfig

REPO = Path(__file__).resolve().parents[1]
DECLARED_SUMS = dataclasses.replace(SUMS, needs=(NUMBERS,))


def _why(stage, cfg, ws) -> dict[str, str]:
    reasons: dict[str, str] = {}
    stage_status(stage, cfg, ws, reasons)
    return reasons


def test_why_names_the_config_key_the_input_the_code_and_the_output(tmp_path):
    ws = Workspace(tmp_path)
    cfg = ToyConfig()
    for stage in (NUMBERS, DECLARED_SUMS):
        run_stage(stage, cfg, ws, progress=False)
    assert _why(NUMBERS, cfg, ws) == {} and _why(DECLARED_SUMS, cfg, ws) == {}
    scaled = dataclasses.replace(cfg, numbers=NumbersConfig(scale=2.0))
    assert set(_why(NUMBERS, scaled, ws).values()) == {"config numbers.scale: 1.0 → 2.0"}
    assert "config numbers.scale: 1.0 → 2.0" in _why(DECLARED_SUMS, scaled, ws)["all"]
    run_stage(NUMBERS, scaled, ws, progress=False)             # the inputs of sums change under it
    assert "input changed: cache/numbers/k0.h5" in _why(DECLARED_SUMS, scaled, ws)["all"]
    newer = dataclasses.replace(NUMBERS, version=NUMBERS.version + "x")
    assert all(r.startswith(f"code {NUMBERS.code_version()} → {newer.code_version()}")
               for r in _why(newer, scaled, ws).values())
    unit = NUMBERS.plan(scaled, ws)[0]
    unit.outputs[0][1].write_bytes(b"changed by hand")
    assert why_stale(NUMBERS, unit, scaled, Graph(scaled, ws)).startswith("output ")


def _audience(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})


def test_cli_status_judges_against_the_last_run_unless_told_otherwise(tmp_path):
    """The README's `synthesize --small` output is done by the config it was made with (it was called
    stale, judged by the default config); with an override, status says which key makes it stale."""
    made = _audience("synthesize", "--workspace", "ws", "--small", "synthetic.duration_s=1", "synthetic.sessions=1",
                     "synthetic.fps=6", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    status = _audience("status", "--workspace", "ws", "-v", cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert "judged against the config of the last run here" in status.stdout
    line = next(x for x in status.stdout.splitlines() if x.startswith("synthesize"))
    assert line.split()[1:] == ["1", "0", "0"]                   # done, stale, missing
    other = _audience("status", "--workspace", "ws", "-v", "synthetic.scale=small", "synthetic.duration_s=1",
                      "synthetic.sessions=1", "synthetic.fps=6", "synthetic.seed=7", cwd=tmp_path)
    assert "stale" in other.stdout and "synthetic.seed: 0 → 7" in other.stdout, other.stdout
