"""Make ``tlkit_filterbank`` importable from this checkout, installed or not."""

import sys
from pathlib import Path

# The plugin folder (the one holding pyproject.toml) goes first, so that these tests exercise the
# source next to them rather than whatever version happens to be pip-installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
