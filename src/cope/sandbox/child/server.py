"""The program's process: a fresh interpreter that runs the program and answers calls into it.

The judge (``harness.py``) starts it with ``python -I -c`` (``plain.py``'s text, then this
file's) and two pipes; it
holds nothing of the judge's memory (no nonce, no tests, no expected values, no result
descriptor), so a program that walks frames or the heap finds only this file's state. It puts
up the sandbox's layers on itself (Landlock, seccomp, the guard), runs the program and the
setup, says which names the program defined, then answers the judge's requests: call a
function with plain arguments, or evaluate a probe, and send back the plain value. Whatever
the program writes on its pipe can only claim a value it could as well have returned.
Never imported by cope itself (the judge sends this file's text).
"""

import os, sys

def _main():
    import builtins
    _exec, _eval, _compile, _type, _str, _callable = exec, eval, compile, type, str, callable
    _list, _dict, _set = list, dict, set
    cap, fd, fd_out = (int(a) for a in sys.argv[-3:])
    # the judge runs this file's text after plain.py's, so the codec and channel are this
    # process's own copies, defined before the job or any of the program arrives
    plain = globals()
    encode, decode = plain["_codec"]()
    send, recv = plain["_channel"](fd, fd_out, cap)
    cfg = recv()
    if not isinstance(cfg, dict):
        os._exit(0)
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG = SIGKILL: the judge's end is this one's end
        del libc, ctypes
    except Exception:
        pass
    if os.getppid() != cfg["judge"]:
        os._exit(0)
    sys.dont_write_bytecode = True
    if cfg.get("path"):
        sys.path[:] = cfg["path"]  # started from a view of the interpreter: its packages, through the view
    ready = {"k": "ready", "landlock": 0, "seccomp": None}
    if cfg["landlock"]:
        ll = {"__name__": "_landlock", "__builtins__": builtins}
        _exec(cfg["landlock_src"], ll)
        try:
            ready["landlock"] = ll["_landlock"]([r for r in cfg["read_roots"] if not r.startswith("/dev/")],
                                                [cfg["work"]], ["/dev/null", "/dev/zero", "/dev/urandom", "/dev/random"])
        except Exception as e:
            send({"k": "fatal", "err": "landlock failed: %s" % e})
            os._exit(70)
        del ll
    if cfg["seccomp"]:
        sc = {"__name__": "_seccomp", "__builtins__": builtins}
        _exec(cfg["seccomp_src"], sc)
        try:
            ready["seccomp"] = sc["_seccomp"](bool(cfg["no_processes"]))
        except Exception as e:
            send({"k": "fatal", "err": "seccomp failed: %s" % e})
            os._exit(70)
        del sc
    if cfg["guard"]:
        guard = {"__name__": "_guard", "__builtins__": builtins}
        _exec(cfg["guard_src"], guard)
        guard["_install_guard"](cfg["work"], cfg["read_roots"], cfg["write_roots"])
        del guard
    send(ready)
    g = {"__name__": "solution", "__builtins__": builtins}

    def describe(e):
        try:
            msg = _str(e)
        except BaseException:
            msg = ""
        line = None
        tb = e.__traceback__
        while tb is not None:
            if tb.tb_frame.f_code.co_filename in ("<solution>", "<setup>"):
                line = tb.tb_lineno
            tb = tb.tb_next
        return [_type(e).__name__, msg[:300], line]

    def run(src, fname):
        try:
            code = _compile(src, fname, "exec")
        except SyntaxError as e:
            return "SyntaxError: %s (line %s)" % (e.msg, e.lineno)
        except BaseException as e:
            name, msg, _ = describe(e)
            return name + (": " + msg if msg else "")
        try:
            _exec(code, g)
        except BaseException as e:
            name, msg, line = describe(e)
            return name + (": " + msg if msg else "") + (" (line %d)" % line if line else "")
        return ""

    loaded = {"k": "load", "err": run(cfg["program"], "<solution>"), "setup_err": ""}
    if not loaded["err"] and cfg["setup"]:
        loaded["setup_err"] = run(cfg["setup"], "<setup>")
    names = {}
    if not loaded["err"]:
        module = _type(os)
        for name, v in _list(g.items()):
            if _type(name) is not _str or name.startswith("__"):
                continue
            if _type(v) is module:
                names[name] = ["m", _str(v.__name__)]
            elif _callable(v):
                names[name] = ["c"]
            else:
                try:
                    names[name] = ["v", encode(v, [20000])]
                except BaseException:
                    pass
    loaded["names"] = names
    send(loaded)
    mutable = (_list, _dict, _set)
    while True:
        req = recv()
        if req is None or req.get("op") == "exit":
            break
        try:
            if req["op"] == "call":
                args = [decode(a) for a in req["args"]]
                kw = {k: decode(v) for k, v in req["kw"]}
                value = g[req["name"]](*args, **kw)
                left = [200000]
                reply = {"v": encode(value, left, 0, True),
                         "a": [[i, encode(a, left)] for i, a in enumerate(args) if _type(a) in mutable]}
            else:
                value = _eval(_compile("(" + req["src"] + ")", "<probe>", "eval"), g)
                reply = {"v": encode(value, [200000])}
        except BaseException as e:
            reply = {"e": describe(e)}
        send(reply)
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
            sys.__stderr__.write("sandbox program process: %s: %s\n" % (type(e).__name__, e))
            sys.__stderr__.flush()
        except BaseException:
            pass
        os._exit(70)
