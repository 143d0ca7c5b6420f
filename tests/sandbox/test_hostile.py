"""Hostile programs against the sandbox's fallback level (no bubblewrap), with and without its guard.

Each program tries one of the escapes a hostile-input battery found, aimed
at real host files and processes this test creates; it must fail. Landlock
(the kernel's wall) is what holds when the in-process guard is switched
off, so those runs need a kernel that has it and are skipped elsewhere.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from cope.sandbox import Limits, Sandbox, landlock_abi

pytestmark = pytest.mark.timeout(120)

LEVELS = [pytest.param(True, id="guard+landlock"),
          pytest.param(False, id="landlock-alone",
                       marks=pytest.mark.skipif(landlock_abi() < 1, reason="this kernel has no Landlock"))]


@pytest.fixture
def host(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("host-secret-7f3a")
    (tmp_path / "listed-name-9c1e").write_text("")
    return tmp_path


def box(guard: bool) -> Sandbox:
    """The fallback; with ``guard`` False the guard is switched off after construction (as root it
    cannot be refused otherwise), so only Landlock and the limits stand: a guard defeated."""
    if not guard and landlock_abi() < 1:
        pytest.skip("no Landlock")
    sb = Sandbox(Limits(timeout_s=20), isolation="rlimits")
    sb.guard = guard
    return sb


def ran(sb: Sandbox, program: str) -> str:
    r = sb.run(program)
    return r.stdout + r.stderr + r.load_error


@pytest.mark.parametrize("guard", LEVELS)
def test_dir_fd_after_chdir_cannot_read_a_host_file(host, guard):
    depth = len(os.path.realpath(host).strip("/").split("/"))
    program = f"""
import json
import os
fd = os.open(".", os.O_RDONLY)
os.makedirs("a/b/c/d/e/f/g/h", exist_ok=True)
os.chdir("a/b/c/d/e/f/g/h")
rel = "../" * 40 + {str(host).lstrip('/')!r} + "/secret.txt"
try:
    print(os.read(os.open(rel, os.O_RDONLY, dir_fd=fd), 100))
except OSError as e:
    print("denied", e.errno)
try:
    print(open(rel).read())
except OSError as e:
    print("denied", e.errno)
"""
    out = ran(box(guard), program)
    assert "host-secret-7f3a" not in out and "denied" in out, out
    assert depth >= 1


@pytest.mark.parametrize("guard", LEVELS)
def test_host_directories_cannot_be_listed_or_written(host, guard):
    program = f"""
import json
import os
for act in (lambda: os.listdir({str(host)!r}), lambda: open({str(host / 'planted')!r}, "w").write("x"),
            lambda: os.mkfifo({str(host / 'fifo')!r}), lambda: os.listdir("/root"),
            lambda: open("/proc/1/environ", "rb").read()):
    try:
        print("got", act())
    except BaseException as e:
        print("denied", type(e).__name__)
"""
    out = ran(box(guard), program)
    assert "listed-name-9c1e" not in out and out.count("denied") == 5, out
    assert not (host / "planted").exists() and not (host / "fifo").exists()


@pytest.mark.parametrize("guard", LEVELS)
def test_no_device_node_even_in_its_own_directory(guard):
    program = """
import os, stat
try:
    os.mknod("mem", stat.S_IFCHR | 0o600, os.makedev(1, 1))
    print("made", open("mem", "rb").read(4))
except BaseException as e:
    print("denied", type(e).__name__)
"""
    out = ran(box(guard), program)
    assert "made" not in out and "denied" in out, out


@pytest.mark.parametrize("guard", LEVELS)
def test_a_host_process_cannot_be_signalled(guard):
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        program = f"""
import os, signal
for act in (lambda: signal.pidfd_send_signal(os.pidfd_open({victim.pid}), signal.SIGKILL),
            lambda: os.kill({victim.pid}, signal.SIGKILL), lambda: os.kill({os.getpid()}, signal.SIGTERM)):
    try:
        act()
        print("sent")
    except BaseException as e:
        print("denied", type(e).__name__)
"""
        out = ran(box(guard), program)
        time.sleep(0.3)
        assert victim.poll() is None, out  # alive
        assert "sent" not in out, out
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)


@pytest.mark.parametrize("guard", LEVELS)
def test_no_tcp_connection_to_the_host(guard):
    import socket

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.settimeout(0.5)
    port = srv.getsockname()[1]
    try:
        program = f"""
import socket
try:
    s = socket.create_connection(("127.0.0.1", {port}), timeout=2)
    s.sendall(b"hello")
    print("connected")
except BaseException as e:
    print("denied", type(e).__name__)
"""
        out = ran(box(guard), program)
        assert "connected" not in out and "denied" in out, out
        with pytest.raises(OSError):
            srv.accept()
    finally:
        srv.close()


def test_the_fallback_still_runs_ordinary_programs():
    sb = Sandbox(Limits(timeout_s=20), isolation="rlimits")
    r = sb.run("import json, math, tempfile, os\n"
               "with tempfile.NamedTemporaryFile('w', delete=False) as f:\n    f.write('ok')\n"
               "print(open(f.name).read(), math.sqrt(16))\n", ["assert 1 + 1 == 2"])
    assert r.all_passed and "ok 4.0" in r.stdout, (r.load_error, r.stderr)
    if landlock_abi() >= 1:
        assert r.info["landlock"] == landlock_abi()


def test_a_program_left_as_root_has_no_root_powers(monkeypatch):
    """Where the interpreter cannot run as nobody, the program stays uid 0 but without capabilities."""
    if os.geteuid() != 0:
        pytest.skip("only a root caller can leave a program as root")
    monkeypatch.setenv("COPE_SANDBOX_VIEW", "0")  # no read-only view of the interpreter for nobody
    sb = Sandbox(Limits(timeout_s=20), isolation="rlimits")
    if sb._drop:
        pytest.skip("this interpreter runs as nobody: nothing stays root")
    sb.guard = False  # the kernel's answer, not the guard's
    program = """
import json
import os
for name, act in (("setuid", lambda: os.setuid(12345)), ("chown", lambda: os.chown(".", 12345, 12345)),
                  ("setgroups", lambda: os.setgroups([0, 12345]))):
    try:
        act()
        print("ESCAPED", name)
    except PermissionError:
        print("refused", name)
"""
    r = sb.run(program)
    assert "ESCAPED" not in r.stdout and r.stdout.count("refused") == 3, (r.stdout, r.load_error, r.stderr)


@pytest.mark.parametrize("guard", LEVELS)
def test_no_udp_or_raw_socket_to_the_host(guard):
    import socket

    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(0.5)
    port = udp.getsockname()[1]
    try:
        program = f"""
import socket
for fam, kind in ((socket.AF_INET, socket.SOCK_DGRAM), (socket.AF_INET6, socket.SOCK_DGRAM),
                  (socket.AF_INET, socket.SOCK_RAW), (socket.AF_NETLINK, socket.SOCK_RAW)):
    try:
        s = socket.socket(fam, kind)
        s.sendto(b"ESCAPED", ("127.0.0.1", {port}))
        print("sent")
    except BaseException as e:
        print("denied", type(e).__name__)
"""
        sb = box(guard)
        if not guard and not sb.seccomp:
            pytest.skip("no seccomp filter on this architecture")
        out = ran(sb, program)
        assert "sent" not in out and out.count("denied") == 4, out
        with pytest.raises(OSError):
            udp.recvfrom(64)
    finally:
        udp.close()


def test_a_program_left_as_root_can_start_threads_but_no_processes(monkeypatch):
    """uid 0 is exempt from the process limit, so the kernel refuses it new processes (threads stay)."""
    if os.geteuid() != 0:
        pytest.skip("only a root caller can leave a program as root")
    monkeypatch.setenv("COPE_SANDBOX_VIEW", "0")  # no read-only view of the interpreter for nobody
    sb = Sandbox(Limits(timeout_s=20), isolation="rlimits")
    if sb._drop or not sb.seccomp:
        pytest.skip("nothing stays root here, or no seccomp filter on this architecture")
    sb.guard = False  # a fork bomb with the guard defeated: the kernel's answer
    program = """
import os, threading
t = threading.Thread(target=lambda: print("thread ran"))
t.start()
t.join()
n = 0
for _ in range(50):
    try:
        if os.fork() == 0:
            os._exit(0)
        n += 1
    except OSError:
        pass
print("forked", n)
"""
    r = sb.run(program)
    assert "thread ran" in r.stdout and "forked 0" in r.stdout, (r.stdout, r.load_error, r.stderr)



VIEW_RUN = r"""
import json, sys, warnings
warnings.simplefilter("ignore")
from cope.sandbox import Sandbox
sb = Sandbox(isolation="rlimits")
program = (
    "import os, sys\n"
    "print(os.getuid())\n"
    "import numpy\n"
    "try:\n"
    "    open(os.path.join(os.path.dirname(os.__file__), 'planted.py'), 'w')\n"
    "    print('WROTE')\n"
    "except OSError:\n"
    "    print('refused')\n"
)
sb.guard = False  # the kernel's answer (a read-only mount, Landlock), not the guard's
r = sb.run(program)
print(json.dumps({"view": sb._view.root if sb._view else None, "out": r.stdout.split(), "err": r.load_error}))
sys.stdout.flush()
if len(sys.argv) > 1:
    import os, signal
    os.kill(os.getpid(), signal.SIGKILL)  # no exit handlers: the view is left behind
"""


def _mounted(root: str) -> bool:
    with open("/proc/self/mounts") as f:
        return any(line.split()[1].startswith(root) for line in f)


def _view_run(*args: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "COPE_SANDBOX_VIEW"}
    run = subprocess.run([sys.executable, "-c", VIEW_RUN, *args], capture_output=True, text=True, timeout=120,
                         env=env)
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_root_runs_programs_as_nobody_through_a_view_of_a_private_interpreter():
    """The fallback, as root, with Python under a home only root can enter: programs still run as nobody."""
    from cope.sandbox.host import _interpreter, _others_can_use

    if os.geteuid() != 0:
        pytest.skip("only a root caller has programs to drop from root")
    if _others_can_use([sys.executable, *_interpreter(sys.executable).prefixes]):
        pytest.skip("nobody can read this interpreter already: no view is needed")
    out = _view_run()
    if out["view"] is None:
        pytest.skip("mounting is not allowed here: programs stay uid 0 without capabilities")
    # nobody, with the installed packages, and the installation is read-only to it
    assert out["out"] == ["65534", "refused"], out
    assert not os.path.exists(out["view"]) and not _mounted(out["view"])  # gone with its process
    # a process killed before its exit handlers leaves its view behind; the next one removes it
    left = _view_run("die")["view"]
    assert os.path.exists(left) and _mounted(left)
    assert _view_run()["out"] == ["65534", "refused"]
    assert not os.path.exists(left) and not _mounted(left)
