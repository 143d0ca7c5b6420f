"""Reading a user's text (a problem file, stdin, a price or config file) with one clear error.

Users pass what they have: a binary file by mistake, a Latin-1 export, a
directory. Each becomes one ConfigError that says what was wrong and where,
never a UnicodeDecodeError traceback.
"""

from __future__ import annotations

from pathlib import Path

from .errors import ConfigError


def decode(data: bytes, where: str) -> str:
    """UTF-8 text (a BOM is dropped); binary data or another encoding is a ConfigError."""
    if b"\x00" in data:
        raise ConfigError(f"{where}: binary data, not text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{where}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
                          "save it as UTF-8") from None


def read_text(path: str | Path, what: str = "file") -> str:
    """The UTF-8 text of ``path``; missing, a directory, unreadable or not text is a ConfigError."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{what} not found: {path}")
    if p.is_dir():
        raise ConfigError(f"{what} {path} is a directory, not a file")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{what} {path}: cannot read it ({exc.strerror or exc})") from None
    return decode(data, str(path))
