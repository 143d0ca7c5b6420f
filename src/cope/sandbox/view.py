"""A read-only view of the interpreter that an unprivileged user can reach (root, fallback only).

Root ignores the process limit, so a sandboxed program must run as ``nobody``. In the fallback
(no bubblewrap) that needs an interpreter ``nobody`` can read, and one under a private home
(pyenv in a 0700 home directory) is out of its reach. Root may mount, though: the
interpreter's directories are bind-mounted read-only (no setuid, no devices) under a fresh
0755 directory in the temporary directory, once per process, and unmounted at exit. A view
left by a process that died is removed when the next one starts. Where mounting is not
allowed (a container without CAP_SYS_ADMIN), there is no view and the program stays uid 0
without capabilities, as before.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass

from .host import _Interpreter, _is_root, _python_binds, _scrubbed_env

_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_REMOUNT, _MS_BIND, _MS_REC = 1, 2, 4, 32, 4096, 16384
_MNT_DETACH = 2
_PREFIX = "cope-python-"
_NOBODY = 65534


@dataclass(frozen=True)
class View:
    """Where the view is, and the interpreter and import path as seen through it."""

    root: str
    interpreter: _Interpreter
    path: tuple[str, ...]  # the host interpreter's import path, through the view


_views: dict[str, View | None] = {}
_lock = threading.Lock()


def _libc():
    import ctypes

    return ctypes, ctypes.CDLL(None, use_errno=True)


def _mount_ro(src: str, target: str) -> None:
    ctypes, libc = _libc()
    if libc.mount(src.encode(), target.encode(), None, ctypes.c_ulong(_MS_BIND | _MS_REC), None) != 0:
        raise OSError(ctypes.get_errno(), f"bind mount of {src}")
    flags = _MS_BIND | _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | _MS_NODEV
    if libc.mount(None, target.encode(), None, ctypes.c_ulong(flags), None) != 0:
        err = ctypes.get_errno()
        libc.umount2(target.encode(), _MNT_DETACH)
        raise OSError(err, f"read-only remount of {target}")


def _remove(root: str) -> None:
    """Detach every mount under ``root`` (deepest first) and remove it."""
    try:
        ctypes, libc = _libc()
    except OSError:
        return
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as f:
            points = [line.split()[1] for line in f if len(line.split()) > 1]
    except OSError:
        points = []
    for p in sorted((p for p in points if p == root or p.startswith(root + "/")), key=len, reverse=True):
        libc.umount2(p.encode(), _MNT_DETACH)
    shutil.rmtree(root, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale() -> None:
    tmp = tempfile.gettempdir()
    try:
        names = os.listdir(tmp)
    except OSError:
        return
    for name in names:
        if not name.startswith(_PREFIX):
            continue
        pid = name[len(_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            _remove(os.path.join(tmp, name))


def readable_view(interp: _Interpreter) -> View | None:
    """This process's view of ``interp`` for ``nobody``, made on first use; None where it cannot be."""
    if os.environ.get("COPE_SANDBOX_VIEW", "1") == "0":
        return None
    with _lock:
        if interp.executable in _views:
            return _views[interp.executable]
        view = _make(interp)
        _views[interp.executable] = view
        return view


def _make(interp: _Interpreter) -> View | None:
    if not _is_root() or sys.platform != "linux":
        return None
    _remove_stale()
    root = tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-")
    try:
        os.chmod(root, 0o755)
        for src, dest in _python_binds(interp):
            target = root + dest
            os.makedirs(target, exist_ok=True)
            for d in [target, *(root + a for a in _parents(dest))]:
                os.chmod(d, 0o755)
            _mount_ro(src, target)
        python = root + os.path.realpath(interp.executable)
        out = subprocess.run([python, "-I", "-c", "import sys; print(sys.prefix)"], capture_output=True,
                             text=True, timeout=30, env=_scrubbed_env("/"), cwd="/", user=_NOBODY,
                             group=_NOBODY, extra_groups=[], check=True).stdout.strip()
        if not out.startswith(root + "/"):
            raise OSError(f"the view's interpreter found its installation elsewhere: {out}")
    except (OSError, subprocess.SubprocessError, ValueError):
        _remove(root)
        return None
    atexit.register(_remove, root)
    seen = [root + os.path.abspath(p) for p in (*interp.prefixes, *(os.path.realpath(p) for p in interp.prefixes))]
    view_interp = _Interpreter(python, tuple(dict.fromkeys(seen)), tuple(root + p for p in interp.path))
    return View(root=root, interpreter=view_interp, path=view_interp.path)


def _parents(path: str) -> list[str]:
    parts = path.strip("/").split("/")
    return ["/" + "/".join(parts[:i]) for i in range(1, len(parts))]
