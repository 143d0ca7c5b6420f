"""Keys never reach the logs: every record of the process is scrubbed as it is made.

Each configured secret (client keys, upstream keys), anything sent as
``Bearer <token>`` and any ``key``/``token`` query parameter is replaced,
in our records and in uvicorn's and the HTTP libraries' alike.
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any, Sequence

REDACTED = "[redacted]"

_BEARER = re.compile(r"(?i)(bearer\s+)[^\s'\",;]+")
_QUERY_KEY = re.compile(r"(?i)([?&](?:api[_-]?key|key|token|access[_-]?token)=)[^&\s'\"]+")


class Scrubber:
    """Removes secrets from text, and from log records as they are made."""

    def __init__(self, secrets: Sequence[str]) -> None:
        # Longest first, so a key that contains another is removed whole.
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def text(self, value: str) -> str:
        for secret in self.secrets:
            if secret in value:
                value = value.replace(secret, REDACTED)
        value = _BEARER.sub(lambda m: m.group(1) + REDACTED, value)
        return _QUERY_KEY.sub(lambda m: m.group(1) + REDACTED, value)

    def _arg(self, value: Any) -> Any:
        if value is None or isinstance(value, (bool, int, float)):
            return value
        if isinstance(value, str):
            return self.text(value)
        shown = f"{value!s}{value!r}"  # %s or %r of an object could show a secret
        return self.text(str(value)) if self.text(shown) != shown else value

    def record(self, record: logging.LogRecord) -> None:
        if record.name == "uvicorn.access" and isinstance(record.args, tuple):
            record.args = tuple(self._arg(v) for v in record.args)  # its formatter unpacks them
        else:
            try:
                message = record.getMessage()
            except Exception:  # noqa: BLE001 - a broken format string: keep what it holds, scrubbed
                message = f"{record.msg!s} {record.args!r}"
            record.msg, record.args = self.text(message), ()
        if record.exc_info and not record.exc_text:  # formatted now, so scrubbed now
            record.exc_text = self.text(logging.Formatter().formatException(record.exc_info))
        if record.stack_info:
            record.stack_info = self.text(record.stack_info)

    def install(self) -> None:
        """Scrub every record this process makes, whichever logger and handler."""
        make = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = make(*args, **kwargs)
            self.record(record)
            return record

        logging.setLogRecordFactory(factory)


class JsonFormatter(logging.Formatter):
    """One JSON object per line (``cope serve --log-format json``): time, level, logger, message,
    the request id where the record was made while serving one, a formatted exception."""

    def format(self, record: logging.LogRecord) -> str:
        from ..models.base import request_id

        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage()}
        rid = request_id.get()
        if rid is not None:
            out["request_id"] = rid
        if record.exc_info:
            out["exception"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def configure(level: str, fmt: str) -> dict[str, Any] | None:
    """Set up the process's logging; returns uvicorn's ``log_config`` (None: use ours for its loggers too)."""
    import sys

    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(levelname)s: %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    if fmt != "json":
        return None
    # uvicorn's own loggers keep no handlers of their own: their records reach ours, as JSON
    return {"version": 1, "disable_existing_loggers": False,
            "loggers": {name: {"handlers": [], "propagate": True, "level": level.upper()}
                        for name in ("uvicorn", "uvicorn.error", "uvicorn.access")}}
