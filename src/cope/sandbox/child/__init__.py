"""What runs inside the sandbox: real Python files that the host sends to the child as text.

They run in a separate, isolated interpreter (``python -I``), so cope does
not import them (except ``plain``, whose decoder also reads probe values back
on the host): :func:`source` reads a file's text once, and the host passes it
in the job (guard, Landlock, seccomp, the program's process and the
plain-data codec) or as ``-c`` (the harness).
Keeping them as files lets linters, type checkers and coverage see them.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

_HERE = Path(__file__).resolve().parent


@lru_cache(maxsize=None)
def source(name: str) -> str:
    """The text of ``child/<name>.py`` (guard, landlock, seccomp, harness, server or plain)."""
    return (_HERE / f"{name}.py").read_text(encoding="utf-8")
