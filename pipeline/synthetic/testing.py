"""A tiny generated screening for tests, benchmarks and demos of any stage."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from pipeline.runner import StageReport, run_stage
from pipeline.store import DataError, Workspace


@dataclass(frozen=True)
class TestScreening:
    """Where a generated screening lives, and the config that made it."""
    __test__ = False                 # not a pytest test class
    workspace: Workspace
    config: object                   # configs.schema.ProjectConfig
    videos: tuple[Path, ...]         # every <camera>.mp4, session-major
    truths: tuple[Path, ...]         # matching <camera>.truth.h5
    session_files: tuple[Path, ...]  # one session.yaml per session
    report: StageReport


def make_test_screening(tmp_dir, duration_s: float = 2.0, sessions: int = 1, scale: str = "small",
                        cameras: int = 1, seed: int = 0, **synthetic) -> TestScreening:
    """Generate `sessions` screenings under tmp_dir/raw via the runner (cached: a second call is free).

    Extra keyword arguments set other SyntheticConfig fields (e.g. absence_fraction=0).
    """
    from configs.schema import ProjectConfig, WorkspaceConfig
    from pipeline.synthetic.stage import SYNTHESIZE, plan_synthesis

    base = ProjectConfig()
    syn = dataclasses.replace(base.synthetic, duration_s=float(duration_s), sessions=sessions, scale=scale,
                              cameras=cameras, seed=seed, **synthetic)
    cfg = base.replace(synthetic=syn, workspace=WorkspaceConfig(root=str(tmp_dir)))
    workspace = Workspace(Path(tmp_dir))
    report = run_stage(SYNTHESIZE, cfg, workspace, progress=False)
    if report.failed:
        raise DataError(f"synthetic screening failed: {report.failed}")
    units = plan_synthesis(cfg, workspace)
    return TestScreening(workspace, cfg, tuple(u.output("video") for u in units),
                         tuple(u.output("truth") for u in units),
                         tuple(dict(u.outputs)["session"] for u in units if "session" in dict(u.outputs)), report)
