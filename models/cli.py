"""Command-line glue of the models: `train`, `evaluate`, `report`, `predict`, and the demo's model half.

`register(subparsers)` adds the subcommands to the project CLI (which
loads the configuration from --config and key=value overrides and calls
`args.handler(args, cfg)`); scripts/{train,evaluate,report,predict}.py run the same
handlers standalone through `standalone_main`.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import sys
from pathlib import Path

from configs.loader import ConfigError, dump_yaml, stable_hash, to_dict
from pipeline.store import DataError, ensure_dir, write_text_atomic

# torch and scikit-learn load only when a command runs, so `audience --help` stays quick
PROTOCOLS = ("completion", "ksweep", "longterm", "factors")   # = models.evaluate.PROTOCOLS (tested)


# ----------------------------------------------------------------------------- run folders


def default_run_dir(cfg, movie_name: str) -> Path:
    """<workspace>/runs/<movie>-<hash of the models/train/evaluate config>: same config, same folder.

    Which models run (models.names), the device and progress bars do not change the folder, so
    `train --models tf` and a later `evaluate` of every model share one run.
    """
    shaping = {"models": {k: v for k, v in to_dict(cfg.models).items() if k != "names"},
               "train": dataclasses.replace(cfg.train, device="auto", progress=True), "evaluate": cfg.evaluate}
    digest = stable_hash(shaping)[:8]
    return Path(cfg.workspace.root) / "runs" / f"{movie_name}-{digest}"


MIN_FACES, MIN_MEMBERS, MIN_SECONDS = 20, 2, 2   # less than this is no audience reacting over a movie


def prepare_run(cfg, tensor: str | Path, run_dir: str | Path | None, check=None):
    """Load the tensor, check there is something to learn from (and `check(movie)`, if given), then
    choose the run folder and record the resolved config and a data summary: a refused run writes nothing."""
    from models.data import load_movie

    movie = load_movie(tensor)
    check_learnable(movie, tensor)
    if check is not None:
        check(movie)
    run_dir = ensure_dir(Path(run_dir) if run_dir else default_run_dir(cfg, movie.name))
    dump_yaml(cfg, run_dir / "config.yaml")
    summary = {"tensor": str(tensor), **movie.summary()}
    write_text_atomic(run_dir / "data_summary.json", json.dumps(summary, indent=1))
    print(f"[models] {movie.name}: N={movie.n_members} members × T={movie.n_seconds} bins, "
          f"{summary['missing_percent']}% missing → run folder {run_dir}")
    return movie, run_dir


def check_learnable(movie, tensor) -> None:
    """A tensor with almost nothing observed is refused, naming what it holds and where to look."""
    faces, members, seconds = int(movie.mask.sum()), int(movie.mask.any(1).sum()), int(movie.mask.any(0).sum())
    if faces < MIN_FACES or members < MIN_MEMBERS or seconds < MIN_SECONDS:
        raise DataError(f"{tensor} holds {faces} observed face(s) of {members} member(s) over {seconds} second(s): "
                        f"too little to learn reactions from (the models need at least {MIN_FACES} faces of "
                        f"{MIN_MEMBERS} members over {MIN_SECONDS} seconds). Check what the video stages found "
                        f"(`audience status -v`, the run summary's rows table) or use a longer recording.")


def with_overrides(cfg, args):
    """Apply --device / --models / --quiet flags on top of the loaded config."""
    if getattr(args, "quiet", False):
        cfg = cfg.replace(train=dataclasses.replace(cfg.train, progress=False))
    if getattr(args, "device", None):
        cfg = cfg.replace(train=dataclasses.replace(cfg.train, device=args.device))
    if getattr(args, "models", None):
        names = tuple(m.strip() for m in args.models.split(",") if m.strip())
        cfg = cfg.replace(models=dataclasses.replace(cfg.models, names=names))
    return cfg


# ----------------------------------------------------------------------------- handlers


def user_errors(handler):
    """Bad input (ValueError from the library) → DataError, which the CLIs print without a traceback."""
    @functools.wraps(handler)
    def wrapped(args, cfg):
        try:
            return handler(args, cfg)
        except (DataError, ConfigError):
            raise
        except ValueError as err:
            raise DataError(str(err)) from err
    return wrapped


@user_errors
def cmd_train(args, cfg) -> int:
    """Fit the models on the completion split's training faces (or on every observed face)."""
    train_models(args, cfg)
    return 0


def train_models(args, cfg) -> Path:
    """The train command's work; returns the run folder."""
    from models.data import completion_split
    from models.train import fit_model

    from models import registry
    from models.train import check_k_supported, discard_checkpoints

    cfg = with_overrides(cfg, args)
    if getattr(args, "force", False) and args.resume:
        raise DataError("train: --force (discard the models' checkpoints, train from scratch) and --resume "
                        "(continue them) contradict each other; give one.")
    ev = cfg.evaluate

    def split_of(movie):
        if args.split == "completion":
            return (completion_split(movie.mask, ev.holdout_every, ev.seed)[0],
                    {"protocol": "completion", "holdout_every": ev.holdout_every, "seed": ev.seed})
        return movie.mask, {"protocol": "all"}

    def check(movie):                   # before anything is written: K against the training faces
        if any(registry.spec(kind).factorized for kind in cfg.models.names):
            check_k_supported(cfg.models.k, split_of(movie)[0])

    movie, run_dir = prepare_run(cfg, args.tensor, args.run_dir, check)
    train_mask, split = split_of(movie)
    folder = run_dir / ("completion" if args.split == "completion" else "full")
    for kind in cfg.models.names:
        if getattr(args, "force", False):
            discard_checkpoints(folder / kind)
        fitted = fit_model(kind, movie, train_mask, cfg.models, cfg.train, folder / kind,
                           resume=args.resume, split=split)
        last = fitted.metrics[-1] if fitted.metrics else {}
        print(f"[models] {kind}: trained → {folder / kind}  last: "
              + ", ".join(f"{k}={v:.4g}" for k, v in last.items() if isinstance(v, float)))
    return run_dir


@user_errors
def cmd_evaluate(args, cfg) -> int:
    """Run one protocol or all of them (reusing trained models; --force refits them), then refresh the report."""
    from models.evaluate import run_protocols
    from models.report import write_report

    cfg = with_overrides(cfg, args)
    movie, run_dir = prepare_run(cfg, args.tensor, args.run_dir)
    protocols = list(PROTOCOLS) if args.protocol == "all" else [args.protocol]
    results = run_protocols(protocols, movie, cfg, run_dir, resume=not getattr(args, "force", False))
    for name, result in results.items():
        print(f"[models] {name}: table {result['table']}")
    report = write_report(run_dir)
    print(f"[models] report: {report}")
    return 0


@user_errors
def cmd_report(args, cfg) -> int:
    from models.report import write_report

    report = write_report(Path(args.run_dir))
    print(f"[models] report: {report}")
    return 0


@user_errors
def cmd_predict(args, cfg) -> int:
    """A trained model's face in every (member, second) cell, or new members' whole movie (models/predict.py)."""
    from models.predict import run_predict

    ev = cfg.evaluate
    run_predict(args.run_dir, kind=args.model, split=args.split, tensor=args.tensor, out=args.out,
                new_members=args.new_members, first_seconds=args.first_seconds,
                first_fraction=args.first_fraction, device=args.device or cfg.train.device,
                infer_steps=ev.infer_steps, infer_lr=ev.infer_lr, batch_size=ev.batch_size)
    return 0


def run_models_demo(cfg, tensor_path: str | Path, run_dir: str | Path) -> Path:
    """The demo's model half: TF, NLTF, FVAE on the CPU, completion + factors, report. Returns its path."""
    from models.evaluate import run_protocols
    from models.report import write_report

    cfg = cfg.replace(train=dataclasses.replace(cfg.train, device="cpu"))
    _restart_stale_demo(cfg, Path(tensor_path), Path(run_dir))
    movie, run_dir = prepare_run(cfg, tensor_path, run_dir)
    run_protocols(["completion", "factors"], movie, cfg, run_dir, resume=True)
    report = write_report(run_dir)
    print(f"[models] report: {report}")
    return report


DEMO_STAMP = "demo_inputs.json"


def _restart_stale_demo(cfg, tensor_path: Path, run_dir: Path) -> None:
    """The demo reuses one run folder: when its tensor or model settings changed since the last
    demo (a regenerated workspace, an upgrade), the old models are removed so that they are
    retrained instead of refused as 'trained under a different configuration'."""
    import hashlib
    import shutil

    from models.train import RUNTIME_FIELDS   # settings that do not change a model (device, threads, …)

    digest = hashlib.sha256(tensor_path.read_bytes()).hexdigest()[:16] if tensor_path.is_file() else "missing"
    stamp = {"tensor_sha256": digest, "models": to_dict(cfg.models),
             "train": {k: v for k, v in to_dict(cfg.train).items() if k not in RUNTIME_FIELDS},
             "evaluate": to_dict(cfg.evaluate)}
    stamp = json.loads(json.dumps(stamp, default=str))
    path = run_dir / DEMO_STAMP
    before = json.loads(path.read_text()) if path.is_file() else None
    stale = [run_dir / name for name in PROTOCOLS if (run_dir / name).is_dir()]
    if stale and before != stamp:
        print(f"[models] demo: the tensor or the model settings changed since the models in {run_dir} "
              f"were trained; retraining them")
        for folder in stale:
            shutil.rmtree(folder)
    ensure_dir(run_dir)
    write_text_atomic(path, json.dumps(stamp, indent=1))


# ----------------------------------------------------------------------------- argparse


def _add_common(p: argparse.ArgumentParser, tensor: bool = True) -> None:
    if tensor:
        p.add_argument("--tensor", required=True, help="per-movie tensor file (data/tensors/<movie>.h5)")
    p.add_argument("--run-dir", default=None,
                   help="run folder (default: <workspace>/runs/<movie>-<config hash>)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None,
                   help="override train.device (auto: CUDA when present)")
    p.add_argument("--models", default=None, help="comma list overriding models.names, e.g. tf,fvae")


def add_train_args(p: argparse.ArgumentParser) -> None:
    _add_common(p)
    p.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoints")
    p.add_argument("--split", choices=("completion", "all"), default="completion",
                   help="train on the completion split's training faces (default) or on every observed face")


def add_evaluate_args(p: argparse.ArgumentParser) -> None:
    _add_common(p)
    p.add_argument("--protocol", choices=PROTOCOLS + ("all",), default="completion",
                   help="which evaluation protocol to run (all: every one)")


def add_report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run-dir", required=True, help="run folder written by train/evaluate")


def add_predict_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run-dir", required=True, help="run folder written by train/evaluate")
    p.add_argument("--model", choices=__import__("models.registry").registry.MODEL_NAMES, default=None,
                   help="which trained model (default: fvae if trained, else the first of nltf, tf, vae)")
    p.add_argument("--split", choices=("completion", "all"), default=None,
                   help="the model trained on the completion split's training faces (<run>/completion/) or on "
                        "every observed face (train --split all: <run>/full/); default: completion, else all")
    p.add_argument("--tensor", default=None,
                   help="the tensor the run was trained on (default: the one <run>/data_summary.json names); "
                        "another tensor is refused")
    p.add_argument("--out", default=None,
                   help="HDF5 file to write (default: <run>/predictions/<model>.h5, for new members "
                        "<run>/predictions/<model>-new-<tensor name>.h5); layout in data/README.md")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None,
                   help="override train.device (auto: CUDA when present)")
    new = p.add_argument_group("new members (long-term prediction: members the model never saw)")
    new.add_argument("--new-members", metavar="TENSOR", default=None,
                     help="tensor file of new members of the same movie (the tensor layout; only its first "
                          "S seconds are used); writes their predicted whole movie")
    prefix = new.add_mutually_exclusive_group()
    prefix.add_argument("--first-seconds", type=float, metavar="S", default=None,
                        help="the new members' observed prefix: their first S seconds of the movie")
    prefix.add_argument("--first-fraction", type=float, metavar="LAMBDA", default=None,
                        help="the new members' observed prefix as a fraction λ in (0, 1] of the movie")


COMMANDS = {
    "train": ("train TF / NLTF / FVAE on a per-movie tensor (resumable)", add_train_args, cmd_train),
    "evaluate": ("run an evaluation protocol: completion, ksweep, longterm, factors or all",
                 add_evaluate_args, cmd_evaluate),
    "report": ("write the HTML/Markdown report of a run folder", add_report_args, cmd_report),
    "predict": ("write a trained model's face for every (member, second) cell, or new members' whole "
                "movie from their first seconds, to an HDF5 file", add_predict_args, cmd_predict),
}


def register(subparsers) -> None:
    """Add `train`, `evaluate`, `report` and `predict` to the project CLI; each sets handler(args, cfg)."""
    for name, (help_text, add_args, handler) in COMMANDS.items():
        parser = subparsers.add_parser(name, help=help_text, description=help_text)
        add_args(parser)
        parser.set_defaults(handler=handler)


def standalone_main(command: str, argv: list[str] | None = None) -> int:
    """scripts/<command>.py: the same handler with --config FILE (repeatable) and key=value overrides."""
    from configs.schema import load_config

    help_text, add_args, handler = COMMANDS[command]
    parser = argparse.ArgumentParser(description=help_text)
    parser.add_argument("--config", action="append", default=[], help="YAML overlay (repeatable)")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. train.epochs=5")
    add_args(parser)
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        from pipeline.lock import workspace_lock   # one writer per workspace, as `audience <command>`

        with workspace_lock(cfg.workspace.root):
            return handler(args, cfg)
    except (ConfigError, DataError) as err:
        print(f"error: {err}")
        return 2
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
