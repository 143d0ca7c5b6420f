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
    interpreter ``nobody`` can read; if it cannot (say, Python under a
    private home directory), the program stays uid 0 with every capability
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

Faking results: tests that run inside the program's interpreter can be
faked by it (an always-equal object, a forged result record). The harness
binds ``exec`` and ``compile`` before the program runs, so patching them
does nothing, and ``probes`` let a caller take a test's calls' values out as
plain data and judge them in its own process, where the program never ran
and never saw the expected values (the code task does so for tests of the
``assert f(x) == y`` shape; see cope.tasks.assertions). Tests of other shapes
still run inside, where a program that walks the interpreter's frames to the
harness can forge their records.
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
from dataclasses import dataclass, field
from typing import Sequence

from .errors import ConfigError

__all__ = ["ISOLATIONS", "Limits", "RunResult", "Sandbox", "default_sandbox", "isolation_status"]

ISOLATIONS = ("auto", "bwrap", "rlimits")
_ENV_VAR = "COPE_SANDBOX"
# Where the private tmpfs working directory appears inside a bubblewrap sandbox.
_BOX_WORK = "/sandbox"
_NOBODY = 65534


@dataclass(frozen=True)
class Limits:
    """Bounds on one run. All are enforced by the kernel except ``step_timeout_s``.

    ``processes`` counts processes and threads a program may add; with the
    address-space cap it bounds the worst case of a fork-and-allocate bomb to
    about ``processes x memory_mb``, so keep the product small on a shared
    machine. ``disk_mb`` caps the private tmpfs (bubblewrap; in the fallback
    where root may mount one).
    """

    timeout_s: float = 10.0  # wall clock for the whole run
    step_timeout_s: float = 5.0  # loading the program, and each test
    cpu_s: int = 10
    memory_mb: int = 512
    processes: int = 8
    file_size_mb: int = 16
    disk_mb: int = 64
    open_files: int = 64
    output_bytes: int = 64 * 1024  # stdout / stderr kept per run

    def __post_init__(self) -> None:
        for name in ("timeout_s", "step_timeout_s", "cpu_s", "memory_mb", "processes",
                     "file_size_mb", "disk_mb", "open_files", "output_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(f"sandbox limit {name} must be a positive number, got {value!r}")
        if self.memory_mb < 64:
            raise ConfigError(f"sandbox limit memory_mb must be >= 64 (Python needs it to start), got {self.memory_mb}")
        if self.open_files < 16:
            raise ConfigError(f"sandbox limit open_files must be >= 16, got {self.open_files}")


@dataclass
class RunResult:
    """What one run did: whether the program loaded, which tests passed, and how it ended.

    ``passed[i]`` / ``errors[i]`` belong to ``tests[i]`` of the call; a test
    that never got to run (the program failed to load, the run was killed)
    counts as failed with an explanatory error. ``info`` says whether the
    guard was on, whether root was dropped, and the run's ``marker`` (a
    string in the command line of each of its processes).
    """

    loaded: bool
    passed: list[bool]
    errors: list[str]
    load_error: str
    timed_out: bool
    returncode: int | None
    stdout: str
    stderr: str
    duration_s: float
    isolation: str
    info: dict[str, object] = field(default_factory=dict)
    # one (True, value) or (False, error) per probe of the call
    values: list[tuple[bool, object]] = field(default_factory=list)

    @property
    def n_passed(self) -> int:
        return sum(self.passed)

    @property
    def all_passed(self) -> bool:
        """Loaded, and every test passed (vacuously true with no tests)."""
        return self.loaded and all(self.passed)


# ---------------------------------------------------------------------------
# The program that runs inside the sandbox. It reads one JSON job from stdin,
# limits itself, drops privileges, optionally installs the guard, then runs
# the program, the setup and each test in one namespace, reporting a JSON
# line per step on a private file descriptor. Kept to the standard library.
# ---------------------------------------------------------------------------

_GUARD = r'''
def _install_guard(work, read_roots, write_roots):
    import posix, sys, types
    pid = posix.getpid()
    read_roots = tuple(read_roots) + (work, "/proc/%d" % pid)
    write_roots = tuple(write_roots) + (work,)
    deny = frozenset((
        "os.fork", "os.forkpty", "os.system", "os.posix_spawn", "os.posix_spawnp",
        "os.startfile", "subprocess.Popen", "pty.spawn", "resource.setrlimit",
        "resource.prlimit", "gc.get_objects", "gc.get_referrers", "gc.get_referents",
        "sys._current_frames", "os.setns", "os.unshare", "signal.pthread_kill",
    ))
    deny_prefix = ("ctypes.", "socket.", "os.exec", "os.spawn", "_winapi.", "winreg.")
    deny_import = frozenset(("ctypes", "_ctypes", "_posixsubprocess", "cffi", "_cffi_backend"))
    # event -> (indices of paths that must be writable, indices of dir_fd arguments)
    writes = {
        "os.remove": ((0,), (1,)), "os.rmdir": ((0,), (1,)), "os.mkdir": ((0,), (2,)),
        "os.rename": ((0, 1), (2, 3)), "os.link": ((0, 1), (2, 3)), "os.symlink": ((1,), (2,)),
        "os.truncate": ((0,), ()), "os.chmod": ((0,), (2,)), "os.chown": ((0,), (3,)),
        "os.utime": ((0,), (3,)), "os.chflags": ((0,), ()), "os.lchflags": ((0,), ()),
        "os.setxattr": ((0,), ()), "os.removexattr": ((0,), ()), "shutil.copyfile": ((1,), ()),
        "shutil.copymode": ((1,), ()), "shutil.copystat": ((1,), ()), "shutil.copytree": ((1,), ()),
        "shutil.move": ((0, 1), ()), "shutil.rmtree": ((0,), ()), "shutil.chown": ((0,), ()),
        "shutil.unpack_archive": ((1,), ()), "shutil.make_archive": ((0,), ()),
        "tempfile.mkstemp": ((0,), ()), "tempfile.mkdtemp": ((0,), ()),
    }
    write_flags = posix.O_WRONLY | posix.O_RDWR | posix.O_APPEND | posix.O_CREAT | posix.O_TRUNC
    protected = ("__code__", "__defaults__", "__kwdefaults__")

    def resolve(path, _cwd=posix.getcwd, _lstat=posix.lstat, _readlink=posix.readlink,
                _type=type, _str=str, _bytes=bytes, _int=int):
        # The real path, resolved with C functions captured now, so that a
        # program that patches os.path or builtins cannot steer the check.
        # Only plain str/bytes paths: an object's __fspath__ could answer the
        # check with one path and the open with another.
        t = _type(path)
        if t is _int:
            return None
        if t is not _str and t is not _bytes:
            raise PermissionError("sandbox: paths must be str or bytes here")
        if t is _bytes:
            path = _bytes.decode(path, "utf-8", "surrogateescape")
        if "\x00" in path:
            raise PermissionError("sandbox: bad path")
        if not path.startswith("/"):
            path = _cwd() + "/" + path
        todo = path.split("/")
        todo.reverse()
        done = ""
        hops = 0
        while todo:
            name = todo.pop()
            if name == "" or name == ".":
                continue
            if name == "..":
                done = done[: done.rfind("/")]
                continue
            cand = done + "/" + name
            try:
                st = _lstat(cand)
            except OSError:
                done = cand
                continue
            if st.st_mode & 0o170000 == 0o120000:
                hops += 1
                if hops > 40:
                    raise PermissionError("sandbox: too many symbolic links")
                target = _readlink(cand)
                if target.startswith("/"):
                    done = ""
                parts = target.split("/")
                parts.reverse()
                todo.extend(parts)
            else:
                done = cand
        return done or "/"

    def under(path, roots):
        for root in roots:
            if path == root or path.startswith(root + "/") or root == "/":
                return True
        return False

    def hook(event, args, _resolve=resolve, _under=under, _deny=deny, _prefix=deny_prefix,
             _imports=deny_import, _writes=writes, _rroots=read_roots, _wroots=write_roots,
             _flags=write_flags, _protected=protected, _pid=pid, _type=type, _str=str,
             _len=len, _getattr=getattr, _stat=posix.stat, _readlink=posix.readlink, _guard=None):
        if event in _deny or event.startswith(_prefix):
            raise PermissionError("sandbox: %s is not allowed" % event)
        if event == "open":
            path, mode, flags = args
            real = _resolve(path)
            if real is None:
                return
            wants_write = (flags or 0) & _flags or (_type(mode) is _str and (
                "w" in mode or "a" in mode or "x" in mode or "+" in mode))
            if _under(real, _wroots) or real == "/dev/null":
                return
            if not wants_write and _under(real, _rroots):
                try:
                    is_dir = _stat(real).st_mode & 0o170000 == 0o040000
                except OSError:
                    is_dir = False
                if not is_dir:  # a directory fd would let dir_fd= calls write beside it
                    return
            raise PermissionError("sandbox: access to %s is not allowed" % real)
        spec = _writes.get(event)
        if spec is not None:
            paths, dirfds = spec
            for k in range(_len(paths)):
                i = paths[k]
                if i >= _len(args):
                    continue
                path = args[i]
                j = dirfds[k] if k < _len(dirfds) else None
                fd = args[j] if j is not None and j < _len(args) else None
                if fd is not None and fd != -1 and fd != -100 and _type(path) is _str and not path.startswith("/"):
                    # relative to a directory descriptor: the kernel knows where it points
                    path = _readlink("/proc/self/fd/%d" % fd) + "/" + path
                real = _resolve(path)
                if real is not None and not _under(real, _wroots):
                    raise PermissionError("sandbox: writing %s is not allowed" % real)
            return
        if event == "import":
            if args[0] in _imports:
                raise ImportError("sandbox: module %s is not available" % args[0])
            return
        if event == "os.kill" or event == "os.killpg":
            if args[0] != _pid:
                raise PermissionError("sandbox: signalling other processes is not allowed")
            return
        if event == "object.__setattr__" or event == "object.__delattr__":
            if args[1] in _protected and _guard is not None:
                code = _getattr(args[0], "__code__", None)
                if code in _guard:
                    raise PermissionError("sandbox: the guard cannot be changed")

    # Rebuild the hook with its own code among the defaults: a default tuple
    # cannot be reassigned from outside (the guard refuses that event).
    d = list(hook.__defaults__)
    d[-1] = frozenset((hook.__code__, resolve.__code__, under.__code__))
    final = types.FunctionType(hook.__code__, hook.__globals__, "hook", tuple(d))
    sys.addaudithook(final)
    for name in list(sys.modules):
        if name in deny_import or name.startswith("ctypes."):
            del sys.modules[name]
'''

# Landlock (Linux >= 5.13): a kernel wall for the filesystem, TCP and signals that an
# unprivileged process puts around itself; it holds for root too and cannot be undone. Applied
# by the harness in the fallback, after privileges are dropped and before the program runs.
_LANDLOCK = r'''
def _landlock(read_roots, write_roots, devices):
    import ctypes, os, struct
    libc = ctypes.CDLL(None, use_errno=True)
    sc = libc.syscall
    sc.restype = ctypes.c_long
    abi = sc(444, None, ctypes.c_size_t(0), ctypes.c_uint32(1))  # LANDLOCK_CREATE_RULESET_VERSION
    if abi < 1:
        return 0
    fs = (1 << 13) - 1  # execute .. make_sym
    if abi >= 2:
        fs |= 1 << 13  # refer
    if abi >= 3:
        fs |= 1 << 14  # truncate
    if abi >= 5:
        fs |= 1 << 15  # ioctl_dev
    net = 3 if abi >= 4 else 0  # bind_tcp, connect_tcp: no rule, so none
    scoped = 3 if abi >= 6 else 0  # abstract unix sockets, signals: not outside this sandbox
    attr = struct.pack("=QQQ", fs, net, scoped) if abi >= 4 else struct.pack("=Q", fs)
    buf = ctypes.create_string_buffer(attr, len(attr))
    rs = sc(444, buf, ctypes.c_size_t(len(attr)), ctypes.c_uint32(0))
    if rs < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset")
    file_rights = 1 | 2 | 4 | ((1 << 14) if abi >= 3 else 0)  # execute, write, read, truncate
    read = 1 | 4 | 8  # execute, read_file, read_dir
    # the program's own directory: everything but device nodes (make_char, make_block)
    write = fs & ~((1 << 6) | (1 << 11) | (1 << 15))

    def allow(path, rights):
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            return
        try:
            if not os.path.isdir(path):
                rights &= file_rights
            rule = ctypes.create_string_buffer(struct.pack("=Qi", rights & fs, fd), 12)
            if sc(445, ctypes.c_int(rs), ctypes.c_int(1), rule, ctypes.c_uint32(0)) < 0:
                raise OSError(ctypes.get_errno(), "landlock_add_rule " + path)
        finally:
            os.close(fd)

    for root in read_roots:
        allow(root, read)
    for root in write_roots:
        allow(root, write)
    for dev in devices:
        allow(dev, 2 | 4)  # /dev/null and friends: read and write, no ioctl
    if sc(446, ctypes.c_int(rs), ctypes.c_uint32(0)) < 0:
        raise OSError(ctypes.get_errno(), "landlock_restrict_self")
    os.close(rs)
    return abi
'''

# seccomp: a kernel filter on system calls, for what Landlock does not cover: sockets other
# than AF_UNIX (UDP, raw, netlink, ...) and io_uring (which could open them). x86_64 and
# aarch64 only (system call numbers differ by architecture); elsewhere nothing is filtered.
_SECCOMP = r'''
def _seccomp(no_processes):
    import ctypes, struct
    LD, JEQ, JGE, JSET, RET = 0x20, 0x15, 0x35, 0x45, 0x06
    ALLOW, DENY, NOSYS = 0x7fff0000, 0x00050000 | 13, 0x00050000 | 38  # SECCOMP_RET_ERRNO | EACCES, ENOSYS
    # (AUDIT_ARCH, socket, io_uring_setup, clone, clone3, fork and vfork)
    arches = ((0xC000003E, 41, 425, 56, 435, (57, 58)), (0xC00000B7, 198, 425, 220, 435, ()))
    prog = []  # (code, jt_label, jf_label, k), labels resolved below

    def op(code, k, jt=None, jf=None):
        prog.append([code, jt, jf, k])

    op(LD, 4)  # seccomp_data.arch
    for i, (arch, sock, uring, clone, clone3, forks) in enumerate(arches):
        op(JEQ, arch, "a%d" % i, "n%d" % i)
        prog.append("a%d" % i)
        op(LD, 0)  # nr
        if i == 0:
            op(JGE, 0x40000000, "deny", None)  # x32 system calls on x86_64
        op(JEQ, uring, "deny", None)
        if no_processes:
            # a program left as uid 0 is exempt from the process limit: it may start threads only
            for nr in forks:
                op(JEQ, nr, "deny", None)
            op(JEQ, clone3, "nosys", None)  # its flags sit behind a pointer: the C library falls back to clone
            op(JEQ, clone, "clone", None)
        op(JEQ, sock, "family", "allow")
        prog.append("n%d" % i)
    op(RET, ALLOW)
    prog.append("family")
    op(LD, 16)  # args[0], low 32 bits: the address family
    op(JEQ, 1, "allow", "deny")  # AF_UNIX only
    prog.append("clone")
    op(LD, 16)  # clone's flags
    op(JSET, 0x10000, "allow", "deny")  # CLONE_THREAD
    prog.append("allow")
    op(RET, ALLOW)
    prog.append("deny")
    op(RET, DENY)
    prog.append("nosys")
    op(RET, NOSYS)
    at, n = {}, 0
    for x in prog:
        if isinstance(x, str):
            at[x] = n
        else:
            n += 1
    code, n = [], 0
    for x in prog:
        if isinstance(x, str):
            continue
        c, jt, jf, k = x
        rel = lambda lab: 0 if lab is None else at[lab] - n - 1
        code.append(struct.pack("=HBBI", c, rel(jt), rel(jf), k))
        n += 1
    buf = ctypes.create_string_buffer(b"".join(code), 8 * n)
    fprog = struct.pack("=HxxxxxxQ", n, ctypes.addressof(buf))
    fbuf = ctypes.create_string_buffer(fprog, len(fprog))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(22, 2, fbuf, 0, 0) != 0:  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
        raise OSError(ctypes.get_errno(), "seccomp")
    return n
'''

_HARNESS = r'''
import os, sys

def _main():
    import builtins, json, resource, signal
    # Bound now, before any of the program runs: a program that replaces builtins.exec with a
    # no-op (so that every test "passes") or patches type() changes nothing the harness uses.
    _exec, _eval, _compile, _type, _len, _getattr = exec, eval, compile, type, len, getattr
    _bool, _int, _float, _str, _list, _tuple, _dict, _set, _frozenset = (
        bool, int, float, str, list, tuple, dict, set, frozenset)
    _int_repr, _float_repr, _items = int.__repr__, float.__repr__, dict.items
    job = json.loads(sys.stdin.buffer.read().decode("utf-8"))
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    out = job["results_fd"]
    tag = job["nonce"].encode("ascii")

    def report(rec, _write=os.write, _dumps=json.dumps, _getpid=os.getpid, _pid=os.getpid()):
        # A forked copy of the harness (a program that forks) must not report.
        if _getpid() != _pid:
            return
        try:
            _write(out, tag + _dumps(rec).encode("ascii") + b"\n")
        except Exception:
            pass

    for name, soft, hard in job["rlimits"]:
        inf = resource.RLIM_INFINITY
        resource.setrlimit(getattr(resource, name), (inf if soft < 0 else soft, inf if hard < 0 else hard))
    drop = job["drop"]
    if drop:
        os.setgroups([])
        os.setgid(drop[1])
        os.setuid(drop[0])
        if os.getuid() == 0 or os.geteuid() == 0:
            report({"k": "fatal", "err": "could not drop root privileges"})
            os._exit(70)
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS
        libc.prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG = SIGKILL
        del libc, ctypes
    except Exception:
        pass
    sys.dont_write_bytecode = True
    if job.get("drop_caps"):
        # still uid 0 (nobody could not run this interpreter): at least without root's powers,
        # so no module loading, mounts, raw sockets, setuid, chown or reading others' files
        try:
            import ctypes, struct
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(47, 4, 0, 0, 0)  # PR_CAP_AMBIENT_CLEAR_ALL
            for cap in range(64):
                libc.prctl(24, cap, 0, 0, 0)  # PR_CAPBSET_DROP
            hdr = ctypes.create_string_buffer(struct.pack("=Ii", 0x20080522, 0), 8)
            data = ctypes.create_string_buffer(24)
            if libc.capset(hdr, data) != 0:
                raise OSError(ctypes.get_errno(), "capset")
            del libc, ctypes
        except Exception as e:
            report({"k": "fatal", "err": "could not drop capabilities: %s" % e})
            os._exit(70)
    if job.get("landlock"):
        ll = {"__name__": "_landlock", "__builtins__": builtins}
        exec(job["landlock_src"], ll)
        try:
            abi = ll["_landlock"]([r for r in job["read_roots"] if not r.startswith("/dev/")], [job["work"]],
                                  ["/dev/null", "/dev/zero", "/dev/urandom", "/dev/random"])
        except Exception as e:
            report({"k": "fatal", "err": "landlock failed: %s" % e})
            os._exit(70)
        report({"k": "landlock", "abi": abi})
        del ll
    if job.get("seccomp"):
        sc = {"__name__": "_seccomp", "__builtins__": builtins}
        exec(job["seccomp_src"], sc)
        try:
            report({"k": "seccomp", "n": sc["_seccomp"](bool(job.get("drop_caps")))})
        except Exception as e:
            report({"k": "fatal", "err": "seccomp failed: %s" % e})
            os._exit(70)
        del sc
    if job["guard"]:
        guard = {"__name__": "_guard", "__builtins__": builtins}
        exec(job["guard_src"], guard)
        guard["_install_guard"](job["work"], job["read_roots"], job["write_roots"])
        del guard

    class _StepTimeout(BaseException):
        pass

    def _alarm(signum, frame):
        raise _StepTimeout()

    signal.signal(signal.SIGALRM, _alarm)
    step = float(job["step_timeout"])
    g = {"__name__": "solution", "__builtins__": builtins}

    def describe(e, names):
        try:
            signal.setitimer(signal.ITIMER_REAL, 1.0)
            try:
                msg = str(e)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except BaseException:
            msg = ""
        line = None
        tb = e.__traceback__
        while tb is not None:
            if tb.tb_frame.f_code.co_filename in names:
                line = tb.tb_lineno
            tb = tb.tb_next
        text = type(e).__name__ + (": " + msg[:300] if msg else "")
        return text + (" (line %d)" % line if line else "")

    def run(src, fname):
        try:
            code = _compile(src, fname, "exec")
        except SyntaxError as e:
            return "SyntaxError: %s (line %s)" % (e.msg, e.lineno)
        except BaseException as e:
            return describe(e, (fname,))
        try:
            signal.setitimer(signal.ITIMER_REAL, step)
            try:
                _exec(code, g)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except _StepTimeout:
            return "timeout after %gs" % step
        except BaseException as e:
            return describe(e, (fname, "<solution>"))
        return ""

    def encode(v, left, depth=0):
        # Plain data only, by exact type: an object with its own __eq__ (always True), a
        # subclass of int or str, anything callable, is not a value a test can be judged on.
        left[0] -= 1
        if left[0] < 0 or depth > 64:
            raise ValueError("the value is too large to judge")
        t = _type(v)
        if v is None:
            return ["n", 0]
        if t is _bool:
            return ["b", 1 if v else 0]
        if t is _int:
            return ["i", _int_repr(v)]
        if t is _float:
            return ["f", _float_repr(v)]
        if t is _str:
            left[0] -= _len(v) // 64
            return ["s", v]
        if t is _list or t is _tuple or t is _set or t is _frozenset:
            tag = "l" if t is _list else "t" if t is _tuple else "S" if t is _set else "F"
            return [tag, [encode(x, left, depth + 1) for x in v]]
        if t is _dict:
            return ["d", [[encode(k, left, depth + 1), encode(x, left, depth + 1)] for k, x in _items(v)]]
        if _str(_getattr(t, "__module__", "")).split(".")[0] == "numpy":
            # a NumPy scalar or array compares as its plain value; whatever .tolist() returns is
            # encoded as strictly again, so a class that only claims to be NumPy gains nothing
            conv = _getattr(v, "tolist", None) or _getattr(v, "item", None)
            if conv is not None:
                return encode(conv(), left, depth + 1)
        raise TypeError("the value is not plain data (None, bool, int, float, str, list, tuple, set, dict)")

    def probe(k, src):
        fname = "<probe %d>" % k
        try:
            code = _compile("(" + src + ")", fname, "eval")
        except BaseException as e:
            return {"k": "value", "i": k, "err": describe(e, (fname,))}
        try:
            signal.setitimer(signal.ITIMER_REAL, step)
            try:
                value = _eval(code, g)
                out_v = encode(value, [200000])
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except _StepTimeout:
            return {"k": "value", "i": k, "err": "timeout after %gs" % step}
        except BaseException as e:
            return {"k": "value", "i": k, "err": describe(e, (fname, "<solution>"))}
        return {"k": "value", "i": k, "v": out_v}

    err = run(job["program"], "<solution>")
    report({"k": "load", "err": err})
    if not err:
        if job["setup"]:
            err = run(job["setup"], "<setup>")
            report({"k": "setup", "err": err})
        if not err:
            for i, test in enumerate(job["tests"]):
                report({"k": "test", "i": i, "err": run(test, "<test %d>" % i)})
            for k, src in enumerate(job.get("probes") or ()):
                report(probe(k, src))
    report({"k": "done"})
    for stream in (sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except BaseException:
            pass
    os._exit(0)

try:
    _main()
except BaseException as e:
    try:
        sys.__stderr__.write("sandbox harness: %s: %s\n" % (type(e).__name__, e))
        sys.__stderr__.flush()
    except BaseException:
        pass
    os._exit(70)
'''


# ---------------------------------------------------------------------------
# The host side
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Interpreter:
    """Where an interpreter lives, as seen with ``-I``: what a sandbox must let it read."""

    executable: str
    prefixes: tuple[str, ...]
    path: tuple[str, ...]


_interpreters: dict[str, _Interpreter] = {}
_probe_lock = threading.Lock()
_probed: dict[tuple[str, bool], str | None] = {}  # (python, root) -> None if bwrap works, else why not
_warned: set[str] = set()


def _interpreter(python: str) -> _Interpreter:
    """Ask ``python`` (once per process) where its installation and import path are."""
    with _probe_lock:
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
    with _probe_lock:
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
        self.isolation = self._choose(requested)
        self.guard = (self.isolation == "rlimits") if guard is None else bool(guard)
        # The fallback's filesystem, network and signal wall, where the kernel has Landlock
        # (bubblewrap's namespaces already are one).
        self.landlock = (self.isolation == "rlimits" and landlock_abi() > 0
                         and os.environ.get("COPE_SANDBOX_LANDLOCK", "1") != "0")  # 0: off, to compare
        import platform

        self.seccomp = (self.isolation == "rlimits" and sys.platform == "linux"
                        and platform.machine() in ("x86_64", "aarch64")
                        and os.environ.get("COPE_SANDBOX_SECCOMP", "1") != "0")

        # Root ignores RLIMIT_NPROC, so programs drop to nobody. Bubblewrap
        # mounts the interpreter where nobody can reach it; the fallback can
        # drop only if nobody can already read the interpreter on the host.
        self._drop = _is_root() and (self.isolation == "bwrap" or self._others_can_run())
        if _is_root() and not self._drop and not self.guard:  # Landlock does not bound processes
            raise ConfigError("refusing to run sandboxed programs as root with neither bubblewrap nor the "
                              "guard: the kernel does not limit root's processes")
        if _is_root() and not self._drop:
            self._warn_once(
                "root",
                "the sandbox runs programs as uid 0 without capabilities (the interpreter is not readable by "
                "'nobody' and bubblewrap is not in use): resource limits, the in-process guard"
                + (" and Landlock (files, TCP, signals) apply" if self.landlock else
                   " only apply (this kernel has no Landlock)"),
            )

    # -- choosing the isolation level -------------------------------------

    def _choose(self, requested: str) -> str:
        if requested == "rlimits":
            return "rlimits"
        why = self._bwrap_problem()
        if why is None:
            return "bwrap"
        if requested == "bwrap":
            raise ConfigError(f"sandbox isolation 'bwrap' is not usable here: {why}")
        self._warn_once(
            "fallback",
            f"bubblewrap isolation is not available ({why}); sandboxed programs run with resource "
            "limits and an in-process guard only. Install bubblewrap (e.g. 'apt-get install "
            f"bubblewrap') for namespace isolation, or set {_ENV_VAR}=rlimits to silence this.",
        )
        return "rlimits"

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
            probe.seccomp = False
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
            probes: Sequence[str] = ()) -> RunResult:
        """Run ``program``, then ``setup``, then each of ``tests``, in one fresh sandbox.

        The program runs as module ``solution`` (so an ``if __name__ ==
        "__main__"`` block does not run); setup and tests see its globals.
        Each step gets ``step_timeout_s`` (a SIGALRM inside the sandbox), the
        whole run ``timeout_s`` of wall clock, after which everything it
        started is killed. Never raises because of what the program does.

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
        control = tempfile.mkdtemp(prefix="cope-sandbox-")
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
            files = {name: open(os.path.join(control, name), "w+b") for name in ("job", "out", "err", "res")}
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
            shutil.rmtree(control, ignore_errors=True)
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
        # The harness itself is one process (plus bubblewrap's init inside a
        # user namespace).
        if self.isolation == "bwrap" and not _is_root():
            nproc = lim.processes + 2
        else:
            uid = _NOBODY if self._drop else os.getuid()
            nproc = _count_tasks(uid) + lim.processes + 1
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
        for p in (*self._interp.prefixes, *self._interp.path, os.path.dirname(self.python)):
            roots.add(os.path.abspath(p))
        roots |= {os.path.realpath(r) for r in list(roots) if os.path.exists(r)}
        return sorted(roots)

    def _argv(self, work: str, nonce: str) -> tuple[list[str], str]:
        cmd = [self.python, "-I", "-c", _HARNESS, f"cope-sandbox-{nonce[:12]}"]
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
                               "landlock": next((r.get("abi") for r in records if r.get("k") == "landlock"), 0),
                               "seccomp": any(r.get("k") == "seccomp" for r in records)})


class _Bad(ValueError):
    pass


def _decode(x: object, depth: int = 0) -> object:
    """A probe's value from its tagged JSON, checked as strictly as it was encoded."""
    if depth > 70 or not isinstance(x, list) or len(x) != 2 or not isinstance(x[0], str):
        raise _Bad("malformed value record")
    tag, v = x
    if tag == "n":
        return None
    if tag == "b" and v in (0, 1):
        return bool(v)
    if tag == "i" and isinstance(v, str):
        return int(v)
    if tag == "f" and isinstance(v, str):
        return float(v)
    if tag == "s" and isinstance(v, str):
        return v
    if tag in ("l", "t", "S", "F") and isinstance(v, list):
        items = [_decode(e, depth + 1) for e in v]
        return {"l": list, "t": tuple, "S": set, "F": frozenset}[tag](items)
    if tag == "d" and isinstance(v, list):
        out = {}
        for pair in v:
            if not isinstance(pair, list) or len(pair) != 2:
                raise _Bad("malformed value record")
            out[_decode(pair[0], depth + 1)] = _decode(pair[1], depth + 1)
        return out
    raise _Bad("malformed value record")


def _probe_values(records: list[dict], n: int, result: "RunResult") -> list[tuple[bool, object]]:
    """(True, value) or (False, error) per probe; the first record of each counts."""
    if not result.loaded:
        return [(False, f"not run: the program failed: {result.load_error}")] * n
    missing = next((e for e in result.errors if e.startswith("not run")), None) or (
        "not run: the run exceeded its time limit" if result.timed_out else "not run: the program ended the run early")
    values: list[tuple[bool, object] | None] = [None] * n
    seen = [0] * n
    for rec in records:
        i = rec.get("i")
        if rec.get("k") == "value" and isinstance(i, int) and 0 <= i < n:
            seen[i] += 1
    for rec in records:
        i = rec.get("i")
        if rec.get("k") != "value" or not isinstance(i, int) or not 0 <= i < n or values[i] is not None:
            continue
        if seen[i] > 1:  # the harness writes one record per probe: another one is the program's
            values[i] = (False, "conflicting value records: the program wrote into the harness's channel")
            continue
        if "err" in rec:
            values[i] = (False, str(rec.get("err") or "error"))
            continue
        try:
            values[i] = (True, _decode(rec.get("v")))
        except (_Bad, ValueError, TypeError, RecursionError) as exc:
            values[i] = (False, f"unreadable value: {exc}")
    return [v if v is not None else (False, missing) for v in values]


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
