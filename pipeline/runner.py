"""The stage runner: caching, resume, parallelism and failure reporting.

A *stage* is a plan function (config → units of work) and a compute function
(one unit → its output files). The compute function writes to the temp paths
it is handed; the runner fsyncs and moves them onto the final names, then
writes the unit's manifest last. A unit is done when its manifest exists and
matches the current input fingerprints, parameter hash and code version, and
its outputs exist; otherwise it is recomputed.
"""
from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing as mp
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from configs.loader import stable_hash, to_dict
from pipeline import __version__
from pipeline.store import (DataError, Workspace, commit, ensure_dir, file_digest, sweep_orphans,
                            tmp_path_for, write_text_atomic)

MANIFEST_SUFFIX = ".manifest.json"


@dataclass(frozen=True)
class Unit:
    """One unit of work: a movie, session, camera or time chunk."""
    stage: str
    key: tuple[str, ...]                 # e.g. (movie, session, camera, chunk)
    inputs: tuple[Path, ...]             # files whose content shapes the outputs
    outputs: tuple[tuple[str, Path], ...]  # (name, final path); the first one carries the manifest
    payload: tuple[tuple[str, object], ...] = ()  # small extra facts the compute function needs

    @property
    def name(self) -> str:
        return "/".join(self.key)

    @property
    def manifest_path(self) -> Path:
        return Path(str(self.outputs[0][1]) + MANIFEST_SUFFIX)

    def output(self, name: str) -> Path:
        return dict(self.outputs)[name]

    def get(self, name: str, default=None):
        return dict(self.payload).get(name, default)


@dataclass(frozen=True)
class Stage:
    name: str
    help: str
    version: str                          # bump when the algorithm changes: invalidates old outputs
    sections: tuple[str, ...]             # config sections that shape the outputs
    plan: Callable                        # (cfg, workspace) -> list[Unit]
    compute: Callable                     # (unit, cfg, tmp_outputs: dict[str, Path]) -> None

    def params_hash(self, cfg) -> str:
        return stable_hash({s: getattr(cfg, s) for s in self.sections})

    def code_version(self) -> str:
        return f"{__version__}+{self.name}.{self.version}"


# ----------------------------------------------------------------------------- manifests


def _input_fingerprint(path: Path) -> str:
    """The producer's recorded digest when the input came from a stage, else the content hash."""
    path = Path(path)
    for manifest in path.parent.glob("*" + MANIFEST_SUFFIX):
        try:
            outputs = json.loads(manifest.read_text()).get("outputs", {})
        except (OSError, ValueError):
            continue
        for record in outputs.values():
            if Path(record["path"]) == path and path.exists() and path.stat().st_size == record["size"]:
                return record["sha256"]
    return file_digest(path)


def expected_manifest(stage: Stage, unit: Unit, cfg) -> dict:
    return {
        "stage": stage.name,
        "unit": unit.name,
        "code_version": stage.code_version(),
        "params_hash": stage.params_hash(cfg),
        "inputs": {str(p): _input_fingerprint(p) for p in unit.inputs},
    }


def unit_state(stage: Stage, unit: Unit, cfg) -> str:
    """'done', 'stale' (outputs exist but were made from other inputs or params) or 'missing'."""
    if not unit.manifest_path.exists():
        return "missing"
    try:
        recorded = json.loads(unit.manifest_path.read_text())
    except (OSError, ValueError):
        return "stale"
    for record in recorded.get("outputs", {}).values():
        path = Path(record["path"])
        if not path.exists() or path.stat().st_size != record["size"]:
            return "stale"
    if any(not Path(p).exists() for p in unit.inputs):
        return "stale"
    wanted = expected_manifest(stage, unit, cfg)
    same = all(recorded.get(k) == v for k, v in wanted.items())
    return "done" if same else "stale"


# ----------------------------------------------------------------------------- execution


def execute_unit(stage: Stage, unit: Unit, cfg) -> dict:
    """Compute one unit into temp files, commit them, then write the manifest (in a worker)."""
    started = time.perf_counter()
    missing = [str(p) for p in unit.inputs if not Path(p).exists()]
    if missing:
        raise DataError(f"{stage.name} {unit.name}: input file(s) missing: {', '.join(missing)}. "
                        f"Run the stage that makes them, or fix the screening list.")
    unit.manifest_path.unlink(missing_ok=True)   # the old outputs are no longer vouched for
    tmp_outputs = {}
    for name, final in unit.outputs:
        ensure_dir(Path(final).parent)
        tmp_outputs[name] = tmp_path_for(Path(final))
    try:
        stage.compute(unit, cfg, tmp_outputs)
        records = {}
        for name, final in unit.outputs:
            tmp = tmp_outputs[name]
            if not tmp.exists():
                raise RuntimeError(f"stage {stage.name} did not write its output '{name}' for {unit.name}")
            records[name] = {"path": str(final), "sha256": file_digest(tmp), "size": tmp.stat().st_size}
            commit(tmp, Path(final))
    finally:
        for tmp in tmp_outputs.values():
            tmp.unlink(missing_ok=True)
    manifest = expected_manifest(stage, unit, cfg)
    manifest.update(outputs=records, seconds=round(time.perf_counter() - started, 3),
                    config={s: to_dict(getattr(cfg, s)) for s in stage.sections})
    write_text_atomic(unit.manifest_path, json.dumps(manifest, indent=1, sort_keys=True))
    return manifest


def _worker(stage: Stage, unit: Unit, cfg) -> tuple[str, str | None]:
    try:
        execute_unit(stage, unit, cfg)
        return unit.name, None
    except (DataError, ValueError, OSError) as err:
        return unit.name, f"{type(err).__name__}: {err}"
    except Exception:  # noqa: BLE001 - a failing unit must not stop the others
        return unit.name, traceback.format_exc(limit=6)


@dataclass
class StageReport:
    stage: str
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def line(self) -> str:
        return (f"{self.stage:<12} {len(self.done):>4} computed {len(self.skipped):>4} up to date "
                f"{len(self.failed):>4} failed  {self.seconds:8.1f} s")


def run_stage(stage: Stage, cfg, workspace: Workspace, *, workers: int = 1, force: bool = False,
              select: Callable[[Unit], bool] | None = None, progress: bool = True) -> StageReport:
    """Run every unit of `stage` that is not up to date; failures are collected, not raised."""
    started = time.perf_counter()
    report = StageReport(stage.name)
    units = [u for u in stage.plan(cfg, workspace) if select is None or select(u)]
    output_folders = {Path(u.outputs[0][1]).parent for u in units}
    for folder in output_folders:
        sweep_orphans(folder)
    todo = []
    for unit in units:
        if not force and unit_state(stage, unit, cfg) == "done":
            report.skipped.append(unit.name)
        else:
            todo.append(unit)
    bar = tqdm(total=len(todo), desc=stage.name, unit="unit", disable=not progress or not todo, leave=False)
    if workers <= 1 or len(todo) <= 1:
        results = (_worker(stage, unit, cfg) for unit in todo)
        for name, error in results:
            _record(report, name, error)
            bar.update()
    else:
        ctx = mp.get_context("spawn")   # no HDF5 handles or threads leak across a fork
        with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            futures = [pool.submit(_worker, stage, unit, cfg) for unit in todo]
            for future in cf.as_completed(futures):
                try:
                    name, error = future.result()
                except Exception as err:  # noqa: BLE001 - e.g. a worker killed by the OS
                    name, error = "?", f"worker process died: {err}"
                _record(report, name, error)
                bar.update()
    bar.close()
    for folder in output_folders:   # again: writers of a killed run may have died only since the start
        sweep_orphans(folder)
    report.seconds = time.perf_counter() - started
    return report


def _record(report: StageReport, name: str, error: str | None) -> None:
    if error is None:
        report.done.append(name)
    else:
        report.failed[name] = error


def stage_status(stage: Stage, cfg, workspace: Workspace) -> dict[str, list[str]]:
    status: dict[str, list[str]] = {"done": [], "stale": [], "missing": []}
    try:
        units = stage.plan(cfg, workspace)
    except DataError as err:
        return {"done": [], "stale": [], "missing": [f"(cannot plan: {err})"]}
    for unit in units:
        status[unit_state(stage, unit, cfg)].append(unit.name)
    return status


__all__ = ["Stage", "Unit", "StageReport", "run_stage", "stage_status", "unit_state", "execute_unit"]
_ = commit  # re-exported for stages that write several files
