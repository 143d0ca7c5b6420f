"""The in-process guard: an audit hook that refuses what a program may not touch (the fallback's layer).

Sent to the sandboxed interpreter as text and run there by the harness (standard library
only); never imported by cope itself.
"""

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
