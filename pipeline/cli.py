"""`audience`: one command, a subcommand per stage, plus run, status and demo.

    audience synthesize --small                 # make a synthetic screening
    audience run                                 # every video→tensor stage
    audience status                              # which units are done, stale or missing
    audience demo                                # video → tensors → models → report
    audience train / evaluate / report           # the models (see models/cli.py)

Options go after the subcommand; `section.key=value` overrides any
config value. This module is the application layer: it is the one place that
joins pipeline/ (video → tensors) and models/ (tensors → factors).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from configs.loader import ConfigError, dump_yaml
from pipeline.store import DataError, Workspace, ensure_dir

# exit codes, as a Unix tool's: 0 success, 1 some units failed (or were blocked), 2 usage, config or data
# errors (nothing to do included), 130 interrupted
EXIT_OK, EXIT_UNITS_FAILED, EXIT_USER_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130
# commands that only read the workspace: every other command holds the workspace lock (pipeline/lock.py)
READ_ONLY_COMMANDS = frozenset({"status"})
# modules that add their own subcommands through `register(subparsers)`
OPTIONAL_COMMAND_MODULES: tuple[str, ...] = (
    "pipeline.detector_training", "pipeline.live", "pipeline.inspection", "pipeline.export", "models.cli",
    "pipeline.labeling")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of workers (1 or more), got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected 1 or more workers, got {value} (1 runs the units one by one "
                                         f"in this process)")
    return value


def common_parser() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("common options")
    group.add_argument("--config", "-c", action="append", default=[], metavar="FILE",
                       help="YAML overlay(s) on configs/default.yaml, applied in order")
    group.add_argument("--workspace", metavar="DIR", help="workspace folder (= workspace.root=DIR)")
    group.add_argument("--workers", type=positive_int, metavar="N",
                       help="parallel worker processes, 1 or more (= workspace.workers=N)")
    group.add_argument("--executor", choices=("local", "ray"),
                       help="run units in local processes or as Ray tasks (= workspace.executor=...)")
    group.add_argument("--force", action="store_true", help="recompute units even when up to date")
    group.add_argument("--movie", help="only this movie")
    group.add_argument("--quiet", action="store_true", help="no progress bars")
    group.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides")
    return parent


def load_cli_config(args):
    from configs.schema import load_config

    overrides = list(args.overrides)
    if getattr(args, "small", False):
        overrides.insert(0, "synthetic.scale=small")
    if args.workspace:
        overrides.append(f"workspace.root={args.workspace}")
    if args.workers:
        overrides.append(f"workspace.workers={args.workers}")
    if getattr(args, "executor", None):
        overrides.append(f"workspace.executor={args.executor}")
    return load_config(args.config, overrides)


def workspace_of(cfg) -> Workspace:
    return Workspace(Path(cfg.workspace.root))


def save_resolved_config(cfg, workspace: Workspace, name: str) -> Path:
    """Keep the config that shaped this run next to its outputs."""
    folder = ensure_dir(workspace.root / "configs")
    path = folder / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.yaml"
    dump_yaml(cfg, path)
    return path


def nothing_to_do_hint(stage: str, workspace: Workspace, movie: str | None) -> str:
    """Why `stage` found no units, and the command that makes what is missing."""
    from pipeline.detect import find_videos

    if stage == "synthesize":
        return f"nothing to do: synthesize makes the movies of synthetic.movie, not '{movie}': drop --movie"
    videos = find_videos(workspace)
    if not videos:
        return (f"nothing to do: no recordings under {workspace.raw}: run `audience synthesize` (a synthetic "
                f"screening) or `audience run --screenings FILE` (your recordings), or check --workspace")
    movies = sorted({v[0] for v in videos})
    if movie and movie not in movies:
        return (f"nothing to do: no movie '{movie}' under {workspace.raw} (there: {', '.join(movies)}); "
                f"check --movie")
    of_movie = f" for {movie}" if movie else ""
    return (f"nothing to do: the {stage} stage found no units of work under {workspace.root}{of_movie}; "
            f"run the stages before it (`audience run` runs them all)")


def check_something_to_do(name: str, cfg, workspace: Workspace, movie: str | None) -> None:
    """A stage command that would find no work at all (an empty or mistyped workspace) is an error."""
    from pipeline.stages import get_stage

    units = get_stage(name).plan(cfg, workspace)
    if not any(movie is None or unit.key[0] == movie for unit in units):
        raise DataError(nothing_to_do_hint(name, workspace, movie))


def run_stages(names, cfg, args, reports: list | None = None) -> int:
    """Run stages in order; print a one-screen summary; return the number of failed or blocked units.

    A unit whose upstream unit failed (or is not done) is not run but reported as blocked, naming the
    failure at the root (pipeline/runner.py). Raises DataError when the first stage has no unit at all
    to run or skip (nothing to do)."""
    from pipeline.ray_executor import executor_for
    from pipeline.runner import last_line

    workspace = workspace_of(cfg)
    check_something_to_do(names[0], cfg, workspace, args.movie)
    ensure_dir(workspace.root)
    save_resolved_config(cfg, workspace, "+".join(names) if len(names) < 3 else "run")
    reports = [] if reports is None else reports
    executor = executor_for(cfg)          # Ray, when asked for: started (or joined) once for every stage
    try:
        stopped = _run_in_order(names, cfg, args, workspace, reports, executor)
    finally:
        if executor is not None:
            executor.close()
    if stopped:
        return stopped
    failed = {f"{r.stage} {u}": err for r in reports for u, err in r.failed.items()}
    blocked = {f"{r.stage} {u}": why for r in reports for u, why in r.blocked.items()}
    if failed:
        print(f"\n{len(failed)} unit(s) failed (the others finished and are kept; rerun to retry):")
        for unit, err in failed.items():
            print(f"  {unit}: {last_line(err)}")
    if blocked:
        print(f"\n{len(blocked)} unit(s) blocked (not run; their previous outputs, if any, are kept and not "
              f"vouched for): an upstream unit failed or is not done; fix it and rerun:")
        by_root: dict[str, dict[str, int]] = {}
        for r in reports:
            for why in r.blocked.values():
                counts = by_root.setdefault(why, {})
                counts[r.stage] = counts.get(r.stage, 0) + 1
        for why, counts in by_root.items():
            units = ", ".join(f"{stage} {n}" for stage, n in counts.items())
            print(f"  {units}: blocked by {why}")
    for report in reports:
        for unit, left_out in report.partial.items():
            print(f"\nPARTIAL {report.stage} {unit}: made without {len(left_out)} upstream unit(s) that failed "
                  f"({', '.join(left_out)}); fix them and rerun for the whole result")
    return len(failed) + len(blocked)


def _run_in_order(names, cfg, args, workspace: Workspace, reports: list, executor) -> int:
    """Each stage in turn (a unit computed with its upstream in one pass counts as computed); returns
    non-zero when a full disk stopped the run."""
    from pipeline.runner import RunProgress

    overall = RunProgress(not args.quiet)
    try:
        return _stages_in_order(names, cfg, args, workspace, reports, executor, overall)
    finally:
        overall.close()


def _stages_in_order(names, cfg, args, workspace: Workspace, reports: list, executor, overall) -> int:
    from pipeline.runner import run_stage
    from pipeline.stages import get_stage

    fused_into, problems = None, {}
    for i, name in enumerate(names):
        stage = get_stage(name)
        then = get_stage(names[i + 1]) if i + 1 < len(names) else None
        then = then if then is not None and then.upstream == name else None   # one pass for both (one decode)
        select = (lambda unit: unit.key[0] == args.movie) if args.movie else None
        force = args.force and fused_into != name      # units computed with their upstream just now are fresh
        report = run_stage(stage, cfg, workspace, workers=cfg.workspace.workers, force=force, select=select,
                           progress=not args.quiet, then=then, problems=problems, executor=executor,
                           overall=overall)
        if fused_into == name:          # count the units computed in the upstream's pass as computed here
            fresh = set(reports[-1].then_done) & set(report.skipped)
            report.done += sorted(fresh)
            report.skipped = [u for u in report.skipped if u not in fresh]
        reports.append(report)
        fused_into = then.name if then else None
        overall.write(reports[-1].line())
        if report.disk_full:                  # every later unit would fail the same way: stop here
            overall.write(f"\nerror: {report.disk_full.removeprefix('DiskFullError: ')}")
            return max(1, len(report.failed))
    return 0


def summarize_tensors(workspace: Workspace, movie: str | None = None, not_rebuilt: dict | None = None) -> None:
    """One line per tensor; `not_rebuilt` (movie → why): tensors this command did not rebuild."""
    import numpy as np

    from pipeline.store import read_movie_tensor

    paths = sorted(workspace.tensors.glob(f"{movie or '*'}.h5")) if workspace.tensors.is_dir() else []
    for path in paths:
        t = read_movie_tensor(path)
        missing = 100.0 * (1 - t.mask.mean())
        print(f"tensor {path}: N={t.shape[0]} members × T={t.shape[1]} bins × 136, "
              f"{missing:.1f}% missing, {len(set(t.session_id))} session(s)")
        if path.stem in (not_rebuilt or {}):
            print(f"  NOT rebuilt by this command ({not_rebuilt[path.stem]}): this is an earlier run's tensor")
        observed = int(t.mask.sum())
        if observed < max(10, 0.01 * t.mask.size):
            print(f"  WARNING: almost nothing observed ({observed} faces in {t.mask.size} member × bin cells): "
                  f"no model can learn from this tensor. Check the recordings show faces and the detectors "
                  f"find them (`audience inspect`)")
        left_out = t.attrs.get("partial_left_out")
        if left_out is not None and len(np.atleast_1d(left_out)):
            names = [str(v.decode() if isinstance(v, bytes) else v) for v in np.atleast_1d(left_out)]
            print(f"  PARTIAL: built without {len(names)} recording(s) whose units failed: {', '.join(names)}")


# ----------------------------------------------------------------------------- subcommands


def cmd_stage(args, cfg) -> int:
    return EXIT_UNITS_FAILED if run_stages([args.command], cfg, args) else EXIT_OK


def cmd_run(args, cfg) -> int:
    from pipeline.screenings import read_screening_list, register
    from pipeline.stages import VIDEO_TO_TENSOR

    workspace = workspace_of(cfg)
    if args.screenings:
        linked = register(read_screening_list(Path(args.screenings)), workspace)
        print(f"registered {len(linked)} recording(s) under {workspace.raw}")
    names = (["synthesize"] if args.synthesize else []) + list(VIDEO_TO_TENSOR)
    reports = []
    failed = run_stages(names, cfg, args, reports)
    from pipeline.rows_report import print_rows_report, rows_report

    print_rows_report(rows_report(workspace, cfg, args.movie))
    binned = reports[-1]
    not_rebuilt = {**{u: "bin blocked" for u in binned.blocked}, **{u: "bin failed" for u in binned.failed}}
    summarize_tensors(workspace, args.movie, not_rebuilt)
    return EXIT_UNITS_FAILED if failed else EXIT_OK


def cmd_status(args, cfg) -> int:
    from pipeline.runner import stage_status
    from pipeline.stages import STAGE_SPECS, get_stage

    workspace = workspace_of(cfg)
    print(f"workspace {workspace.root}")
    last = None if args.config or args.overrides else last_resolved_config(workspace)
    if last is not None:
        from configs.schema import load_config

        try:
            cfg = load_config([last], [f"workspace.root={workspace.root}"])
            print(f"judged against the config of the last run here: {last} (give --config or section.key=value "
                  f"to judge against another)")
        except ConfigError as err:          # saved by another version of the code
            print(f"judged against the default config: the last run's {last} no longer loads ({err})")
    print(f"{'stage':<12} {'done':>6} {'stale':>6} {'missing':>8}")
    for name in STAGE_SPECS:
        reasons: dict[str, str] = {}
        status = stage_status(get_stage(name), cfg, workspace, reasons)
        print(f"{name:<12} {len(status['done']):>6} {len(status['stale']):>6} {len(status['missing']):>8}")
        if args.verbose:
            for state in ("stale", "missing"):
                for unit in status[state]:
                    print(f"    {state:<8} {unit}" + (f": {reasons[unit]}" if unit in reasons else ""))
    return 0


def last_resolved_config(workspace: Workspace) -> Path | None:
    """The resolved config the last stage command on this workspace saved (configs/*.yaml), if any."""
    saved = sorted((workspace.root / "configs").glob("*.yaml"), key=lambda p: (p.stat().st_mtime, p.name))
    return saved[-1] if saved else None


def cmd_demo(args, cfg) -> int:
    """A small synthetic screening through every stage, then the models and a report."""
    from pipeline.stages import STAGE_SPECS

    started = time.perf_counter()
    workspace = workspace_of(cfg)
    failed = run_stages(list(STAGE_SPECS), cfg, args)
    if failed:
        print("demo stopped: the vision stages failed (see above)")
        return EXIT_UNITS_FAILED
    summarize_tensors(workspace)
    from models.cli import run_models_demo

    if args.quiet:
        cfg = cfg.replace(train=dataclasses.replace(cfg.train, progress=False))
    tensor_path = workspace.tensor_path(cfg.synthetic.movie)
    run_dir = workspace.runs / "demo"
    report = run_models_demo(cfg, tensor_path, run_dir)
    table = run_dir / "completion" / "table.md"
    if table.is_file():
        print("\n" + table.read_text().strip())
    print(f"\ndemo finished in {time.perf_counter() - started:.0f} s")
    print(f"report: {report}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from pipeline.stages import STAGE_SPECS

    common = common_parser()
    parser = argparse.ArgumentParser(
        prog="audience", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    from pipeline import __version__

    parser.add_argument("--version", action="version", version=f"audience {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    stage_help = {
        "synthesize": "generate synthetic IR screenings with ground truth into raw/",
        "survey": "find the seat rows and face sizes in a few frames of each recording",
        "detect": "find faces (front/back HOG MMOD detectors) in sampled frames",
        "landmarks": "fit 68 landmarks (dlib ERT) to every detection",
        "frontalize": "remove head pose; landmarks into the canonical face frame",
        "members": "discover seats and assign faces to audience members",
        "bin": "bin members × seconds into data/tensors/<movie>.h5",
    }
    for name in STAGE_SPECS:
        p = sub.add_parser(name, parents=[common], help=stage_help.get(name, name),
                           description=f"{stage_help.get(name, name)}. Reruns only the units that are not up to "
                                       f"date; a unit whose upstream unit failed or is not done is reported as "
                                       f"blocked. Exit codes: 0 done, 1 units failed or blocked, 2 usage, config "
                                       f"or data error, 130 interrupted.")
        if name == "synthesize":
            p.add_argument("--small", action="store_true", help="small frames and theatre (tests, quick looks)")
        p.set_defaults(handler=cmd_stage)
    p = sub.add_parser("run", parents=[common], help="every video→tensor stage over the screenings in raw/",
                       description="Register a screening list (optional), then run survey, detect, landmarks, "
                                   "frontalize, members and bin over every recording in raw/. A bad recording "
                                   "fails its own units; the others run to the end and the movie's tensor is "
                                   "built from them (marked partial). Exit codes: 0 done, 1 units failed or "
                                   "blocked, 2 usage, config or data error, 130 interrupted.")
    p.add_argument("--screenings", metavar="YAML", help="register this screening list first")
    p.add_argument("--synthesize", action="store_true", help="generate the synthetic screenings first")
    p.add_argument("--small", action="store_true", help="with --synthesize: small synthetic theatre")
    p.set_defaults(handler=cmd_run)
    p = sub.add_parser("status", parents=[common], help="which units are done, stale or missing",
                       description="Which units of each stage are done, stale (made from other inputs, code or "
                                   "parameters than the config asks for) or missing. The config is the one the last "
                                   "stage command on the workspace ran with (<workspace>/configs/), unless --config "
                                   "or section.key=value is given. Reads only; takes no lock.")
    p.add_argument("--verbose", "-v", action="store_true",
                   help="list stale and missing units, and why each stale unit is stale")
    p.set_defaults(handler=cmd_status)
    p = sub.add_parser("demo", parents=[common],
                       help="small synthetic screening → every stage → TF/NLTF/FVAE → report")
    p.set_defaults(handler=cmd_demo, demo=True)
    _register_optional(sub, common)
    return parser


class _SubparsersWithCommon:
    """Hands other modules a subparsers object that adds the common options to each command."""

    def __init__(self, sub, common):
        self._sub, self._common = sub, common

    def add_parser(self, name, **kwargs):
        kwargs["parents"] = [self._common, *kwargs.get("parents", [])]
        return self._sub.add_parser(name, **kwargs)


def _register_optional(sub, common) -> None:
    """Subcommands owned by other modules (detector training, inspection, the models):
    each module has `register(subparsers)`; its commands set `handler(args, cfg)`."""
    import importlib

    for module_name in OPTIONAL_COMMAND_MODULES:
        module = importlib.import_module(module_name)
        module.register(_SubparsersWithCommon(sub, common))


def check_inspect(args, cfg) -> None:
    """`inspect` draws tensors and landmarks: with neither there is nothing to draw."""
    workspace, movie = workspace_of(cfg), args.movie or "*"
    tensors = list(workspace.tensors.glob(f"{movie}.h5")) if workspace.tensors.is_dir() else []
    landmarks = workspace.cache / "landmarks"
    chunks = list(landmarks.glob(f"{movie}/*/*/*.h5")) if landmarks.is_dir() else []
    if not tensors and not chunks:
        what = f" of movie '{args.movie}'" if args.movie else ""
        raise DataError(f"nothing to inspect: no tensors{what} under {workspace.tensors} and no landmarks under "
                        f"{landmarks}: run `audience run` first (with no recordings yet: `audience synthesize` or "
                        f"`audience run --screenings FILE`), or check --workspace"
                        + (" and --movie" if what else ""))


# checks a command's inputs before it runs (an empty or mistyped workspace is an error, not a silent success)
PRECONDITIONS = {"inspect": check_inspect}


def run_locked(args, cfg, command_line: str) -> int:
    """The handler, holding the workspace lock unless the command only reads (a second writer is refused)."""
    if args.command in READ_ONLY_COMMANDS:
        return args.handler(args, cfg)
    from pipeline.lock import workspace_lock

    with workspace_lock(cfg.workspace.root, command_line):
        if args.command in PRECONDITIONS:
            PRECONDITIONS[args.command](args, cfg)
        return args.handler(args, cfg)


def main(argv: list[str] | None = None) -> int:
    import os
    import signal

    from pipeline.runner import deliver_interrupts

    sys.unraisablehook = deliver_interrupts(sys.unraisablehook)
    try:
        code = _main(argv)
        sys.stdout.flush()              # a closed pipe shows here, not in Python's flush at exit
        return code
    except BrokenPipeError:             # `audience status | head`: the reader left; no traceback
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())           # Python's flush at exit must not fail again
        return 128 + signal.SIGPIPE
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)      # a second Ctrl-C during clean-up: no traceback
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED


def _main(argv: list[str] | None) -> int:
    import shlex

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if getattr(args, "demo", False) and not any(str(c).endswith("demo.yaml") for c in args.config):
            from configs import CONFIG_DIR
            args.config.insert(0, str(CONFIG_DIR / "demo.yaml"))
        cfg = load_cli_config(args)
        return run_locked(args, cfg, shlex.join(["audience", *argv]))
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
