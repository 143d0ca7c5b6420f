"""Process and disk lifetime of a run: reaping what it left, naming signals, quota mounts, cleanup."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import time


from .host import _is_root


def _reap(marker: str, patience_s: float = 3.0) -> None:
    """Kill and wait out any process still carrying this run's marker.

    Killing the group's leader tears a bubblewrap sandbox down, but the
    kernel finishes that asynchronously; a run is over only when nothing it
    started is left.
    """
    needle = marker.encode()
    deadline = time.monotonic() + patience_s
    me = os.getpid()
    while True:
        left = []
        try:
            names = os.listdir("/proc")
        except OSError:
            return
        for name in names:
            if not name.isdigit() or int(name) == me:
                continue
            try:
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    if needle in f.read():
                        left.append(int(name))
            except OSError:
                continue
        if not left or time.monotonic() > deadline:
            return
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.01)


def _signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


_MS_NOSUID, _MS_NODEV, _MNT_DETACH = 2, 4, 2


def _mount_quota(path: str, size_mb: float) -> bool:
    """Mount a size-capped tmpfs on ``path`` (the fallback's working directory); False where not allowed.

    Only root may mount; the mount lives exactly as long as the run and is
    detached after it. Without it, the file-size limit bounds each file and
    not their total.
    """
    if not _is_root() or sys.platform != "linux" or os.environ.get("COPE_SANDBOX_QUOTA", "1") == "0":
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        opts = f"size={int(size_mb * 1024 * 1024)},mode=0700".encode()
        ok = libc.mount(b"tmpfs", path.encode(), b"tmpfs", ctypes.c_ulong(_MS_NOSUID | _MS_NODEV), opts) == 0
    except (OSError, AttributeError):
        return False
    return bool(ok)


def _unmount(path: str) -> None:
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).umount2(path.encode(), _MNT_DETACH)
    except (OSError, AttributeError):
        pass


def disk_quota_available() -> bool:
    """Whether the fallback can cap a run's total disk here (root, and a mount is allowed)."""
    d = tempfile.mkdtemp(prefix="cope-quota-probe-")
    try:
        ok = _mount_quota(d, 1)
        if ok:
            _unmount(d)
        return ok
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _force_rmtree(path: str) -> None:
    """Remove a working directory even if the program left it unreadable."""

    def fix(func, p, _exc):
        try:
            os.chmod(os.path.dirname(p), 0o700)
            os.chmod(p, 0o700)
        except OSError:
            pass
        try:
            func(p)
        except OSError:
            pass

    shutil.rmtree(path, onerror=fix)
