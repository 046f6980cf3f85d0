"""Generate synthetic IR theatre screenings (video + ground truth) under <workspace>/raw/.

Examples:
    python scripts/synthesize.py --small --duration 10            # 2 small 10 s sessions in ./data
    python scripts/synthesize.py --workspace /tmp/ws synthetic.sessions=3 synthetic.cameras=2
    python scripts/synthesize.py --config configs/demo.yaml --force

Each (movie, session, camera) is one resumable unit of the `synthesize` stage:
a killed run picks up where it stopped and gives the same files.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from configs.schema import ConfigError, load_config  # noqa: E402
from pipeline.runner import run_stage  # noqa: E402
from pipeline.store import DataError, Workspace  # noqa: E402
from pipeline.synthetic.stage import SYNTHESIZE  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", action="append", default=[], metavar="YAML",
                        help="config overlay(s) applied over configs/default.yaml, in order")
    parser.add_argument("--small", action="store_true", help="quarter-size frames (synthetic.scale=small)")
    parser.add_argument("--duration", type=float, metavar="S", help="seconds per recording (synthetic.duration_s)")
    parser.add_argument("--sessions", type=int, help="screenings per movie (synthetic.sessions)")
    parser.add_argument("--workspace", "--out", dest="workspace", metavar="DIR",
                        help="workspace root; videos go to DIR/raw/<movie>/<session>/ (workspace.root)")
    parser.add_argument("--workers", type=int, help="parallel worker processes (workspace.workers)")
    parser.add_argument("--force", action="store_true", help="regenerate even units that are up to date")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value",
                        help="any config value, e.g. synthetic.seed=3 synthetic.full.rows=6")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    overrides = list(args.overrides)
    if args.small:
        overrides.append("synthetic.scale=small")
    if args.duration is not None:
        overrides.append(f"synthetic.duration_s={args.duration}")
    if args.sessions is not None:
        overrides.append(f"synthetic.sessions={args.sessions}")
    if args.workspace:
        overrides.append(f"workspace.root={args.workspace}")
    try:
        cfg = load_config(args.config, overrides)
        workspace = Workspace(Path(cfg.workspace.root))
        report = run_stage(SYNTHESIZE, cfg, workspace, workers=args.workers or cfg.workspace.workers,
                           force=args.force)
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(report.line())
    for name, error in report.failed.items():
        print(f"FAILED {name}: {error}", file=sys.stderr)
    print(f"screenings in {workspace.raw / cfg.synthetic.movie}")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
