"""Typed configuration: the schema (`schema.py`), the strict YAML loader
(`loader.py`) and the YAML files themselves (`default.yaml` and overlays)."""
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent
DEFAULT_YAML = CONFIG_DIR / "default.yaml"
