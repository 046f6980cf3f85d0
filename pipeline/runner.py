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
    upstream: str = ""                    # the stage whose unit of the same key this one reads, when it
    compute_with_upstream: Callable | None = None  # can compute both in one pass:
    #                                       (upstream_unit, unit, cfg, upstream_tmp_outputs, tmp_outputs) -> None

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
    return execute_units([(stage, unit)], cfg, lambda tmp: stage.compute(unit, cfg, tmp[0]))[0]


def execute_units(pairs: list[tuple[Stage, Unit]], cfg, compute: Callable[[list[dict]], None]) -> list[dict]:
    """Compute units of consecutive stages in one pass (`compute` gets each unit's temp outputs), then
    commit them in order, each with its manifest last: a kill in between leaves the earlier units done."""
    started = time.perf_counter()
    made_here = {Path(p) for _, u in pairs for _, p in u.outputs}
    for stage, unit in pairs:
        missing = [str(p) for p in unit.inputs if not Path(p).exists() and Path(p) not in made_here]
        if missing:
            raise DataError(f"{stage.name} {unit.name}: input file(s) missing: {', '.join(missing)}. "
                            f"Run the stage that makes them, or fix the screening list.")
    tmp_outputs = []
    for _, unit in pairs:
        unit.manifest_path.unlink(missing_ok=True)   # the old outputs are no longer vouched for
        tmp = {}
        for name, final in unit.outputs:
            ensure_dir(Path(final).parent)
            tmp[name] = tmp_path_for(Path(final))
        tmp_outputs.append(tmp)
    manifests = []
    try:
        compute(tmp_outputs)
        for (stage, unit), tmp in zip(pairs, tmp_outputs):
            records = {}
            for name, final in unit.outputs:
                if not tmp[name].exists():
                    raise RuntimeError(f"stage {stage.name} did not write its output '{name}' for {unit.name}")
                records[name] = {"path": str(final), "sha256": file_digest(tmp[name]), "size": tmp[name].stat().st_size}
                commit(tmp[name], Path(final))
            manifest = expected_manifest(stage, unit, cfg)
            manifest.update(outputs=records, seconds=round(time.perf_counter() - started, 3),
                            config={s: to_dict(getattr(cfg, s)) for s in stage.sections})
            write_text_atomic(unit.manifest_path, json.dumps(manifest, indent=1, sort_keys=True))
            manifests.append(manifest)
    finally:
        for tmp in tmp_outputs:
            for path in tmp.values():
                path.unlink(missing_ok=True)
    return manifests


def _fused_worker(stage: Stage, unit: Unit, then: Stage, then_unit: Unit, cfg) -> tuple[str, str | None]:
    """`unit` and the next stage's unit of the same key in one pass (e.g. one video decode)."""
    def compute(tmp):
        then.compute_with_upstream(unit, then_unit, cfg, tmp[0], tmp[1])

    return _guarded(unit.name, lambda: execute_units([(stage, unit), (then, then_unit)], cfg, compute))


def _worker(stage: Stage, unit: Unit, cfg) -> tuple[str, str | None]:
    return _guarded(unit.name, lambda: execute_unit(stage, unit, cfg))


def _guarded(name: str, work: Callable) -> tuple[str, str | None]:
    try:
        work()
        return name, None
    except (DataError, ValueError, OSError) as err:
        return name, f"{type(err).__name__}: {err}"
    except Exception:  # noqa: BLE001 - a failing unit must not stop the others
        return name, traceback.format_exc(limit=6)


@dataclass
class StageReport:
    stage: str
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    then_done: list[str] = field(default_factory=list)   # units of the next stage computed in the same pass

    def line(self) -> str:
        return (f"{self.stage:<12} {len(self.done):>4} computed {len(self.skipped):>4} up to date "
                f"{len(self.failed):>4} failed  {self.seconds:8.1f} s")


def run_stage(stage: Stage, cfg, workspace: Workspace, *, workers: int = 1, force: bool = False,
              select: Callable[[Unit], bool] | None = None, progress: bool = True,
              then: Stage | None = None) -> StageReport:
    """Run every unit of `stage` that is not up to date; failures are collected, not raised.

    `then`: the next stage, when it declares `stage` as its upstream and can compute with it: each unit
    computed here also computes the next stage's unit of the same key in the same pass (so a chunk's
    video is decoded once for detect and landmarks); the next stage's own run then finds it done.
    """
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
    fused = {}
    if then is not None and then.upstream == stage.name and then.compute_with_upstream is not None:
        fused = {u.key: u for u in then.plan(cfg, workspace) if select is None or select(u)}
    jobs = [(_fused_worker, (stage, unit, then, fused[unit.key], cfg)) if unit.key in fused
            else (_worker, (stage, unit, cfg)) for unit in todo]
    fused_names = {"/".join(key) for key in fused}
    desc = f"{stage.name}+{then.name}" if fused else stage.name
    bar = tqdm(total=len(todo), desc=desc, unit="unit", disable=not progress or not todo, leave=False)
    if workers <= 1 or len(todo) <= 1:
        for name, error in (fn(*job_args) for fn, job_args in jobs):
            _record(report, name, error, name in fused_names)
            bar.update()
    else:
        ctx = mp.get_context("spawn")   # no HDF5 handles or threads leak across a fork
        with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_quiet_ctrl_c) as pool:
            futures = [pool.submit(fn, *job_args) for fn, job_args in jobs]
            for future in cf.as_completed(futures):
                try:
                    name, error = future.result()
                except Exception as err:  # noqa: BLE001 - e.g. a worker killed by the OS
                    name, error = "?", f"worker process died: {err}"
                _record(report, name, error, name in fused_names)
                bar.update()
    bar.close()
    for folder in output_folders:   # again: writers of a killed run may have died only since the start
        sweep_orphans(folder)
    report.seconds = time.perf_counter() - started
    return report


def _quiet_ctrl_c() -> None:
    """Worker start-up: a Ctrl-C (SIGINT to the whole process group) stops the worker without the
    'Exception ignored … KeyboardInterrupt' tracebacks of one that lands in a finalizer."""
    import sys

    sys.unraisablehook = deliver_interrupts(sys.unraisablehook)


def deliver_interrupts(fallback):
    """An unraisable-exception hook: a Ctrl-C that lands in a finalizer (a weakref callback, a __del__)
    cannot propagate, so Python would print 'Exception ignored … KeyboardInterrupt' and carry on.
    Deliver it again, silently, a moment later from another thread, once the finalizer is over (a
    re-delivery from inside the hook would only raise in the hook; nothing happens once SIGINT is
    ignored)."""
    import _thread
    import threading

    if getattr(fallback, "delivers_interrupts", False):
        return fallback

    def later():
        time.sleep(0.05)
        _thread.interrupt_main()

    def hook(unraisable):
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            threading.Thread(target=later, daemon=True).start()
        else:
            fallback(unraisable)
    hook.delivers_interrupts = True
    return hook


def _record(report: StageReport, name: str, error: str | None, fused: bool = False) -> None:
    if error is None:
        report.done.append(name)
        if fused:
            report.then_done.append(name)
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


__all__ = ["Stage", "Unit", "StageReport", "run_stage", "stage_status", "unit_state", "execute_unit", "execute_units"]
_ = commit  # re-exported for stages that write several files
