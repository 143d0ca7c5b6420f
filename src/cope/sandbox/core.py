"""Run untrusted, model-written Python in a separate, limited process.

The code task judges programs by running them, and those programs come from a
model: they may loop forever, fork or allocate without end, write anywhere,
look for API keys or open sockets. None of that may take down a solve or touch
the machine, so every program runs under these layers:

Always (both isolation levels)
  * its own process group, detached from any terminal, killed as a whole at
    a wall-clock timeout;
  * resource limits set before any of its code runs: CPU seconds, address
    space, processes (and threads), size of any file it writes, open files,
    no core dumps;
  * an empty temporary working directory, removed afterwards;
  * a scrubbed environment (PATH, HOME, TMPDIR and LANG only: no API keys),
    stdin from /dev/null, stdout/stderr captured to size-capped files;
  * not root: when cope runs as root the program drops to ``nobody`` first
    (root ignores the process limit). In the fallback that needs an
    interpreter ``nobody`` can read; for one under a private home directory
    cope mounts a read-only view of it (cope.sandbox.view). Where it cannot
    (no mounts allowed), the program stays uid 0 with every capability
    dropped (no mounts, modules, raw sockets, setuid or reading others'
    files), and a warning says so.

``bwrap`` (bubblewrap, Debian/Ubuntu package ``bubblewrap``): real OS isolation
  New PID, network, IPC and UTS namespaces (no network at all: only a loopback
  that is down), a read-only view of /usr and of the Python installation and
  nothing else of the host filesystem, a private size-capped tmpfs as working
  directory and /tmp; when the sandbox ends, every process it started ends.
  As a normal user bubblewrap also adds a user namespace, which gives the
  program its own process count.

``rlimits``: the fallback where bubblewrap is missing or cannot create namespaces
  Where the kernel has Landlock (Linux >= 5.13), a kernel wall the harness
  puts around itself before the program runs, which holds for root too:
  reading only the Python installation, /usr and a few files, writing only
  its working directory (no device nodes), no TCP connect or bind (ABI >= 4),
  no signals or abstract sockets outside the sandbox (ABI >= 6). A seccomp
  filter (x86_64, aarch64) refuses sockets other than AF_UNIX (UDP, raw,
  netlink) and io_uring, and, for a program left as uid 0 (exempt from the
  process limit), every new process but threads. Then the
  limits above plus an in-process guard (Python audit hooks) that refuses
  to start processes, open sockets or resolve names, load ctypes/cffi, kill
  other processes, change limits, write outside the working directory and
  read outside the Python installation, /usr and the working directory. A
  guard inside the interpreter is a best effort, not a wall: code written to
  defeat it may succeed where Landlock is missing, and the disk it may fill
  is bounded per file, not in total, unless cope runs as root and may mount
  a size-capped tmpfs as the working directory (then it is ``disk_mb``). A warning says so when this level is
  chosen automatically.

Which level is in force is :attr:`Sandbox.isolation` (and ``isolation`` in
every :class:`RunResult`); ``COPE_SANDBOX=auto|bwrap|rlimits`` overrides the
automatic choice.

Faking results: a test that ran in the program's interpreter could be faked
by it (an always-equal object, a patched ``exec``, a record forged on the
harness's channel). So no test runs there. A run is two processes: the
harness, the judge, which reads the job, holds the result channel and runs the
setup and the tests; and the program's own process, a fresh interpreter it
starts (none of the judge's memory: no nonce, no tests, no expected values, no
result descriptor), which runs the program and answers calls of its functions
with plain data only (see ``child/plain.py``). The judge is not dumpable, so
the program can neither trace it nor read its memory or descriptors. Tests of
the ``assert f(x) == y`` shape are judged further out still, in cope's own
process, on their calls' values (``probes``; see cope.tasks.assertions). What
remains: a program can still kill the judge (which fails the run) and, without
Landlock, signal its own judge.
"""

from __future__ import annotations

import json
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from typing import Sequence

from ..errors import ConfigError
from .child import source
from .host import _ancestors, _count_tasks, _interpreter, _is_root, _others_can_use, _python_binds, _scrubbed_env
from .limits import Limits, RunResult
from .probes import _probe_values
from .process import _force_rmtree, _mount_quota, _reap, _signal_name, _unmount


ISOLATIONS = ("auto", "bwrap", "rlimits")
_ENV_VAR = "COPE_SANDBOX"
# Where the private tmpfs working directory appears inside a bubblewrap sandbox.
_BOX_WORK = "/sandbox"
_NOBODY = 65534


# ---------------------------------------------------------------------------
# The program that runs inside the sandbox, and the layers it installs, are
# real files under child/ (see cope.sandbox.child); the host sends their text.
# ---------------------------------------------------------------------------

_GUARD = source("guard")

# Landlock (Linux >= 5.13): a kernel wall for the filesystem, TCP and signals that an
# unprivileged process puts around itself; it holds for root too and cannot be undone. Applied
# by the harness in the fallback, after privileges are dropped and before the program runs.
_LANDLOCK = source("landlock")

# seccomp: a kernel filter on system calls, for what Landlock does not cover: sockets other
# than AF_UNIX (UDP, raw, netlink, ...) and io_uring (which could open them). x86_64 and
# aarch64 only (system call numbers differ by architecture); elsewhere nothing is filtered.
_SECCOMP = source("seccomp")

_HARNESS = source("harness")
# The program's own process, started by the harness, and the plain-data codec both use.
_SERVER = source("server")
_PLAIN = source("plain")
# The largest message between the two processes of a run (a call's arguments or its value).
_MESSAGE_CAP = 64 * 1024 * 1024


# ---------------------------------------------------------------------------
# The host side
# ---------------------------------------------------------------------------


_probe_lock = threading.Lock()
_probed: dict[tuple[str, bool], str | None] = {}  # (python, root) -> None if bwrap works, else why not
_warned: set[str] = set()


class Sandbox:
    """Runs a program and its tests in a fresh, limited process per call.

    ``isolation``: ``"auto"`` (bubblewrap when it works here, else the
    ``rlimits`` fallback with a warning), ``"bwrap"`` (an error if it does not
    work) or ``"rlimits"``; ``COPE_SANDBOX`` sets the default. ``guard`` turns
    the in-process guard on or off (default: on exactly in the fallback).
    ``python`` is the interpreter that runs programs (default: this one).
    Safe to call from several threads at once.
    """

    def __init__(self, limits: Limits | None = None, *, isolation: str | None = None,
                 guard: bool | None = None, python: str | None = None) -> None:
        self.limits = limits or Limits()
        requested = (isolation or os.environ.get(_ENV_VAR) or "auto").strip().lower()
        if requested not in ISOLATIONS:
            raise ConfigError(f"unknown sandbox isolation '{requested}'; choose one of {', '.join(ISOLATIONS)}")
        self.python = python or sys.executable
        if not self.python:
            raise ConfigError("no Python interpreter to run sandboxed programs with")
        self._interp = _interpreter(self.python)
        self.isolation, fallback_why = self._choose(requested)
        self.guard = (self.isolation == "rlimits") if guard is None else bool(guard)
        # The fallback's filesystem, network and signal wall, where the kernel has Landlock
        # (bubblewrap's namespaces already are one).
        self.landlock = (self.isolation == "rlimits" and landlock_abi() > 0
                         and os.environ.get("COPE_SANDBOX_LANDLOCK", "1") != "0")  # 0: off, to compare
        import platform

        self.seccomp = (self.isolation == "rlimits" and sys.platform == "linux"
                        and platform.machine() in ("x86_64", "aarch64")
                        and os.environ.get("COPE_SANDBOX_SECCOMP", "1") != "0")

        if (why := fallback_why) is not None:
            wall = ("Landlock (files, TCP, signals)" + (" and seccomp" if self.seccomp else "") if self.landlock
                    else "no kernel wall (this kernel has no Landlock)" + ("; seccomp for sockets" if self.seccomp
                                                                              else ""))
            self._warn_once(
                "fallback",
                f"bubblewrap isolation is not available ({why}); sandboxed programs run with resource "
                f"limits, an in-process guard and {wall}. Install bubblewrap (e.g. 'apt-get install "
                f"bubblewrap') for namespace isolation, or set {_ENV_VAR}=rlimits to silence this.",
            )
        # Root ignores RLIMIT_NPROC, so programs drop to nobody. Bubblewrap
        # mounts the interpreter where nobody can reach it; the fallback can
        # drop if nobody can read the interpreter on the host, or through a
        # read-only view of it that root mounts (see cope.sandbox.view).
        self._view = None
        if _is_root() and self.isolation == "rlimits" and not self._others_can_run():
            from .view import readable_view

            self._view = readable_view(self._interp)
        self._drop = _is_root() and (self.isolation == "bwrap" or self._others_can_run() or self._view is not None)
        if _is_root() and not self._drop and not self.guard:  # Landlock does not bound processes
            raise ConfigError("refusing to run sandboxed programs as root with neither bubblewrap nor the "
                              "guard: the kernel does not limit root's processes")
        if _is_root() and not self._drop:
            self._warn_once(
                "root",
                "the sandbox runs programs as uid 0 without capabilities (the interpreter is not readable by "
                "'nobody', no read-only view of it could be mounted, and bubblewrap is not in use): resource "
                "limits, the in-process guard"
                + (" and Landlock (files, TCP, signals) apply" if self.landlock else
                   " only apply (this kernel has no Landlock)"),
            )

    # -- choosing the isolation level -------------------------------------

    def _choose(self, requested: str) -> tuple[str, str | None]:
        """The level, and why bubblewrap is not used where auto fell back (warned about once the
        fallback's layers are known)."""
        if requested == "rlimits":
            return "rlimits", None
        why = self._bwrap_problem()
        if why is None:
            return "bwrap", None
        if requested == "bwrap":
            raise ConfigError(f"sandbox isolation 'bwrap' is not usable here: {why}")
        return "rlimits", why

    def _bwrap_problem(self) -> str | None:
        """None if bubblewrap runs a trivial program here, else the reason it does not."""
        key = (self.python, _is_root())
        with _probe_lock:
            if key in _probed:
                return _probed[key]
        if shutil.which("bwrap") is None:
            why: str | None = "the 'bwrap' command is not installed"
        else:
            probe = Sandbox.__new__(Sandbox)
            probe.limits, probe.python, probe._interp = Limits(timeout_s=30), self.python, self._interp
            probe.isolation, probe.guard, probe._drop, probe.landlock = "bwrap", False, _is_root(), False
            probe.seccomp, probe._view = False, None
            try:
                r = probe.run("import sys\nprint(sys.version_info[0])", ["assert 1 + 1 == 2"])
                ok = r.all_passed and r.stdout.strip() == "3"
                last = (r.stderr.strip().splitlines() or [r.load_error or "no output"])[-1]
                why = None if ok else f"bwrap failed: {last}"
            except OSError as exc:
                why = f"bwrap failed: {exc}"
        with _probe_lock:
            _probed[key] = why
        return why

    def _others_can_run(self) -> bool:
        return _others_can_use([self.python, *self._interp.prefixes])

    @staticmethod
    def _warn_once(key: str, message: str) -> None:
        with _probe_lock:
            if key in _warned:
                return
            _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=4)

    # -- running ------------------------------------------------------------

    def run(self, program: str, tests: Sequence[str] = (), setup: str = "",
            probes: Sequence[str] = (), *, entry_point: str | None = None) -> RunResult:
        """Run ``program``, then ``setup``, then each of ``tests``, in one fresh sandbox.

        The program runs as module ``solution`` (so an ``if __name__ ==
        "__main__"`` block does not run) in a process of its own; setup and
        tests run in the harness's process, where the program never runs, and
        see its globals as plain values and its functions as calls into its
        process: arguments and results cross as plain data (exact types; an
        iterator a function returns crosses as the values it yields), and a
        list, dict or set a call changed is changed for the test too. A test
        that passes anything else (a lambda, an object of the program's own
        class) fails. ``entry_point`` is the one program name that may shadow
        a Python builtin in the tests. Each step gets ``step_timeout_s`` (a
        SIGALRM inside the sandbox; a program that overruns it is ended and
        started afresh for the next test), the whole run ``timeout_s`` of
        wall clock, after which everything it started is killed. Never raises
        because of what the program does.

        ``probes`` are expressions evaluated after the tests; each one's value
        comes back in :attr:`RunResult.values` as plain data (exact types:
        None, bool, int, float, str, list, tuple, set, frozenset, dict), or as
        an error, so a caller can judge it in its own process, out of the
        program's reach (see :mod:`cope.tasks.assertions`).
        """
        tests = [str(t) for t in tests]
        probes = [str(p) for p in probes]
        lim = self.limits
        nonce = secrets.token_hex(16)
        work_host = None
        mounted = False
        t0 = time.perf_counter()
        try:
            if self.isolation == "bwrap":
                work = _BOX_WORK
            else:
                work_host = tempfile.mkdtemp(prefix="cope-work-")
                work = work_host
                mounted = _mount_quota(work_host, lim.disk_mb)  # the run's total disk, where root may mount
                if self._drop:
                    os.chown(work_host, _NOBODY, _NOBODY)
            # files without a name (the job, with the run's nonce, and the result channel): there is
            # no path that a program could open to read the one or write into the other
            files = {name: tempfile.TemporaryFile(mode="w+b", prefix="cope-sandbox-")
                     for name in ("job", "out", "err", "res")}
            try:
                job = {
                    "nonce": nonce,
                    "results_fd": files["res"].fileno(),
                    "rlimits": self._rlimits(),
                    "drop": [_NOBODY, _NOBODY] if self._drop else None,
                    "guard": self.guard,
                    "guard_src": _GUARD,
                    "landlock": self.landlock,
                    "drop_caps": _is_root() and not self._drop,
                    "seccomp": self.seccomp,
                    "seccomp_src": _SECCOMP,
                    "landlock_src": _LANDLOCK,
                    "work": work,
                    "read_roots": self._read_roots(),
                    "write_roots": [],
                    "step_timeout": min(lim.step_timeout_s, lim.timeout_s),
                    "program": program,
                    "setup": setup,
                    "tests": tests,
                    "probes": probes,
                    "entry_point": entry_point,
                    "path": list(self._view.path) if self._view is not None else None,
                    "server_src": _SERVER,
                    "plain_src": _PLAIN,
                    "message_cap": _MESSAGE_CAP,
                }
                files["job"].write(json.dumps(job).encode("utf-8"))
                files["job"].seek(0)
                argv, cwd = self._argv(work, nonce)
                proc = subprocess.Popen(
                    argv, stdin=files["job"], stdout=files["out"], stderr=files["err"],
                    pass_fds=(files["res"].fileno(),), cwd=cwd, env=_scrubbed_env(work),
                    start_new_session=True, close_fds=True,
                )
                timed_out = self._wait_and_kill(proc, lim.timeout_s)
                _reap(argv[-1])
                returncode = proc.returncode
                records = self._records(files["res"], nonce)
                stdout = self._read_capped(files["out"])
                stderr = self._read_capped(files["err"])
            finally:
                for f in files.values():
                    f.close()
        finally:
            if work_host:
                if mounted:
                    _unmount(work_host)
                _force_rmtree(work_host)
        result = self._result(records, tests, timed_out, returncode, stdout, stderr, time.perf_counter() - t0)
        result.values = _probe_values(records, len(probes), result)
        result.info["marker"] = argv[-1]  # in the command line of every process of this run
        result.info["disk_quota"] = self.isolation == "bwrap" or mounted
        return result

    def _rlimits(self) -> list[tuple[str, int, int]]:
        lim = self.limits
        mb = 1024 * 1024
        # RLIMIT_NPROC counts every process of the (real) user. In a user
        # namespace (bubblewrap, not root) that is only the sandbox's; as
        # 'nobody' or as the caller it includes what already runs.
        # The harness itself is two processes, the judge and the program's
        # (plus bubblewrap's init inside a user namespace).
        if self.isolation == "bwrap" and not _is_root():
            nproc = lim.processes + 3
        else:
            uid = _NOBODY if self._drop else os.getuid()
            nproc = _count_tasks(uid) + lim.processes + 2
        cpu = int(lim.cpu_s)
        return [
            ("RLIMIT_CORE", 0, 0),
            ("RLIMIT_CPU", cpu, cpu + 1),
            ("RLIMIT_AS", int(lim.memory_mb * mb), int(lim.memory_mb * mb)),
            ("RLIMIT_FSIZE", int(lim.file_size_mb * mb), int(lim.file_size_mb * mb)),
            ("RLIMIT_NOFILE", int(lim.open_files), int(lim.open_files)),
            ("RLIMIT_NPROC", nproc, nproc),
        ]

    def _read_roots(self) -> list[str]:
        """What the guard lets a program read besides its working directory."""
        roots = {"/usr", "/lib", "/lib64", "/lib32", "/bin", "/etc/localtime", "/dev/null", "/dev/zero",
                 "/dev/urandom", "/dev/random", "/proc/meminfo", "/proc/cpuinfo"}
        interp = self._view.interpreter if self._view is not None else self._interp
        for p in (*interp.prefixes, *interp.path, os.path.dirname(interp.executable)):
            roots.add(os.path.abspath(p))
        roots |= {os.path.realpath(r) for r in list(roots) if os.path.exists(r)}
        return sorted(roots)

    def _argv(self, work: str, nonce: str) -> tuple[list[str], str]:
        python = self._view.interpreter.executable if self._view is not None else self.python
        cmd = [python, "-I", "-c", _HARNESS, f"cope-sandbox-{nonce[:12]}"]
        if self.isolation != "bwrap":
            return cmd, work
        lim = self.limits
        a = ["bwrap", "--die-with-parent", "--unshare-pid", "--unshare-net",
             "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
        if not _is_root():
            a.append("--unshare-user")
        a += ["--ro-bind", "/usr", "/usr"]
        for d in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
            if os.path.islink(d):
                a += ["--symlink", os.readlink(d), d]
            elif os.path.isdir(d):
                a += ["--ro-bind", d, d]
        for f in ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime",
                  "/etc/alternatives", "/etc/passwd", "/etc/group"):
            a += ["--ro-bind-try", f, f]
        # The tmpfs mounts come first, so an interpreter that lives under /tmp
        # is bound on top of them rather than hidden by them.
        size = str(int(lim.disk_mb * 1024 * 1024))
        a += ["--proc", "/proc", "--dev", "/dev",
              "--size", size, "--perms", "1777", "--tmpfs", "/tmp",
              "--size", size, "--perms", "1777", "--tmpfs", work]
        # bwrap creates missing parents with mode 0700, which would lock out
        # 'nobody': create them world-searchable first.
        made: set[str] = {"/usr", "/etc", "/tmp"}
        for src, dest in _python_binds(self._interp):
            for anc in _ancestors(dest):
                if anc not in made and not anc.startswith("/usr/"):
                    a += ["--perms", "0755", "--dir", anc]
                    made.add(anc)
            a += ["--ro-bind", src, dest]
            made.add(dest)
        a += ["--chdir", work, "--clearenv"]
        for k, v in _scrubbed_env(work).items():
            a += ["--setenv", k, v]
        return a + cmd, "/"

    @staticmethod
    def _wait_and_kill(proc: subprocess.Popen, timeout: float) -> bool:
        """Wait up to ``timeout``; then kill the whole process group and reap. True if it timed out.

        The leader is not reaped before the group is killed, so its group id
        cannot be reused by an unrelated process in between.
        """
        deadline = time.monotonic() + timeout
        timed_out = True
        pidfd = None
        try:
            pidfd = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):
            pidfd = None
        try:
            if pidfd is not None:
                poller = select.poll()
                poller.register(pidfd, select.POLLIN)
                while True:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    if poller.poll(max(1, int(left * 1000))):
                        timed_out = False
                        break
            else:
                pause = 0.002
                while time.monotonic() < deadline:
                    info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
                    if info is not None:
                        timed_out = False
                        break
                    time.sleep(pause)
                    pause = min(pause * 2, 0.05)
        finally:
            if pidfd is not None:
                os.close(pidfd)
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait()
        return timed_out

    def _read_capped(self, f) -> str:
        cap = int(self.limits.output_bytes)
        f.seek(0)
        data = f.read(cap + 1)
        text = data[:cap].decode("utf-8", "replace")
        return text + ("\n[output truncated]" if len(data) > cap else "")

    @staticmethod
    def _records(f, nonce: str) -> list[dict]:
        f.seek(0)
        tag = nonce.encode("ascii")
        out = []
        for line in f.read().splitlines():
            if line.startswith(tag):
                try:
                    rec = json.loads(line[len(tag):])
                except ValueError:
                    continue
                if isinstance(rec, dict):
                    out.append(rec)
        return out

    def _result(self, records: list[dict], tests: list[str], timed_out: bool,
                returncode: int | None, stdout: str, stderr: str, duration: float) -> RunResult:
        n = len(tests)
        passed = [False] * n
        if timed_out:
            missing = f"not run: the run exceeded {self.limits.timeout_s:g}s"
        elif returncode and returncode < 0:
            missing = f"not run: the program was killed by {_signal_name(-returncode)}"
        else:
            missing = "not run: the program ended the run early"
        errors = [missing] * n
        load_error: str | None = None
        for rec in records:
            kind = rec.get("k")
            err = str(rec.get("err") or "")
            if kind == "load":
                load_error = err
            elif kind == "setup" and err:
                errors = [f"not run: setup failed: {err}"] * n
            elif kind == "test":
                i = rec.get("i")
                if isinstance(i, int) and 0 <= i < n:
                    passed[i] = not err
                    errors[i] = err
            elif kind == "fatal":
                load_error = f"sandbox error: {err}"
        if load_error is None:
            load_error = missing.replace("not run: ", "")
        loaded = load_error == ""
        if not loaded:
            errors = [f"not run: the program failed: {load_error}"] * n
            passed = [False] * n
        return RunResult(loaded=loaded, passed=passed, errors=errors, load_error=load_error,
                         timed_out=timed_out, returncode=returncode, stdout=stdout, stderr=stderr,
                         duration_s=duration, isolation=self.isolation,
                         info={"guard": self.guard, "dropped_root": self._drop,
                               "interpreter_view": self._view is not None,
                               "landlock": next((r.get("abi") for r in records if r.get("k") == "landlock"), 0),
                               "seccomp": any(r.get("k") == "seccomp" for r in records)})


_shared: dict[Limits | None, Sandbox] = {}
_default_lock = threading.Lock()


def default_sandbox(limits: Limits | None = None) -> Sandbox:
    """A process-wide sandbox per set of limits (default: the code family's), built on first use.

    Building one chooses the isolation, which probes bubblewrap; sharing it
    means the probe runs once, whichever family runs programs.
    """
    with _default_lock:
        if limits not in _shared:
            _shared[limits] = Sandbox(limits) if limits is not None else Sandbox()
        return _shared[limits]


_landlock_abi: int | None = None


def landlock_abi() -> int:
    """The Landlock ABI version this kernel offers (0: none, or not Linux)."""
    global _landlock_abi
    if _landlock_abi is None:
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.syscall.restype = ctypes.c_long
            v = libc.syscall(444, None, ctypes.c_size_t(0), ctypes.c_uint32(1)) if sys.platform == "linux" else -1
            _landlock_abi = max(0, int(v))
        except (OSError, AttributeError):
            _landlock_abi = 0
    return _landlock_abi


def isolation_status() -> dict[str, object]:
    """Which isolation the default sandbox uses, and why: for reports and ``cope`` diagnostics."""
    sb = default_sandbox()
    return {
        "isolation": sb.isolation,
        "guard": sb.guard,
        "landlock": landlock_abi() if sb.landlock else 0,
        "runs_as_root": _is_root() and not sb._drop,
        "bwrap_problem": _probed.get((sb.python, _is_root())),
    }
