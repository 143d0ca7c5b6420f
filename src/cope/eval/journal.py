"""An append-only JSONL journal: every model call and every result of a run.

Append-only so that a run killed at any moment loses at most the line being
written. The journal is also what ``--resume`` and replay read, so nothing
about a run lives only in memory.

Durability: each record is one ``write`` of one line, flushed to the OS at
once, so it survives the process being killed (SIGKILL, a crash, Ctrl-C);
the file is fsynced when the run closes it, not per line, so a power loss
can lose the last records, which ``--resume`` then makes again (a call in
flight is paid again either way). A run killed mid-write leaves a torn last
line: opening the journal to continue moves that fragment to
``journal.jsonl.torn`` (kept, for inspection) and truncates the file to its
last whole line, so the next record never lands on a fragment. Journals torn
by earlier versions, where a record was appended onto a fragment, are read
back by recovering the record that follows the fragment.
"""

from __future__ import annotations

import gzip
import json
import os
import threading
import warnings
from pathlib import Path
from typing import Any, Iterator

from ..errors import ConfigError


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        repair_tail(path)
        self._f = path.open("a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
        with self._lock:
            self._f.write(line + "\n")
            self._f.flush()  # in the OS's hands now: survives the process being killed

    def close(self) -> None:
        with self._lock:
            if self._f.closed:
                return
            self._f.flush()
            try:
                os.fsync(self._f.fileno())
            except OSError:  # a filesystem without fsync (some network mounts): flushed is what it gets
                pass
            self._f.close()

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def repair_tail(path: Path) -> int:
    """Cut a torn last line (bytes after the last newline) off the journal; how many bytes were cut.

    The fragment is appended to ``<journal>.torn`` first, so nothing a run
    wrote is thrown away unseen.
    """
    if not path.is_file():
        return 0
    size = path.stat().st_size
    if size == 0:
        return 0
    with path.open("rb+") as f:
        chunk, pos = b"", size
        while pos > 0:  # scan back for the last newline, a block at a time
            step = min(65536, pos)
            pos -= step
            f.seek(pos)
            chunk = f.read(step) + chunk
            nl = chunk.rfind(b"\n")
            if nl >= 0:
                keep = pos + nl + 1
                break
        else:
            keep = 0
        if keep == size:
            return 0
        f.seek(keep)
        fragment = f.read()
        with path.with_name(path.name + ".torn").open("ab") as torn:
            torn.write(fragment + b"\n")
        f.truncate(keep)
    warnings.warn(f"{path}: cut a torn last line ({size - keep} bytes, kept in {path.name}.torn); "
                  "the record it began is made again", stacklevel=2)
    return size - keep


def _recover(line: str) -> dict[str, Any] | None:
    """The whole record at the end of a line that a record was appended onto a fragment of."""
    start = line.rfind('{"type":')
    while start > 0:
        try:
            rec = json.loads(line[start:])
        except ValueError:
            start = line.rfind('{"type":', 0, start)
            continue
        return rec if isinstance(rec, dict) else None
    return None


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
            rec = _recover(line)
            if rec is None:
                raise ConfigError(f"{path}:{i + 1}: corrupted journal line (not JSON)") from None
            yield rec  # a fragment with a whole record appended to it: the fragment's record is made again
