"""Reading benchmark data: files inside installed packages, and JSONL files.

The data packages are read by path and never imported (some pull heavy
dependencies, some have none installed on purpose), and every user file error
names the file and line, so one reader serves every loader.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path
from typing import Any

from ..errors import ConfigError


def package_file(module: str, relpath: str, install: str) -> Path:
    """``relpath`` inside the installed package ``module``, found without importing it.

    ``install`` is the command that installs the package, for the error line.
    """
    spec = importlib.util.find_spec(module)
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations:
        raise ConfigError(f"this needs the package that provides '{module}'; install it with '{install}'")
    path = Path(locations[0]) / relpath
    if not path.exists():
        raise ConfigError(f"{relpath} is missing from the installed '{module}'; reinstall it with '{install}'")
    return path


def read_jsonl(path: str | Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; ``.gz`` files are decompressed."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"file not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    rows = []
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError:
                    raise ConfigError(f"{path}:{lineno}: not valid JSON") from None
                if not isinstance(row, dict):
                    raise ConfigError(f"{path}:{lineno}: expected a JSON object")
                rows.append((lineno, row))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    return rows
