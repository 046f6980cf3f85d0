#!/usr/bin/env python
"""Standalone 'predict' command of the models (same as `audience predict`): --config FILE, key=value overrides."""
import sys

from models.cli import standalone_main

if __name__ == "__main__":
    sys.exit(standalone_main("predict"))
