"""The harness: the program the sandboxed interpreter runs (``python -I -c``).

It reads one JSON job from stdin, limits itself, drops privileges, optionally
installs the guard, then runs the program, the setup and each test in one
namespace, reporting a JSON line per step on a private file descriptor. Kept to
the standard library; never imported by cope itself (the host sends this file's
text).
"""

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

if __name__ == "__main__":  # run as ``python -I -c``; importing this file runs nothing
    try:
        _main()
    except BaseException as e:
        try:
            sys.__stderr__.write("sandbox harness: %s: %s\n" % (type(e).__name__, e))
            sys.__stderr__.flush()
        except BaseException:
            pass
        os._exit(70)
