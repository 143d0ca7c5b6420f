"""Landlock (Linux >= 5.13): the kernel wall for the filesystem, TCP and signals, put up by the child itself.

Sent to the sandboxed interpreter as text and run there by the harness (standard library
only, through ctypes); never imported by cope itself.
"""

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
