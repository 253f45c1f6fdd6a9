"""Where prepared data sets and downloaded packages live."""

from __future__ import annotations

import os
from pathlib import Path


def data_dir() -> Path:
    """Root of prepared data sets: $HETCLIP_DATA_DIR, else ~/.cache/hetclip/data."""
    env = os.environ.get("HETCLIP_DATA_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "hetclip" / "data"


def cache_dir() -> Path:
    """Downloaded registry packages: $HETCLIP_CACHE_DIR, else <data_dir>/_downloads."""
    env = os.environ.get("HETCLIP_CACHE_DIR")
    return Path(env).expanduser() if env else data_dir() / "_downloads"
