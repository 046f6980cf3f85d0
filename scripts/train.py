#!/usr/bin/env python
"""Standalone 'train' command of the models (same as `audience train`): --config FILE, key=value overrides."""
import sys

from models.cli import standalone_main

if __name__ == "__main__":
    sys.exit(standalone_main("train"))
