"""The harness: the judge's process, which the sandboxed interpreter runs (``python -I -c``).

It reads one JSON job from stdin, limits itself and drops privileges, then starts the
program's process (``server.py``: a fresh interpreter, none of this one's memory) and runs
the setup and each test here, where no line of the program ever runs. Each call of a function
the program defined goes to the program's process with plain arguments and comes back as a
plain value (``plain.py``): an always-equal object, a patched ``exec`` or a forged record
cannot pass a test. It reports a JSON line per step on a descriptor the program's process
does not inherit, and is not dumpable, so that process can neither trace it nor read its
memory or descriptors. A test that times out, or a program that dies, costs that test; the
next one gets a fresh program process. Kept to the standard library; never imported by cope
itself (the host sends this file's text).
"""

import os, sys

def _main():
    import builtins, json, resource, signal, time
    job = json.loads(sys.stdin.buffer.read().decode("utf-8"))
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    out = job["results_fd"]
    os.set_inheritable(out, False)
    tag = job["nonce"].encode("ascii")

    def report(rec, _write=os.write, _dumps=json.dumps):
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
        if libc.prctl(4, 0, 0, 0, 0) != 0:  # PR_SET_DUMPABLE = 0: no ptrace, /proc/<pid>/mem or fd from the program
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE)")
        del libc, ctypes
    except Exception as e:
        report({"k": "fatal", "err": "could not make the judge private: %s" % e})
        os._exit(70)
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
        # the judge's own wall, the one its program's process starts in (layers only narrow, so
        # it lets the working directory be written); that process adds its own, nested layer,
        # which also keeps it from signalling this process
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
    plain = {"__name__": "_plain", "__builtins__": builtins}
    exec(job["plain_src"], plain)
    encode, decode = plain["_codec"]()
    cap = int(job["message_cap"])
    marker = sys.argv[-1] if len(sys.argv) > 1 else "cope-sandbox"

    class _StepTimeout(BaseException):
        pass

    def _alarm(signum, frame):
        raise _StepTimeout()

    signal.signal(signal.SIGALRM, _alarm)
    step = float(job["step_timeout"])

    def signal_name(num):
        try:
            return signal.Signals(num).name
        except ValueError:
            return "signal %d" % num

    class ProgramEnded(Exception):
        """The program's process ended (or was ended) while a test needed it."""

    class Proc:
        """A started process: its pid, and its exit code once it ended (negative: a signal)."""

        def __init__(self, pid):
            self.pid, self.returncode = pid, None

        def wait(self, timeout=None):
            deadline = None if timeout is None else time.monotonic() + timeout
            pause = 0.001
            while self.returncode is None:
                pid, st = os.waitpid(self.pid, 0 if deadline is None else os.WNOHANG)
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(st)
                elif time.monotonic() > deadline:
                    raise TimeoutError()
                else:
                    time.sleep(pause)
                    pause = min(pause * 2, 0.05)
            return self.returncode

    class Program:
        """The program's process, started on first need and again after it ended."""

        def __init__(self):
            self.proc = None
            self.send = self.recv = None
            self.fds = ()
            self.setup_err = ""
            self.names = {}
            self.started = 0

        def status(self):
            """Why the process ended, once its end of the channel closed."""
            if self.proc is None:
                return "the program ended the run early"
            try:
                code = self.proc.wait(timeout=1.0)
            except TimeoutError:
                return "the program closed its channel to the judge"
            if code < 0:
                return "the program was killed by %s" % signal_name(-code)
            return "the program ended the run early" + (" (exit status %d)" % code if code else "")

        def end(self):
            if self.proc is not None:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except OSError:
                    pass
                self.proc.wait()
                self.proc = None
            for fd in self.fds:
                os.close(fd)
            self.fds = ()

        def start(self, timed=True):
            """Start the program's process and load the program; its load error, or "".

            ``timed``: load under its own step timer (not when a test's timer already runs).
            """
            self.started += 1
            to_r, to_w = os.pipe()  # judge -> program
            from_r, from_w = os.pipe()  # program -> judge
            os.set_inheritable(to_r, True)
            os.set_inheritable(from_w, True)
            try:
                # a session and process group of its own: ended as a whole when a test needs a fresh one
                pid = os.posix_spawn(sys.executable, [sys.executable, "-I", "-c",
                                                      job["plain_src"] + "\n" + job["server_src"], marker,
                                                      str(cap), str(to_r), str(from_w)], os.environ, setsid=True)
            except OSError as e:
                for fd in (to_r, to_w, from_r, from_w):
                    os.close(fd)
                return "could not start the program's process: %s" % e
            os.close(to_r)
            os.close(from_w)
            self.proc, self.fds = Proc(pid), (to_w, from_r)
            self.send, self.recv = plain["_channel"](from_r, to_w, cap)
            try:
                return self.load(timed)
            except (OSError, ValueError, MemoryError, RecursionError) as e:
                self.end()
                return "the program's process failed: %s" % e

        def load(self, timed):
            self.send({"judge": os.getpid(),
                       "program": job["program"], "setup": job["setup"], "work": job["work"],
                       "read_roots": job["read_roots"], "write_roots": job["write_roots"],
                       "landlock": job.get("landlock"), "landlock_src": job["landlock_src"],
                       "seccomp": job.get("seccomp"), "seccomp_src": job["seccomp_src"],
                       "no_processes": bool(job.get("drop_caps")),
                       "guard": job["guard"], "guard_src": job["guard_src"], "path": job.get("path")})
            ready = self.within(step if timed else None)
            if not isinstance(ready, dict) or ready.get("k") != "ready":
                err = ready.get("err") if isinstance(ready, dict) and ready.get("k") == "fatal" else None
                self.end()
                if err:
                    report({"k": "fatal", "err": str(err)})
                    return "sandbox error: %s" % err
                return "the program's process did not start"
            if self.started == 1 and ready.get("seccomp") is not None:
                report({"k": "seccomp", "n": ready.get("seccomp")})
            loaded = self.within(step * (2 if job["setup"] else 1) if timed else None)
            if not isinstance(loaded, dict) or loaded.get("k") != "load":
                why = self.status()
                self.end()
                return why
            self.names = loaded.get("names") if isinstance(loaded.get("names"), dict) else {}
            self.setup_err = str(loaded.get("setup_err") or "")
            return str(loaded.get("err") or "")

        def within(self, seconds):
            """The next message, waited for at most ``seconds`` (None: under a timer already running)."""
            if seconds is not None:
                signal.setitimer(signal.ITIMER_REAL, seconds)
            try:
                return self.recv()
            finally:
                if seconds is not None:
                    signal.setitimer(signal.ITIMER_REAL, 0)

        def ask(self, msg):
            """Send a request; the reply. A process that ended is started again first."""
            if self.proc is None:
                err = self.start(timed=False)
                if err:
                    self.end()
                    raise ProgramEnded("not run: the program failed: %s" % err)
            try:
                self.send(msg)
                reply = self.recv()
            except _StepTimeout:
                self.end()
                raise
            except (OSError, ValueError, MemoryError, RecursionError) as e:
                reply = None
                why = "the program's reply could not be read: %s" % (str(e) or type(e).__name__)
            else:
                why = None
            if not isinstance(reply, dict):
                why = why or self.status()
                self.end()
                raise ProgramEnded(why)
            return reply

    prog = Program()
    errors = {}  # exception classes by name, for errors the program raised that are not builtins

    def raise_from(e):
        name, msg, line = (e + [None, None, None])[:3] if isinstance(e, list) else ("Exception", str(e), None)
        name = str(name)
        cls = getattr(builtins, name, None)
        if not (isinstance(cls, type) and issubclass(cls, Exception)):
            cls = errors.get(name)
            if cls is None:
                cls = errors[name] = type(name if name.isidentifier() else "ProgramError", (Exception,), {})
        text = str(msg or "") + (" (line %d of the program)" % line if isinstance(line, int) else "")
        raise cls(text) if text else cls()

    def call(name):
        def proxy(*args, **kw):
            left = [200000]
            try:
                sent = [encode(a, left) for a in args]
                sent_kw = [[str(k), encode(v, left)] for k, v in kw.items()]
            except (TypeError, ValueError) as e:
                raise TypeError("an argument to %s cannot be passed to the program: %s" % (name, e)) from None
            reply = prog.ask({"op": "call", "name": name, "args": sent, "kw": sent_kw})
            if "e" in reply:
                raise_from(reply["e"])
            value = decode(reply.get("v"))
            # what the function did to a list, dict or set it was passed, the caller sees too
            for i, after in reply.get("a") or ():
                if not (isinstance(i, int) and 0 <= i < len(args)):
                    continue
                a, b = args[i], decode(after)
                if type(a) is list and type(b) is list:
                    a[:] = b
                elif type(a) is dict and type(b) is dict or type(a) is set and type(b) is set:
                    a.clear()
                    a.update(b)
            return value
        proxy.__name__ = proxy.__qualname__ = name
        return proxy

    def describe(e, names):
        try:
            msg = str(e)
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

    g = {"__name__": "solution", "__builtins__": builtins}

    def run(src, fname):
        try:
            code = compile(src, fname, "exec")
        except SyntaxError as e:
            return "SyntaxError: %s (line %s)" % (e.msg, e.lineno)
        except BaseException as e:
            return describe(e, (fname,))
        try:
            signal.setitimer(signal.ITIMER_REAL, step)
            try:
                exec(code, g)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except _StepTimeout:
            prog.end()
            return "timeout after %gs" % step
        except ProgramEnded as e:
            return str(e)
        except BaseException as e:
            return describe(e, (fname,))
        return ""

    def probe(k, src):
        try:
            signal.setitimer(signal.ITIMER_REAL, step)
            try:
                reply = prog.ask({"op": "eval", "src": src})
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except _StepTimeout:
            prog.end()
            return {"k": "value", "i": k, "err": "timeout after %gs" % step}
        except ProgramEnded as e:
            return {"k": "value", "i": k, "err": str(e)}
        if "e" in reply:
            e = reply["e"] if isinstance(reply["e"], list) else ["Exception", str(reply["e"]), None]
            name, msg, line = (e + [None, None, None])[:3]
            text = str(name) + (": " + str(msg) if msg else "") + (" (line %d)" % line if isinstance(line, int) else "")
            return {"k": "value", "i": k, "err": text}
        return {"k": "value", "i": k, "v": reply.get("v")}

    try:
        err = prog.start()
    except _StepTimeout:
        prog.end()
        err = "timeout after %gs" % step
    report({"k": "load", "err": err})
    if not err:
        entry = job.get("entry_point")
        for name, kind in list(prog.names.items()):
            if not isinstance(kind, list) or not kind or (hasattr(builtins, name) and name != entry):
                continue  # a test's len() or sorted() is Python's, whatever the program defined
            if kind[0] == "c":
                g[name] = call(name)
            elif kind[0] == "m" and len(kind) > 1 and str(kind[1]).split(".")[0] in sys.stdlib_module_names:
                try:
                    g[name] = __import__(str(kind[1]), fromlist=["_"])
                except BaseException:
                    pass
            elif kind[0] == "v" and len(kind) > 1:
                try:
                    g[name] = decode(kind[1])
                except (ValueError, TypeError, RecursionError):
                    pass
        setup_err = prog.setup_err
        if job["setup"]:
            setup_err = setup_err or run(job["setup"], "<setup>")
            report({"k": "setup", "err": setup_err})
        if not setup_err:
            for i, test in enumerate(job["tests"]):
                report({"k": "test", "i": i, "err": run(test, "<test %d>" % i)})
            for k, src in enumerate(job.get("probes") or ()):
                report(probe(k, src))
    if prog.proc is not None:
        try:
            prog.send({"op": "exit"})
            prog.proc.wait(timeout=2)
        except BaseException:
            pass
        prog.end()
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
