"""An append-only JSONL journal: every model call and every result of a run.

Append-only so that a run killed at any moment loses at most the line being
written; the reader skips a torn last line. The journal is also what
``--resume`` and replay read, so nothing about a run lives only in memory.
"""

from __future__ import annotations

import gzip
import json
import threading
from pathlib import Path
from typing import Any, Iterator

from ..errors import ConfigError


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._f = path.open("a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
        with self._lock:
            self._f.write(line + "\n")
            self._f.flush()  # in the OS's hands now: survives the process being killed

    def close(self) -> None:
        with self._lock:
            self._f.close()

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def archived(path: Path) -> Path:
    """The gzip archive of a journal: ``journal.jsonl.gz`` next to ``journal.jsonl``.

    Finished runs can be kept (or committed) compressed, about a tenth of
    the size; reports and replay read them as they are.
    """
    return path.with_name(path.name + ".gz")


def journal_exists(path: Path) -> bool:
    return path.is_file() or archived(path).is_file()


def read_journal(path: Path) -> Iterator[dict[str, Any]]:
    """Records in order; a torn final line (the run was killed mid-write) is skipped.

    Reads the archive (see :func:`archived`) when only that exists.
    """
    if path.is_file():
        with path.open(encoding="utf-8") as f:
            text = f.read()
    elif archived(path).is_file():
        try:
            with gzip.open(archived(path), "rt", encoding="utf-8") as f:
                text = f.read()
        except (OSError, EOFError) as exc:
            raise ConfigError(f"{archived(path)}: unreadable archive ({exc})") from None
    else:
        return
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except ValueError:
            if i >= len(lines) - 2:  # only the last line may be torn
                return
            raise ConfigError(f"{path}:{i + 1}: corrupted journal line (not JSON)") from None
