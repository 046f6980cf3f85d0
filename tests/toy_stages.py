"""Two tiny stages for runner tests: `numbers` (one unit per key) feeds `sums`.

Run as a script it executes both stages, which is what the kill-and-resume
test SIGKILLs at random moments.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from pipeline.runner import Stage, Unit, run_stage
from pipeline.store import Workspace

KEYS = tuple(f"k{i}" for i in range(6))


@dataclass(frozen=True)
class NumbersConfig:
    scale: float = 1.0
    delay_s: float = 0.0
    fail_key: str = ""          # this unit raises, to test failure reporting


@dataclass(frozen=True)
class SumsConfig:
    offset: float = 0.0


@dataclass(frozen=True)
class ToyConfig:
    numbers: NumbersConfig = field(default_factory=NumbersConfig)
    sums: SumsConfig = field(default_factory=SumsConfig)


def plan_numbers(cfg, ws: Workspace):
    return [Unit("numbers", (key,), (), (("values", ws.cache / "numbers" / f"{key}.h5"),),
                 (("seed", i),)) for i, key in enumerate(KEYS)]


def compute_numbers(unit: Unit, cfg, tmp):
    if unit.key[0] == cfg.numbers.fail_key:
        raise ValueError(f"unit {unit.name} was told to fail")
    values = np.random.default_rng(unit.get("seed")).normal(size=200_000) * cfg.numbers.scale
    with h5py.File(tmp["values"], "w") as h5:
        for part in np.array_split(values, 10):   # slow writes widen the window for a kill
            time.sleep(cfg.numbers.delay_s / 10)
            h5.create_dataset(f"part{len(h5)}", data=part)


def plan_sums(cfg, ws: Workspace):
    inputs = tuple(ws.cache / "numbers" / f"{key}.h5" for key in KEYS)
    return [Unit("sums", ("all",), inputs, (("sums", ws.cache / "sums" / "all.h5"),))]


def compute_sums(unit: Unit, cfg, tmp):
    totals = []
    for path in unit.inputs:
        with h5py.File(path, "r") as h5:
            totals.append(sum(float(h5[name][()].sum()) for name in h5))
    with h5py.File(tmp["sums"], "w") as h5:
        h5["totals"] = np.array(totals) + cfg.sums.offset


NUMBERS = Stage("numbers", "toy", "1", ("numbers",), plan_numbers, compute_numbers)
SUMS = Stage("sums", "toy", "1", ("sums",), plan_sums, compute_sums)


def compute_numbers_dying_once(unit: Unit, cfg, tmp):
    """compute_numbers, but the first attempt at unit k2 kills its own worker process (a marker file in the
    workspace root remembers it died), as the OS or a lost node would."""
    marker = Path(tmp["values"]).parents[2] / f".died-{unit.key[0]}"
    if unit.key[0] == "k2" and not marker.exists():
        marker.write_text("died once")
        os._exit(1)
    compute_numbers(unit, cfg, tmp)


NUMBERS_DYING_ONCE = dataclasses.replace(NUMBERS, compute=compute_numbers_dying_once)


def blind_probe(path: str) -> tuple[str, str]:
    """A Ray node that does not see the workspace (for RayExecutor.check_shared)."""
    return "node-without-the-share", f"unreadable: [Errno 2] No such file or directory: '{path}'"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root", type=Path)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    cfg = ToyConfig(numbers=NumbersConfig(delay_s=args.delay))
    ws = Workspace(args.root)
    for stage in (NUMBERS, SUMS):
        report = run_stage(stage, cfg, ws, workers=args.workers, progress=False)
        if report.failed:
            sys.exit(1)


if __name__ == "__main__":
    main()
