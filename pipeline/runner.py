"""The stage runner: caching, resume, parallelism and failure reporting.

A *stage* is a plan function (config → units of work) and a compute function
(one unit → its output files). The compute function writes to the temp paths
it is handed; the runner fsyncs and moves them onto the final names, then
writes the unit's manifest last. A unit is done when its manifest exists and
matches the current input fingerprints, parameter hash and code version, and
its outputs exist; otherwise it is recomputed.

The graph is declared: a stage names the stages it `needs` (whose outputs it
reads) and the config `sections` it reads itself. From that the runner derives
the parameter hash (its own sections and every upstream stage's), the
fingerprint of each input another stage made (the producing unit's manifest),
and whether a unit may run at all: a unit whose producing unit is not done
under the current config (it failed, was blocked, is stale or never ran) is
not run but reported as *blocked*, naming the upstream unit and why. So a
manifest never records a config its inputs were not made with. A stage with
`partial_ok` (bin) instead leaves out the upstream units that failed in this
run, as long as one remains, and records what it left out.
"""
from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import json
import multiprocessing as mp
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from configs.loader import stable_hash, to_dict
from pipeline import __version__
from pipeline.store import (DataError, DiskFullError, Workspace, commit, disk_full_message, ensure_dir, file_digest,
                            free_bytes, is_disk_full, sweep_orphans, tmp_path_for, write_text_atomic)

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
    needs: tuple["Stage", ...] = ()       # the stages whose outputs this one reads (pipeline/stages.py declares them)
    partial_ok: bool = False              # run on the upstream units that succeeded when others failed

    def param_sections(self) -> tuple[str, ...]:
        """The config sections that shape the outputs: this stage's own and every upstream stage's."""
        sections = list(self.sections)
        for up in self.needs:
            sections += [s for s in up.param_sections() if s not in sections]
        return tuple(sections)

    def params_hash(self, cfg) -> str:
        return stable_hash({s: getattr(cfg, s) for s in self.param_sections()})

    def code_version(self) -> str:
        return f"{__version__}+{self.name}.{self.version}"


# ----------------------------------------------------------------------------- manifests

NOT_VOUCHED = "not vouched for: its producing unit has no manifest"
RESERVE_BYTES = 1 << 20      # kept free beyond a unit's expected outputs (manifests, temp files)


def manifest_path_text(path: Path, root: Path | None) -> str:
    """How a manifest names a file: relative to the workspace root when inside it (so a workspace can be
    copied or moved and stay up to date), else as given (assets, calibrations outside the workspace)."""
    path = Path(path)
    if root is not None:
        try:
            return path.relative_to(root).as_posix()
        except ValueError:
            pass
    return str(path)


def _same_file(recorded: str, path: Path) -> bool:
    """A manifest's record (absolute, or relative to a workspace root) names `path`."""
    rec = Path(recorded)
    if rec.is_absolute() or not rec.parts:
        return rec == path
    return Path(path).parts[-len(rec.parts):] == rec.parts


def _input_fingerprint(path: Path) -> str:
    """The producer's recorded digest when the input came from a stage, else the content hash."""
    path = Path(path)
    for manifest in path.parent.glob("*" + MANIFEST_SUFFIX):
        try:
            outputs = json.loads(manifest.read_text()).get("outputs", {})
        except (OSError, ValueError):
            continue
        for record in outputs.values():
            if _same_file(record["path"], path) and path.exists() and path.stat().st_size == record["size"]:
                return record["sha256"]
    return file_digest(path)


def _recorded_output(unit: Unit, path: Path) -> str | None:
    """The digest `unit`'s manifest records for its output `path` (None: no manifest, or another file)."""
    path = Path(path)
    names = [name for name, final in unit.outputs if Path(final) == path]
    try:
        record = json.loads(unit.manifest_path.read_text()).get("outputs", {}).get(names[0]) if names else None
    except (OSError, ValueError):
        return None
    if not record or not path.exists() or path.stat().st_size != record.get("size"):
        return None
    return record.get("sha256")


class Graph:
    """What the declared graph says about one stage's units, for one pass over the stage: which
    upstream unit made each input, whether that unit is done under the current config, and the
    input fingerprints (a made input's is its producer's recorded digest; a source's, its content).

    `problems` ((stage, unit) → why) holds the units that failed or were blocked earlier in this
    command, so a blocked unit names the failure at the root, not the unit just above it."""

    def __init__(self, cfg, workspace: Workspace, problems: dict[tuple[str, str], str] | None = None):
        self.cfg, self.workspace = cfg, workspace
        self.problems = {} if problems is None else problems
        self._producers: dict[str, dict[Path, tuple[Stage, Unit]]] = {}
        self._states: dict[tuple[str, str], str] = {}

    def producers(self, stage: Stage) -> dict[Path, tuple[Stage, Unit]]:
        if stage.name not in self._producers:
            found: dict[Path, tuple[Stage, Unit]] = {}
            for up in stage.needs:
                for unit in up.plan(self.cfg, self.workspace):
                    for _, path in unit.outputs:
                        found[Path(path)] = (up, unit)
            self._producers[stage.name] = found
        return self._producers[stage.name]

    def state(self, stage: Stage, unit: Unit) -> str:
        key = (stage.name, unit.name)
        if key not in self._states:
            self._states[key] = unit_state(stage, unit, self.cfg, self)
        return self._states[key]

    def fingerprint(self, stage: Stage, path: Path) -> str:
        made_by = self.producers(stage).get(Path(path)) if stage.needs else None
        if made_by is None:
            return _input_fingerprint(path)
        return _recorded_output(made_by[1], path) or NOT_VOUCHED

    def fingerprints(self, stage: Stage, unit: Unit) -> dict[str, str]:
        root = self.workspace.root
        return {manifest_path_text(p, root): self.fingerprint(stage, p) for p in unit.inputs}

    def upstream_problems(self, stage: Stage, unit: Unit) -> dict[tuple[str, str], str]:
        """{(upstream stage, unit): why it is not done} over the inputs of `unit` that units make."""
        out: dict[tuple[str, str], str] = {}
        producers = self.producers(stage) if stage.needs else {}
        for path in unit.inputs:
            made_by = producers.get(Path(path))
            if made_by is None:
                continue
            up, up_unit = made_by
            key = (up.name, up_unit.name)
            if key in out:
                continue
            if key in self.problems:
                out[key] = self.problems[key]
            elif (state := self.state(up, up_unit)) != "done":
                why = ("is stale (made with other inputs or parameters)" if state == "stale"
                       else "has not run (or its last run failed)")
                out[key] = f"{up.name} {up_unit.name} {why}: run `audience {up.name}` (or `audience run`) first"
        return out


def expected_manifest(stage: Stage, unit: Unit, cfg, graph: Graph | None = None,
                      fingerprints: dict[str, str] | None = None) -> dict:
    if fingerprints is None:
        fingerprints = (graph.fingerprints(stage, unit) if graph is not None
                        else {str(p): _input_fingerprint(p) for p in unit.inputs})
    manifest = {
        "stage": stage.name,
        "unit": unit.name,
        "code_version": stage.code_version(),
        "params_hash": stage.params_hash(cfg),
        "inputs": fingerprints,
    }
    if unit.get("left_out"):            # made without these upstream units (they failed): a partial result
        manifest["left_out"] = list(unit.get("left_out"))
    return manifest


def unit_state(stage: Stage, unit: Unit, cfg, graph: Graph | None = None) -> str:
    """'done', 'stale' (outputs exist but were made from other inputs or params) or 'missing'.

    An input made by an upstream unit counts by that unit's manifest: when it has none (it failed
    or is being redone), the input is not vouched for and this unit is stale."""
    if not unit.manifest_path.exists():
        return "missing"
    try:
        recorded = json.loads(unit.manifest_path.read_text())
    except (OSError, ValueError):
        return "stale"
    finals = dict(unit.outputs)
    for name, record in recorded.get("outputs", {}).items():
        path = Path(finals.get(name, record["path"]))
        if not path.exists() or path.stat().st_size != record["size"]:
            return "stale"
    if any(not Path(p).exists() for p in unit.inputs):
        return "stale"
    fingerprints = None
    if graph is None:       # no workspace root at hand: name each input as the manifest does
        names = list(recorded.get("inputs", {}))
        fingerprints = {next((k for k in names if _same_file(k, Path(p))), str(p)): _input_fingerprint(p)
                        for p in unit.inputs}
    wanted = expected_manifest(stage, unit, cfg, graph, fingerprints)
    same = all(recorded.get(k) == v for k, v in wanted.items())
    return "done" if same else "stale"


# ----------------------------------------------------------------------------- execution


def execute_unit(stage: Stage, unit: Unit, cfg, fingerprints: dict[str, str] | None = None,
                 need_bytes: int = 0, root: Path | None = None) -> dict:
    """Compute one unit into temp files, commit them, then write the manifest (in a worker)."""
    return execute_units([(stage, unit)], cfg, lambda tmp: stage.compute(unit, cfg, tmp[0]), [fingerprints],
                         need_bytes, root)[0]


def execute_units(pairs: list[tuple[Stage, Unit]], cfg, compute: Callable[[list[dict]], None],
                  fingerprints: list[dict[str, str] | None] | None = None, need_bytes: int = 0,
                  root: Path | None = None) -> list[dict]:
    """Compute units of consecutive stages in one pass (`compute` gets each unit's temp outputs), then
    commit them in order, each with its manifest last: a kill in between leaves the earlier units done.

    `fingerprints`: per unit, its inputs' fingerprints as the runner resolved them from the graph
    before the unit ran (None: from the files); an input made in this same pass gets its new digest.
    `need_bytes`: about what the outputs will take (other units' of the stage): with less free space the
    unit is refused before it writes anything. A write that fails for want of space raises DiskFullError.
    `root`: the workspace root; the manifests name the files inside it relative to it."""
    started = time.perf_counter()
    fingerprints = fingerprints or [None] * len(pairs)
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
    written: dict[str, str] = {}        # final path → digest, of the outputs committed in this pass
    first_output = Path(pairs[0][1].outputs[0][1])
    if need_bytes:
        free = free_bytes(first_output.parent)
        if free < need_bytes + RESERVE_BYTES:    # refused before writing: a library may crash on a full disk
            raise DiskFullError(disk_full_message(first_output, need_bytes + RESERVE_BYTES, free=free))
    try:
        compute(tmp_outputs)
        for (stage, unit), tmp, given in zip(pairs, tmp_outputs, fingerprints):
            records = {}
            for name, final in unit.outputs:
                if not tmp[name].exists():
                    raise RuntimeError(f"stage {stage.name} did not write its output '{name}' for {unit.name}")
                records[name] = {"path": manifest_path_text(final, root), "sha256": file_digest(tmp[name]),
                                 "size": tmp[name].stat().st_size}
                commit(tmp[name], Path(final))
                written[str(final)] = records[name]["sha256"]
            given = given or {}
            inputs = {manifest_path_text(p, root): written.get(str(p)) or given.get(manifest_path_text(p, root))
                      or _input_fingerprint(p) for p in unit.inputs}
            manifest = expected_manifest(stage, unit, cfg, fingerprints=inputs)
            manifest.update(outputs=records, seconds=round(time.perf_counter() - started, 3),
                            config={s: to_dict(getattr(cfg, s)) for s in stage.param_sections()})
            write_text_atomic(unit.manifest_path, json.dumps(manifest, indent=1, sort_keys=True))
            manifests.append(manifest)
    except BaseException as err:
        if isinstance(err, DiskFullError) or not is_disk_full(err, first_output):
            raise
        sizes = [p.stat().st_size for tmp in tmp_outputs for p in tmp.values() if p.exists()]
        raise DiskFullError(disk_full_message(first_output, max(sum(sizes), need_bytes or 0) or None,
                                              at_least=True)) from None
    finally:
        for tmp in tmp_outputs:
            for path in tmp.values():
                path.unlink(missing_ok=True)
    return manifests


def _fused_worker(stage: Stage, unit: Unit, then: Stage, then_unit: Unit, cfg,
                  fingerprints: dict[str, str] | None = None, need_bytes: int = 0,
                  root: Path | None = None) -> tuple[str, str | None]:
    """`unit` and the next stage's unit of the same key in one pass (e.g. one video decode)."""
    def compute(tmp):
        then.compute_with_upstream(unit, then_unit, cfg, tmp[0], tmp[1])

    return _guarded(unit.name, lambda: execute_units([(stage, unit), (then, then_unit)], cfg, compute,
                                                     [fingerprints, None], need_bytes, root))


def _worker(stage: Stage, unit: Unit, cfg, fingerprints: dict[str, str] | None = None,
            need_bytes: int = 0, root: Path | None = None) -> tuple[str, str | None]:
    return _guarded(unit.name, lambda: execute_unit(stage, unit, cfg, fingerprints, need_bytes, root))


def _guarded(name: str, work: Callable) -> tuple[str, str | None]:
    try:
        work()
        return name, None
    except (DataError, ValueError, OSError) as err:
        return name, f"{type(err).__name__}: {err}"
    except Exception:  # noqa: BLE001 - a failing unit must not stop the others
        return name, traceback.format_exc(limit=6)


def _output_bytes(unit: Unit) -> int:
    """The bytes a done unit's outputs take (its manifest's record), 0 when unknown."""
    try:
        outputs = json.loads(unit.manifest_path.read_text()).get("outputs", {})
        return int(sum(record.get("size", 0) for record in outputs.values()))
    except (OSError, ValueError, TypeError):
        return 0


def last_line(error: str) -> str:
    """The line of an error (or a traceback's last line) that says what went wrong."""
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else str(error)


@dataclass
class StageReport:
    stage: str
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    then_done: list[str] = field(default_factory=list)   # units of the next stage computed in the same pass
    blocked: dict[str, str] = field(default_factory=dict)   # unit → the upstream failure that kept it from running
    disk_full: str = ""                                      # set when a unit ran out of space: the run stops
    partial: dict[str, tuple[str, ...]] = field(default_factory=dict)   # unit → upstream units it was made without

    def line(self) -> str:
        text = (f"{self.stage:<12} {len(self.done):>4} computed {len(self.skipped):>4} up to date "
                f"{len(self.failed):>4} failed  {self.seconds:8.1f} s")
        if self.blocked:
            text += f"\n{'':<12} {len(self.blocked):>4} blocked (not run: an upstream unit failed or is not done)"
        return text


class RunProgress:
    """One progress bar over every unit a command runs, across its stages (detect, landmarks, ... on
    one line, local or Ray): the total grows as each stage finds its work, and the postfix counts the
    units done of each stage and the failures so far. Lines written through it do not break the bar."""

    def __init__(self, enabled: bool = True, desc: str = "units"):
        self.bar = tqdm(total=0, desc=desc, unit="unit", disable=not enabled, leave=False)
        self.counts: dict[str, list[int]] = {}      # stage → [done, to do]
        self.failed = 0

    def start_stage(self, stage: str, todo: int) -> None:
        self.counts[stage] = [0, todo]
        self.bar.total += todo
        self._show()

    def unit_done(self, stage: str, failed: bool) -> None:
        self.counts[stage][0] += 1
        self.failed += bool(failed)
        self.bar.update()
        self._show()

    def _show(self) -> None:
        text = " · ".join(f"{stage} {done}/{todo}" for stage, (done, todo) in self.counts.items() if todo)
        self.bar.set_postfix_str(text + (f" · {self.failed} failed" if self.failed else ""), refresh=True)

    def write(self, text: str) -> None:
        """A line on stdout, at once (logs are read while a run goes on), without breaking the bar."""
        tqdm.write(text)
        sys.stdout.flush()

    def close(self) -> None:
        self.bar.close()


def _leave_out_failures(unit: Unit, problems: dict[tuple[str, str], str], graph: Graph, stage: Stage
                        ) -> tuple[Unit, dict[tuple[str, str], str]]:
    """For a `partial_ok` stage: `unit` without the inputs of upstream units that failed or were blocked in
    this command, when at least one made input remains; returns it and what still keeps it from running."""
    producers = graph.producers(stage)
    dropped = {key for key in problems if key in graph.problems}
    kept = tuple(p for p in unit.inputs
                 if Path(p) not in producers or (producers[Path(p)][0].name, producers[Path(p)][1].name) not in dropped)
    if not any(Path(p) in producers for p in kept):
        return unit, problems                        # nothing made upstream is left: blocked
    left_out = tuple(sorted(f"{s} {u}" for s, u in dropped))
    reduced = dataclasses.replace(unit, inputs=kept, payload=unit.payload + (("left_out", left_out),))
    return reduced, {k: v for k, v in problems.items() if k not in dropped}


def run_stage(stage: Stage, cfg, workspace: Workspace, *, workers: int = 1, force: bool = False,
              select: Callable[[Unit], bool] | None = None, progress: bool = True,
              then: Stage | None = None, problems: dict[tuple[str, str], str] | None = None,
              executor=None, overall: RunProgress | None = None) -> StageReport:
    """Run every unit of `stage` that is not up to date; failures are collected, not raised.

    A unit whose upstream unit (per the declared graph, `stage.needs`) failed or is not done is not run:
    it is reported in `report.blocked` with the upstream failure at the root. `problems` carries the
    failed and blocked units from stage to stage within one command ((stage, unit) → why); this call
    adds its own.

    `then`: the next stage, when it declares `stage` as its upstream and can compute with it: each unit
    computed here also computes the next stage's unit of the same key in the same pass (so a chunk's
    video is decoded once for detect and landmarks); the next stage's own run then finds it done.

    `executor`: a pipeline.ray_executor.RayExecutor to run the units as Ray tasks (the same jobs, manifests
    and report); None runs them here, or in `workers` local processes.

    `overall`: the command's one progress bar over all its stages (RunProgress); None: a bar of this stage's
    own when `progress`.
    """
    started = time.perf_counter()
    report = StageReport(stage.name)
    problems = {} if problems is None else problems
    graph = Graph(cfg, workspace, problems)
    units = [u for u in stage.plan(cfg, workspace) if select is None or select(u)]
    output_folders = {Path(u.outputs[0][1]).parent for u in units}
    for folder in output_folders:
        sweep_orphans(folder)
    todo = []
    for unit in units:
        troubles = graph.upstream_problems(stage, unit) if stage.needs else {}
        if troubles and stage.partial_ok:
            unit, troubles = _leave_out_failures(unit, troubles, graph, stage)
        if troubles:
            roots = list(dict.fromkeys(troubles.values()))     # the same root failure once
            first = roots[0]
            more = f" (and {len(roots) - 1} more upstream failure(s))" if len(roots) > 1 else ""
            report.blocked[unit.name] = first + more
            problems[(stage.name, unit.name)] = first
            continue
        if unit.get("left_out"):
            report.partial[unit.name] = unit.get("left_out")
        if not force and graph.state(stage, unit) == "done":
            report.skipped.append(unit.name)
        else:
            todo.append(unit)
    fused = {}
    if then is not None and then.upstream == stage.name and then.compute_with_upstream is not None:
        fused = {u.key: u for u in then.plan(cfg, workspace) if select is None or select(u)}
    fingerprints = {u.name: graph.fingerprints(stage, u) if stage.needs else None for u in todo}
    by_name = {u.name: u for u in units}
    need = max((_output_bytes(by_name[n]) for n in report.skipped), default=0)   # what a unit takes here

    def job(unit: Unit):
        if unit.key in fused:
            return _fused_worker, (stage, unit, then, fused[unit.key], cfg, fingerprints[unit.name], need,
                                   workspace.root)
        return _worker, (stage, unit, cfg, fingerprints[unit.name], need, workspace.root)

    fused_names = {"/".join(key) for key in fused}
    desc = f"{stage.name}+{then.name}" if fused else stage.name
    bar = overall or RunProgress(progress and bool(todo), desc)
    bar.start_stage(desc, len(todo))
    if executor is not None and todo:
        for index, (name, error) in executor.results([job(u) for u in todo]):
            name = name or todo[index].name
            _record(report, name, error, name in fused_names)
            bar.unit_done(desc, error is not None)
            if error is not None and error.startswith(DiskFullError.__name__) and not report.disk_full:
                report.disk_full = last_line(error)
                executor.cancel_pending()                  # the units not started would fail the same way
    elif workers <= 1 or len(todo) <= 1:
        for unit in todo:
            fn, job_args = job(unit)
            name, error = fn(*job_args)
            _record(report, name, error, name in fused_names)
            bar.unit_done(desc, error is not None)
            if error is None:
                need = max(need, _output_bytes(unit))
            elif error.startswith(DiskFullError.__name__):
                report.disk_full = last_line(error)          # the next units would fail the same way
                break
    else:
        ctx = mp.get_context("spawn")   # no HDF5 handles or threads leak across a fork
        with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_start,
                                    initargs=(os.getpid(),)) as pool:
            futures = [pool.submit(fn, *job_args) for fn, job_args in map(job, todo)]
            for future in cf.as_completed(futures):
                if future.cancelled():
                    continue
                try:
                    name, error = future.result()
                except Exception as err:  # noqa: BLE001 - e.g. a worker killed by the OS
                    name, error = "?", f"worker process died: {err}"
                _record(report, name, error, name in fused_names)
                bar.unit_done(desc, error is not None)
                if error is not None and error.startswith(DiskFullError.__name__) and not report.disk_full:
                    report.disk_full = last_line(error)
                    for other in futures:                   # the units not started would fail the same way
                        other.cancel()
    if overall is None:
        bar.close()
    for folder in output_folders:   # again: writers of a killed run may have died only since the start
        sweep_orphans(folder)
    for name, error in report.failed.items():
        problems[(stage.name, name)] = f"{stage.name} {name} failed: {last_line(error)}"
    report.seconds = time.perf_counter() - started
    return report


WATCHDOG_S = 0.5     # how often a worker checks that its parent is alive


def _worker_start(parent_pid: int) -> None:
    """Worker start-up: quiet Ctrl-C (below) and die with the parent. A worker blocked on the task queue
    never sees the parent go (it holds both ends of the queue's pipe itself), so after a kill -9 of the
    parent it, and the multiprocessing resource tracker whose pipe it keeps open, would idle forever. A
    daemon thread watches the parent and ends the worker at once when it is gone (reparented)."""
    import threading

    _quiet_ctrl_c()
    if os.getppid() != parent_pid:           # the parent died while this worker started
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(WATCHDOG_S)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


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
        elif unraisable.exc_value is not None and is_disk_full(unraisable.exc_value):
            pass        # a finalizer's failed write on a full disk (h5py): the write itself reports it once
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


def stage_status(stage: Stage, cfg, workspace: Workspace, reasons: dict[str, str] | None = None
                 ) -> dict[str, list[str]]:
    """Unit names by state ('done', 'stale', 'missing') under `cfg`; `reasons`, when given, gets why each
    stale unit is stale (`why_stale`)."""
    status: dict[str, list[str]] = {"done": [], "stale": [], "missing": []}
    try:
        units = stage.plan(cfg, workspace)
        graph = Graph(cfg, workspace)
        for unit in units:
            state = graph.state(stage, unit)
            status[state].append(unit.name)
            if state == "stale" and reasons is not None:
                reasons[unit.name] = why_stale(stage, unit, cfg, graph)
    except DataError as err:
        return {"done": [], "stale": [], "missing": [f"(cannot plan: {err})"]}
    return status


def why_stale(stage: Stage, unit: Unit, cfg, graph: Graph) -> str:
    """In words, what differs between a unit's manifest and what `cfg` and its inputs ask for now: the
    outputs, the code version, the config keys (recorded → now) or the inputs that changed."""
    try:
        recorded = json.loads(unit.manifest_path.read_text())
    except (OSError, ValueError) as err:
        return f"its manifest cannot be read ({err})"
    finals = dict(unit.outputs)
    for name, record in recorded.get("outputs", {}).items():
        path = Path(finals.get(name, record["path"]))
        if not path.exists():
            return f"output {name} is gone ({path})"
        if path.stat().st_size != record["size"]:
            return f"output {name} was changed after it was made ({path})"
    reasons = []
    if recorded.get("code_version") != stage.code_version():
        reasons.append(f"code {recorded.get('code_version')} → {stage.code_version()}")
    if recorded.get("params_hash") != stage.params_hash(cfg):
        was = recorded.get("config", {})
        now = {section: json.loads(json.dumps(to_dict(getattr(cfg, section)))) for section in stage.param_sections()}
        changed = [f"{section}.{key}: {was.get(section, {}).get(key)!r} → {value!r}"
                   for section, values in now.items() for key, value in values.items()
                   if was.get(section, {}).get(key) != value]
        reasons.append("config " + ("; ".join(changed) if changed else "changed"))
    missing = [manifest_path_text(p, graph.workspace.root) for p in unit.inputs if not Path(p).exists()]
    if missing:
        reasons.append("input gone: " + ", ".join(missing))
    else:
        now = graph.fingerprints(stage, unit)
        changed_inputs = [name for name, digest in now.items() if recorded.get("inputs", {}).get(name) != digest]
        if changed_inputs:
            reasons.append("input changed: " + ", ".join(changed_inputs))
    return "; ".join(reasons) or "its manifest differs from what the config asks for"


__all__ = ["Stage", "Unit", "StageReport", "Graph", "last_line", "run_stage", "stage_status", "why_stale", "unit_state", "execute_unit", "execute_units"]
_ = commit  # re-exported for stages that write several files
