"""The project's hostile-program battery, at every isolation level this machine offers.

Each program tries one escape against real host resources this test sets up
(a secret file, a host directory, a victim process, a TCP and a UDP listener)
and prints ESCAPED if it got through; containment is judged on the host side
too (the victim alive, no planted file on the host, no listing of a host
directory, no datagram or connection at the host's listeners). What a program
does inside its own view (bubblewrap's private /tmp and process namespace)
is not an escape.
The last test prints the figure: programs contained per level.

Known gaps, marked xfail so they stay visible: without bubblewrap, and
without root to mount a size-capped tmpfs, there is no per-run disk quota
(the file-size limit bounds each file, not their total);
on a kernel without Landlock the fallback's guard alone lets four of these
through (``COPE_SANDBOX_LANDLOCK=0`` shows them on one that has it).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import warnings

import pytest

from cope.sandbox import Limits, Sandbox, disk_quota_available, landlock_abi

pytestmark = pytest.mark.timeout(120)

SECRET = "host-secret-5d2b"
RESULTS: dict[str, list[bool]] = {}


def _level_ok(level: str) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            Sandbox(Limits(), isolation=level)
    except Exception:  # noqa: BLE001 - a level this machine cannot offer
        return False
    return True


LEVELS = [lv for lv in ("bwrap", "rlimits") if _level_ok(lv)]

# name -> program; {host}, {secret}, {victim}, {tcp}, {udp}, {parent} are filled in
PROGRAMS: dict[str, str] = {
    "read /etc/shadow": "print('ESCAPED', open('/etc/shadow').read()[:20])",
    "read a host file by path": "print('ESCAPED', open('{secret}').read())",
    "read a host file via dir_fd after chdir": (
        "import os\nfd = os.open('.', os.O_RDONLY)\nos.makedirs('a/b/c/d/e/f', exist_ok=True)\n"
        "os.chdir('a/b/c/d/e/f')\nrel = '../' * 40 + '{secret}'.lstrip('/')\n"
        "print('ESCAPED', os.read(os.open(rel, os.O_RDONLY, dir_fd=fd), 64))"),
    "read a host file via a symlink": (
        "import os\nos.symlink('{secret}', 'link')\nprint('ESCAPED', open('link').read())"),
    "read a host file via a hard link": (
        "import os\nos.link('{secret}', 'hard')\nprint('ESCAPED', open('hard').read())"),
    "write a host file": "open('{host}/planted', 'w').write('x')\nprint('ESCAPED')",
    "rename a host file": "import os\nos.rename('{secret}', 'stolen')\nprint('ESCAPED')",
    "chmod a host file": "import os\nos.chmod('{secret}', 0o777)\nprint('ESCAPED')",
    "write into /tmp": "open('/tmp/cope-battery-planted', 'w').write('x')\nprint('wrote')",
    "make a FIFO in a host directory": "import os\nos.mkfifo('{host}/fifo')\nprint('ESCAPED')",
    "make and open a device node": (
        "import os, stat\nos.mknod('mem', stat.S_IFCHR | 0o600, os.makedev(1, 1))\n"
        "print('ESCAPED', open('mem', 'rb').read(4))"),
    "list a host directory": "import os\nprint(os.listdir('{host}'))",
    "list /root": "import os\nprint(os.listdir('/root'))",
    "read the parent's environment": "print('ESCAPED', open('/proc/{parent}/environ', 'rb').read()[:200])",
    "read pid 1's environment": "print('ESCAPED', open('/proc/1/environ', 'rb').read()[:200])",
    "find a key in its own environment": (
        "import os\nprint('ESCAPED' if any('{secret_env}' in v for v in os.environ.values()) else 'clean')"),
    "kill a host process": "import os, signal\nos.kill({victim}, signal.SIGKILL)\nprint('ESCAPED')",
    "kill a host process by pidfd": (
        "import os, signal\nsignal.pidfd_send_signal(os.pidfd_open({victim}), signal.SIGKILL)\nprint('ESCAPED')"),
    "kill a host process group": "import os, signal\nos.killpg({victim}, signal.SIGKILL)\nprint('ESCAPED')",
    "kill a host process through ctypes": (
        "import ctypes\nctypes.CDLL(None).kill({victim}, 9)\nprint('called')"),
    "TCP connect to the host": (
        "import socket\ns = socket.create_connection(('127.0.0.1', {tcp}), timeout=2)\ns.sendall(b'x')\n"
        "print('ESCAPED')"),
    "UDP send to the host": (
        "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "s.sendto(b'ESCAPED', ('127.0.0.1', {udp}))\nprint('sent')"),
    "resolve a name": "import socket\nprint('ESCAPED', socket.getaddrinfo('localhost', 80))",
    "start a subprocess": "import subprocess\nsubprocess.run(['touch', '{host}/by-subprocess'])\nprint('ran')",
    "os.system": "import os\nos.system('touch {host}/by-system')\nprint('ran')",
    "fork bomb": "import os\nwhile True:\n    os.fork()",
    "thread bomb": (
        "import threading, time\nwhile True:\n    threading.Thread(target=time.sleep, args=(60,)).start()"),
    "memory bomb": "x = bytearray(8 * 1024 ** 3)\nprint('ESCAPED')",
    "one big file": "open('big', 'wb').write(b'0' * (200 * 1024 * 1024))\nprint('ESCAPED')",
    "many files (total disk)": (
        "for i in range(12):\n    open('f%d' % i, 'wb').write(b'0' * (15 * 1024 * 1024))\nprint('ESCAPED')"),
    "a daemon that outlives the run": (
        "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        time.sleep(3)\n"
        "        open('{host}/daemon', 'w').write('x')\n    os._exit(0)\nprint('parent done')"),
    "raise its own limits": (
        "import resource\nresource.setrlimit(resource.RLIMIT_AS, (-1, -1))\nprint('ESCAPED')"),
}

# Known gaps: (program, level) -> why. They run, and are reported, as expected failures.
GAPS: dict[tuple[str, str], str] = {}
if "rlimits" in LEVELS and not disk_quota_available():
    GAPS[("many files (total disk)", "rlimits")] = "no per-run disk quota: bubblewrap, or root to mount a tmpfs"
if "rlimits" in LEVELS and not (landlock_abi() > 0 and os.environ.get("COPE_SANDBOX_LANDLOCK", "1") != "0"):
    # the in-process guard alone (a kernel without Landlock) is known to let these through
    for _name in ("make a FIFO in a host directory", "list a host directory", "list /root",
                  "kill a host process by pidfd"):
        GAPS[(_name, "rlimits")] = "the guard alone misses it; Landlock (Linux >= 5.13) closes it"


def _victim() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    root = tmp_path_factory.mktemp("battery")
    secret = root / "secret.txt"
    secret.write_text(SECRET)
    (root / "listed-name-4e1f").write_text("")
    try:
        root_names = set(os.listdir("/root"))
    except OSError:
        root_names = set()
    # bubblewrap mounts the Python installation where it lives: under /root that path is the
    # sandbox's own view, not a listing of the host's /root
    for prefix in {sys.prefix, sys.base_prefix, os.path.realpath(sys.executable)}:
        if prefix.startswith("/root/"):
            root_names.discard(prefix.split("/")[2])
    victim = _victim()
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(4)
    tcp.setblocking(False)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.setblocking(False)
    state = {"root": root, "secret": secret, "victim": victim, "tcp": tcp, "udp": udp, "root_names": root_names}
    yield state
    state["victim"].kill()
    state["victim"].wait(timeout=10)
    tcp.close()
    udp.close()


def _contained(name: str, r, host) -> list[str]:
    """What got through, judged from the run and from the host."""
    leaks = []
    if "ESCAPED" in r.stdout or SECRET in r.stdout:
        leaks.append("the program says it got through")
    if host["victim"].poll() is not None:
        leaks.append("the victim process died")
        host["victim"] = _victim()
    if "listed-name-4e1f" in r.stdout:
        leaks.append("a host directory was listed")
    if host["root_names"] and any(f"'{n}'" in r.stdout for n in host["root_names"]):
        leaks.append("/root was listed")
    for planted in ("planted", "fifo", "by-system", "by-subprocess", "daemon"):
        if (host["root"] / planted).exists():
            leaks.append(f"{planted} appeared on the host")
            (host["root"] / planted).unlink()  # so one leak does not show up again in the next program
    if not host["secret"].exists() or oct(host["secret"].stat().st_mode)[-3:] == "777":
        leaks.append("the host file was moved or changed")
        host["secret"].write_text(SECRET)
        host["secret"].chmod(0o644)
    if os.path.exists("/tmp/cope-battery-planted"):
        leaks.append("/tmp/cope-battery-planted appeared")
        os.unlink("/tmp/cope-battery-planted")
    try:
        conn, _ = host["tcp"].accept()
        conn.close()
        leaks.append("a TCP connection reached the host")
    except (BlockingIOError, OSError):
        pass
    try:
        host["udp"].recvfrom(64)
        leaks.append("a UDP datagram reached the host")
    except (BlockingIOError, OSError):
        pass
    return leaks


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("name", list(PROGRAMS))
def test_hostile_program_is_contained(name, level, host, monkeypatch):
    if (name, level) in GAPS:
        pytest.xfail(GAPS[(name, level)])
    monkeypatch.setenv("COPE_BATTERY_KEY", "sk-battery-" + SECRET)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sb = Sandbox(Limits(timeout_s=8, step_timeout_s=6, memory_mb=256, file_size_mb=16, processes=8),
                     isolation=level)
    program = PROGRAMS[name].format(host=host["root"], secret=host["secret"], victim=host["victim"].pid,
                                    tcp=host["tcp"].getsockname()[1], udp=host["udp"].getsockname()[1],
                                    parent=os.getpid(), secret_env=SECRET)
    r = sb.run(program)
    if name == "a daemon that outlives the run":
        time.sleep(4)  # it would have written by now
    leaks = _contained(name, r, host)
    RESULTS.setdefault(level, []).append(not leaks)
    assert not leaks, (leaks, r.stdout[-300:], r.load_error, r.stderr[-300:])


def test_zz_battery_figure(capsys):
    if not RESULTS:
        pytest.skip("run with the battery above to report its figure")
    assert len(PROGRAMS) >= 30
    with capsys.disabled():
        parts = [f"{lv}: {sum(v)}/{len(v)} contained" for lv, v in RESULTS.items()]
        on = landlock_abi() > 0 and os.environ.get("COPE_SANDBOX_LANDLOCK", "1") != "0"
        extra = (f" (Landlock ABI {landlock_abi()})" if on else " (no Landlock)") if "rlimits" in RESULTS else ""
        print(f"\nbattery: {len(PROGRAMS)} hostile programs; " + "; ".join(parts) + extra
              + (f"; known gaps: {len(GAPS)}" if GAPS else ""))
    assert all(all(v) for v in RESULTS.values())
