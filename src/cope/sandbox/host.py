"""The host side of a run: where the interpreter lives, who may read it, the environment a program sees."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from dataclasses import dataclass
from typing import Sequence

from ..errors import ConfigError


@dataclass(frozen=True)
class _Interpreter:
    """Where an interpreter lives, as seen with ``-I``: what a sandbox must let it read."""

    executable: str
    prefixes: tuple[str, ...]
    path: tuple[str, ...]


_interpreters: dict[str, _Interpreter] = {}
_interp_lock = threading.Lock()


def _interpreter(python: str) -> _Interpreter:
    """Ask ``python`` (once per process) where its installation and import path are."""
    with _interp_lock:
        if python in _interpreters:
            return _interpreters[python]
    code = ("import json, sys; print(json.dumps([sys.prefix, sys.base_prefix, sys.exec_prefix,"
            " sys.base_exec_prefix, sys.path]))")
    try:
        out = subprocess.run([python, "-I", "-c", code], capture_output=True, text=True, timeout=30,
                             env=_scrubbed_env("/"), check=True).stdout
        *prefixes, path = json.loads(out)
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        raise ConfigError(f"the sandbox interpreter {python!r} does not run: {exc}") from None
    info = _Interpreter(python, tuple(dict.fromkeys(prefixes)), tuple(p for p in path if p))
    with _interp_lock:
        _interpreters[python] = info
    return info


def _scrubbed_env(home: str) -> dict[str, str]:
    """The whole environment a program sees: nothing from the caller's (no keys, no proxies)."""
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": home, "TMPDIR": home, "LANG": "C.UTF-8"}


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _count_tasks(uid: int) -> int:
    """Processes and threads whose real uid is ``uid``: what RLIMIT_NPROC counts."""
    total = 0
    try:
        names = os.listdir("/proc")
    except OSError:
        return 0
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status", "rb") as f:
                status = f.read().decode("ascii", "replace")
        except OSError:
            continue
        real_uid = threads = None
        for line in status.splitlines():
            if line.startswith("Uid:"):
                real_uid = int(line.split()[1])
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
        if real_uid == uid:
            total += threads or 1
    return total


def _others_can_use(paths: Sequence[str]) -> bool:
    """Whether an unprivileged user can reach and read ``paths`` (every parent searchable)."""
    for path in paths:
        real = os.path.realpath(path)
        parts = real.split("/")
        for i in range(2, len(parts) + 1):
            d = "/".join(parts[:i]) or "/"
            try:
                mode = os.stat(d).st_mode
            except OSError:
                return False
            if not mode & 0o001 and os.path.isdir(d):
                return False
        try:
            if not os.stat(real).st_mode & 0o004:
                return False
        except OSError:
            return False
    return True


def _ancestors(path: str) -> list[str]:
    parts = path.strip("/").split("/")
    return ["/" + "/".join(parts[:i]) for i in range(1, len(parts))]


def _python_binds(interp: _Interpreter) -> list[tuple[str, str]]:
    """(host source, sandbox destination) pairs that make the interpreter work read-only."""
    wanted: list[tuple[str, str]] = []
    for p in interp.prefixes + (os.path.dirname(interp.executable),):
        dest = os.path.abspath(p)
        wanted.append((os.path.realpath(p), dest))
        real = os.path.realpath(p)
        if real != dest:
            wanted.append((real, real))
    exe_real = os.path.realpath(interp.executable)
    wanted.append((os.path.dirname(exe_real), os.path.dirname(exe_real)))
    binds: list[tuple[str, str]] = []
    for src, dest in sorted(set(wanted), key=lambda sd: (len(sd[1]), sd[1])):
        if dest == "/" or not os.path.isdir(src):
            continue
        covered = any(dest == d or dest.startswith(d + "/") for _, d in binds) or dest.startswith("/usr/")
        if not covered:
            binds.append((src, dest))
    return binds
