"""The stage graph, declared: each stage, the stages whose outputs it reads (`needs`) and the config
sections it reads itself (`reads`). The runner derives from it each stage's parameter hash (its own
sections and every upstream stage's), the fingerprints of the inputs other units made, and which units
may run: a unit whose upstream unit failed, was blocked or is not done is reported as blocked
(pipeline/runner.py). Stages are imported lazily so `--help` stays fast and a stage's heavy
dependencies (dlib, cv2) load only when it runs.

The recordings under raw/ are the sources: `synthesize` writes some of them, but the stages after it
read whatever recording is there (registered or synthetic), so `survey` needs no stage.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
from dataclasses import dataclass

from pipeline.runner import Stage


@dataclass(frozen=True)
class StageDecl:
    target: str                      # "module:attribute" of the Stage (its plan and compute functions)
    needs: tuple[str, ...] = ()      # upstream stages whose outputs its units read
    reads: tuple[str, ...] = ()      # config sections its own code reads
    partial_ok: bool = False         # runs on the upstream units that succeeded when others failed


# in execution order
GRAPH: dict[str, StageDecl] = {
    "synthesize": StageDecl("pipeline.synthetic.stage:SYNTHESIZE", reads=("synthetic",)),
    "survey": StageDecl("pipeline.detect:SURVEY", reads=("detect",)),
    "detect": StageDecl("pipeline.detect:DETECT", needs=("survey",), reads=("sources", "detect")),
    "landmarks": StageDecl("pipeline.landmarks:LANDMARKS", needs=("detect",), reads=("sources", "detect", "landmarks")),
    "frontalize": StageDecl("pipeline.frontalize:FRONTALIZE", needs=("landmarks",), reads=("frontalize",)),
    "members": StageDecl("pipeline.members:MEMBERS", needs=("frontalize",), reads=("members",)),
    # a movie's tensor is built from the recordings whose units succeeded, and says which it lacks
    "bin": StageDecl("pipeline.binning:BIN", needs=("members",), reads=("binning",), partial_ok=True),
}
# name -> "module:attribute", in execution order
STAGE_SPECS: dict[str, str] = {name: decl.target for name, decl in GRAPH.items()}
# what `run` executes over recorded screenings (synthesis is separate)
VIDEO_TO_TENSOR = ("survey", "detect", "landmarks", "frontalize", "members", "bin")


@functools.cache
def get_stage(name: str) -> Stage:
    """The stage with its declared upstream stages and config sections."""
    if name not in GRAPH:
        raise KeyError(f"unknown stage '{name}'; stages are: {', '.join(GRAPH)}")
    decl = GRAPH[name]
    module_name, attr = decl.target.split(":")
    stage = getattr(importlib.import_module(module_name), attr)
    return dataclasses.replace(stage, sections=decl.reads, needs=tuple(get_stage(n) for n in decl.needs),
                               partial_ok=decl.partial_ok)
