"""seccomp: a kernel filter on system calls (non-AF_UNIX sockets, io_uring, process creation).

Sent to the sandboxed interpreter as text and run there by the harness (standard library
only, through ctypes); never imported by cope itself.
"""

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
