"""The ordered list of pipeline stages. Imported lazily so `--help` stays fast
and a stage's heavy dependencies (dlib, cv2) load only when it runs."""
from __future__ import annotations

import importlib

from pipeline.runner import Stage

# name -> "module:attribute", in execution order
STAGE_SPECS: dict[str, str] = {
    "synthesize": "pipeline.synthetic.stage:SYNTHESIZE",
    "survey": "pipeline.detect:SURVEY",
    "detect": "pipeline.detect:DETECT",
    "landmarks": "pipeline.landmarks:LANDMARKS",
    "frontalize": "pipeline.frontalize:FRONTALIZE",
    "members": "pipeline.members:MEMBERS",
    "bin": "pipeline.binning:BIN",
}
# what `run` executes over recorded screenings (synthesis is separate)
VIDEO_TO_TENSOR = ("survey", "detect", "landmarks", "frontalize", "members", "bin")


def get_stage(name: str) -> Stage:
    if name not in STAGE_SPECS:
        raise KeyError(f"unknown stage '{name}'; stages are: {', '.join(STAGE_SPECS)}")
    module_name, attr = STAGE_SPECS[name].split(":")
    return getattr(importlib.import_module(module_name), attr)
