"""How llama-cpp-python is built for this machine: CPU levels, wheel cache, probe.

Why this exists: llama-cpp-python's default source build passes
``-march=native``, so the compiler emits every instruction the CPU *reports*.
Some virtual machines report AVX-512 or AMX and then fault on them (SIGILL on
the first long prompt), and a wheel built natively on one host crashes on an
older one. So the default build targets a fixed baseline every x86-64 machine
of the last decade runs (AVX2/FMA/F16C/BMI2; NEON on aarch64), and a faster
level is used only after a real long-prompt decode in a child process has
shown that this machine runs it.

pip's wheel cache keys a source build on the package alone, not on
``CMAKE_ARGS``: a wheel built with other flags would be reused silently. Our
wheels live in a folder named by a hash of the flags (plus version, Python,
machine and libc), so the same flags reuse a wheel and different flags never do.

``python -m cope.models.build`` is what ``install.sh`` runs (with ``src`` on
``PYTHONPATH`` before cope itself is installed): ``install``, ``probe``,
``auto``, ``try``. Nothing heavy is imported at module level.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from .worker import child_env, signal_name

PACKAGE = "llama-cpp-python"
VERSION = "0.3.36"
RECORD_NAME = "cope-llama-build.json"  # in the venv (sys.prefix): what is installed and why

# Every x86 ISA switch ggml has, so a level states all of them (none left to a default).
_X86_SWITCHES = ("SSE42", "AVX", "AVX2", "FMA", "F16C", "BMI2", "AVX_VNNI", "AVX512", "AVX512_VBMI",
                 "AVX512_VNNI", "AVX512_BF16", "AMX_TILE", "AMX_INT8", "AMX_BF16")
# Parts of llama-cpp-python cope never loads (multimodal): not built, minutes saved.
_COMMON = ("-DGGML_NATIVE=OFF", "-DLLAVA_BUILD=OFF")


@dataclass(frozen=True)
class Level:
    """A named instruction-set level: the CPU flags it needs and the CMake switches it sets."""

    name: str
    arch: str
    requires: tuple[str, ...]  # /proc/cpuinfo flags (x86) or Features (arm)
    switches: tuple[str, ...]  # ggml switches ON; for x86 every other one is OFF
    description: str

    def cmake_args(self) -> list[str]:
        args = list(_COMMON)
        if self.arch == "x86_64":
            args += [f"-DGGML_{s}={'ON' if s in self.switches else 'OFF'}" for s in _X86_SWITCHES]
        else:
            args += list(self.switches)
        return args


_V3 = ("SSE42", "AVX", "AVX2", "FMA", "F16C", "BMI2")
_V3_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "bmi2")
_AVX512_FLAGS = ("avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw", "avx512vbmi", "avx512_vnni")

LEVELS: tuple[Level, ...] = (
    Level("compat", "x86_64", ("sse4_2",), ("SSE42",),
          "SSE4.2 only (x86-64-v2): the fallback for CPUs without AVX2; slow"),
    Level("portable", "x86_64", _V3_FLAGS, _V3,
          "AVX2/FMA/F16C/BMI2 (x86-64-v3): every x86-64 CPU since about 2015"),
    Level("avx512", "x86_64", _V3_FLAGS + _AVX512_FLAGS, _V3 + ("AVX512", "AVX512_VBMI", "AVX512_VNNI"),
          "AVX-512 F/CD/VL/DQ/BW with VBMI and VNNI (Ice Lake, Zen 4 and later)"),
    Level("amx", "x86_64", _V3_FLAGS + _AVX512_FLAGS + ("avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16"),
          _V3 + ("AVX512", "AVX512_VBMI", "AVX512_VNNI", "AVX512_BF16", "AVX_VNNI", "AMX_TILE", "AMX_INT8", "AMX_BF16"),
          "AVX-512 with BF16 and AMX tiles (Sapphire Rapids and later)"),
    Level("portable", "aarch64", ("asimd",), ("-DGGML_CPU_ARM_ARCH=armv8-a",),
          "ARMv8-A with NEON: every 64-bit ARM CPU"),
)


def machine() -> str:
    m = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(m, m)


def levels_for(arch: str | None = None) -> list[Level]:
    """This architecture's levels, slowest first; a generic portable one elsewhere."""
    arch = arch or machine()
    found = [lv for lv in LEVELS if lv.arch == arch]
    return found or [Level("portable", arch, (), (), "the compiler's generic target for this architecture")]


def level(name: str, arch: str | None = None) -> Level:
    for lv in levels_for(arch):
        if lv.name == name:
            return lv
    known = ", ".join(lv.name for lv in levels_for(arch))
    raise SystemExit(f"build: unknown CPU level '{name}' for {arch or machine()}; known: {known}, auto")


def cpu_flags() -> set[str]:
    """What the CPU reports (its CPUID, through the kernel): a claim, not a proof."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def reported_levels(flags: set[str] | None = None, arch: str | None = None) -> list[Level]:
    """Levels whose every required flag the CPU reports, fastest first."""
    flags = cpu_flags() if flags is None else flags
    return [lv for lv in reversed(levels_for(arch)) if set(lv.requires) <= flags]


# --- the wheel cache ----------------------------------------------------------
def wheel_cache() -> Path:
    root = os.environ.get("COPE_WHEEL_CACHE")
    if root:
        return Path(root)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cope" / "wheels"


def build_key(lv: Level) -> str:
    """A hash of everything that makes two builds differ; the wheel folder is named by it."""
    ident = {
        "package": PACKAGE, "version": VERSION, "cmake_args": lv.cmake_args(),
        "python": sys.implementation.cache_tag, "machine": machine(), "libc": "-".join(platform.libc_ver()),
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def wheel_dir(lv: Level) -> Path:
    return wheel_cache() / f"{PACKAGE}-{VERSION}-{lv.name}-{build_key(lv)}"


def find_wheel(lv: Level) -> Path | None:
    d = wheel_dir(lv)
    found = sorted(d.glob("llama_cpp_python-*.whl")) if d.is_dir() else []
    return found[0] if found else None


def ensure_wheel(lv: Level, python: str = sys.executable, log: Callable[[str], None] = print) -> Path:
    """The cached wheel for this level, building it from source first if there is none."""
    found = find_wheel(lv)
    if found:
        log(f"build: reusing the {lv.name} wheel ({found.parent.name})")
        return found
    target = wheel_dir(lv)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    env = dict(os.environ, CMAKE_ARGS=" ".join(lv.cmake_args()), FORCE_CMAKE="1",
               CMAKE_BUILD_PARALLEL_LEVEL=str(os.cpu_count() or 1))
    log(f"build: compiling {PACKAGE} {VERSION} for level '{lv.name}' ({lv.description}); "
        "this takes several minutes")
    cmd = [python, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check", "--no-deps",
           "--no-cache-dir", "--no-binary", PACKAGE, "-w", str(tmp), f"{PACKAGE}=={VERSION}"]
    t0 = time.monotonic()
    try:
        rc = subprocess.call(cmd, env=env)
        wheels = sorted(tmp.glob("llama_cpp_python-*.whl"))
        if rc != 0 or not wheels:
            raise SystemExit(f"build: compiling {PACKAGE} failed (pip exit {rc}); a C/C++ compiler, "
                             "cmake and make are needed")
        (tmp / "build.json").write_text(json.dumps(
            {"level": lv.name, "cmake_args": lv.cmake_args(), "key": build_key(lv),
             "build_s": round(time.monotonic() - t0, 1)}, indent=2))
        if target.exists():  # another install finished first: keep its wheel
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, target)  # atomic: a half-built folder is never taken for a wheel
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log(f"build: done in {time.monotonic() - t0:.0f} s")
    return find_wheel(lv)  # type: ignore[return-value]


def unpack(wheel: Path, dest: Path) -> Path:
    """A wheel's files in ``dest`` (a wheel is a zip): importable with ``dest`` on PYTHONPATH."""
    import zipfile

    with zipfile.ZipFile(wheel) as z:
        z.extractall(dest)
    for lib in (dest / "llama_cpp" / "lib").glob("*.so*"):
        lib.chmod(0o755)
    return dest


# --- the probe ----------------------------------------------------------------
PROBE_PROMPT_TOKENS = 300  # well past the ~100 tokens where batched matmul kernels take over
PROBE_DECODE_TOKENS = 32


@dataclass
class ProbeResult:
    """What one probe child did: it ran cleanly (with speeds) or why not."""

    ok: bool
    reason: str = ""
    returncode: int | None = None
    signal: str | None = None
    metrics: dict[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def probe_command(model: str, *, prompt_tokens: int = PROBE_PROMPT_TOKENS,
                  decode_tokens: int = PROBE_DECODE_TOKENS, threads: int | None = None,
                  python: str = sys.executable) -> list[str]:
    """The child that loads ``model`` (a named local model or a .gguf path) and decodes."""
    return [python, "-m", "cope.models.build", "_probe-child", model, str(prompt_tokens), str(decode_tokens),
            str(threads or 0)]


def run_probe(command: Sequence[str], *, pythonpath: str | None = None, timeout: float = 300) -> ProbeResult:
    """Run a probe child; reject it if it dies of a signal, exits non-zero, hangs or says nothing."""
    try:
        proc = subprocess.run(list(command), env=child_env(pythonpath), capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return ProbeResult(False, f"no answer within {timeout:.0f} s")
    except OSError as exc:
        return ProbeResult(False, f"could not start: {exc}")
    rc = proc.returncode
    if rc < 0:
        name = signal_name(-rc)
        why = " (illegal instruction: the CPU does not run this build)" if -rc == signal.SIGILL else ""
        return ProbeResult(False, f"died of {name}{why}", rc, name)
    if rc != 0:
        tail = (proc.stderr.strip().splitlines() or [""])[-1][:300]
        return ProbeResult(False, f"exited with code {rc}: {tail}", rc)
    try:
        metrics = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return ProbeResult(False, "exited cleanly but printed no result", rc)
    return ProbeResult(True, "", rc, None, metrics)


@dataclass
class Candidate:
    """A build to try: its level, and where its llama_cpp is imported from (None: the installed one)."""

    level: str
    pythonpath: str | None = None
    command: list[str] | None = None  # the probe child; default: the standard long-prompt decode


def choose(candidates: Sequence[Candidate], model: str = "smollm2-135m", *, timeout: float = 300,
           log: Callable[[str], None] = print) -> tuple[Candidate | None, dict[str, ProbeResult]]:
    """The first candidate (give them fastest first) whose probe runs cleanly, and every verdict."""
    verdicts: dict[str, ProbeResult] = {}
    for cand in candidates:
        res = run_probe(cand.command or probe_command(model), pythonpath=cand.pythonpath, timeout=timeout)
        verdicts[cand.level] = res
        if res.ok:
            log(f"build: level '{cand.level}' runs here "
                f"(prompt {res.metrics.get('prompt_tok_s')} tok/s, decode {res.metrics.get('decode_tok_s')} tok/s)")
            return cand, verdicts
        log(f"build: level '{cand.level}' rejected: {res.reason}")
    return None, verdicts


def _probe_child(model: str, prompt_tokens: int, decode_tokens: int, threads: int) -> None:
    """Load the model with cope's own engine, decode a long prompt, then greedy tokens; print JSON."""
    import llama_cpp

    from .llamacpp import resolve_local_path
    from .llamacpp_engine import _Engine

    path = resolve_local_path(model)
    t0 = time.perf_counter()
    eng = _Engine(path, n_ctx=2048, n_threads=threads or (os.cpu_count() or 1), max_seqs=1)
    load_s = time.perf_counter() - t0
    text = ("The quick brown fox jumps over the lazy dog while counting sheep one by one. " * 60)
    toks = eng.tokenize(text)[:prompt_tokens]
    t0 = time.perf_counter()
    eng._decode([(t, k, 0, k == len(toks) - 1) for k, t in enumerate(toks)])
    prompt_s = time.perf_counter() - t0
    import numpy as np

    tok, pos = int(np.argmax(eng._logits(-1))), len(toks)  # -1: the last row with logits
    t0 = time.perf_counter()
    for _ in range(decode_tokens):
        eng._decode([(tok, pos, 0, True)])
        tok, pos = int(np.argmax(eng._logits(0))), pos + 1
    decode_s = time.perf_counter() - t0
    print(json.dumps({
        "model": model, "load_s": round(load_s, 3),
        "prompt_tokens": len(toks), "prompt_tok_s": round(len(toks) / prompt_s, 1),
        "decode_tokens": decode_tokens, "decode_tok_s": round(decode_tokens / decode_s, 1),
        "system_info": llama_cpp.llama_print_system_info().decode(errors="replace").strip(),
        "llama_cpp": str(Path(llama_cpp.__file__).parent),
    }))


# --- what install.sh runs -------------------------------------------------------
def record_path(prefix: str | None = None) -> Path:
    return Path(prefix or sys.prefix) / RECORD_NAME


def read_record(prefix: str | None = None) -> dict | None:
    try:
        return json.loads(record_path(prefix).read_text())
    except (OSError, ValueError):
        return None


def _write_record(lv: Level, wheel: Path, probe: ProbeResult | None, note: str = "") -> None:
    rec = {"package": PACKAGE, "version": VERSION, "level": lv.name, "description": lv.description,
           "cmake_args": lv.cmake_args(), "key": build_key(lv), "wheel": wheel.name,
           "probe": probe.to_dict() if probe else None, "note": note,
           "installed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    _save_record(rec)


def _save_record(rec: dict) -> None:
    record_path().write_text(json.dumps(rec, indent=2) + "\n")


def _pip_install(wheel: Path, python: str = sys.executable) -> None:
    """Replace whatever llama-cpp-python the venv holds by this wheel (its dependencies are cope's)."""
    subprocess.check_call([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                           "--no-deps", "--force-reinstall", str(wheel)])


def install_level(lv: Level, python: str = sys.executable) -> Path:
    """Install this level's wheel into the running venv unless it is already the installed build."""
    wheel = ensure_wheel(lv, python)
    rec = read_record()
    if rec and rec.get("key") == build_key(lv) and _installed_version() == VERSION:
        print(f"build: {PACKAGE} level '{lv.name}' is installed", file=sys.stderr)
        return wheel
    _pip_install(wheel, python)
    _write_record(lv, wheel, None, "installed; not yet probed")
    return wheel


def _installed_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(PACKAGE)
    except PackageNotFoundError:
        return None


def _cmd_install(args: argparse.Namespace) -> int:
    install_level(level(args.level))
    return 0


def _cmd_probe(args: argparse.Namespace) -> int:
    """Probe the installed build and record the verdict; exit 3 if it died of a signal, 1 if it failed otherwise."""
    rec = read_record() or {}
    res = run_probe(probe_command(args.model), timeout=args.timeout)
    lv_name = rec.get("level", "unknown")
    if rec:
        rec["probe"] = res.to_dict()
        rec["note"] = "probed"
        _save_record(rec)
    if res.ok:
        print(f"build: level '{lv_name}' runs here: prompt {res.metrics['prompt_tok_s']} tok/s, "
              f"decode {res.metrics['decode_tok_s']} tok/s on {args.model}", file=sys.stderr)
        return 0
    print(f"build: the installed llama.cpp build (level '{lv_name}') does not run here: {res.reason}; "
          "see 'cope doctor'", file=sys.stderr)
    # 3: killed by a signal, which a lower CPU level may cure; 1: anything else, which it would not
    return 3 if res.signal else 1


def try_levels(names: Sequence[str], *, model: str = "smollm2-135m", timeout: float = 300,
               log: Callable[[str], None] = print) -> Level | None:
    """Build (or reuse) each level in turn, probe it from an unpacked copy, install the first that runs."""
    for name in names:
        lv = level(name)
        wheel = ensure_wheel(lv, log=log)
        with tempfile.TemporaryDirectory(prefix="cope-probe-") as tmp:
            unpack(wheel, Path(tmp))
            chosen, verdicts = choose([Candidate(lv.name, tmp)], model, timeout=timeout, log=log)
        if chosen:
            _pip_install(wheel)
            _write_record(lv, wheel, verdicts[lv.name], "probed before install")
            log(f"build: using level '{lv.name}' ({lv.description})")
            return lv
    return None


def _cmd_try(args: argparse.Namespace) -> int:
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    names = getattr(args, "levels", [])
    if args.cmd == "auto":
        current = (read_record() or {}).get("level", "portable")
        order = [lv.name for lv in levels_for()]
        floor = order.index(current) if current in order else 0
        names = [lv.name for lv in reported_levels() if order.index(lv.name) > floor]
        if not names:
            log(f"build: this CPU reports no level above '{current}'; keeping it")
            return 0
    if try_levels(names, model=args.model, timeout=args.timeout, log=log):
        return 0
    log(f"build: none of {', '.join(names)} runs here")
    return 0 if args.cmd == "auto" else 1


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cope.models.build")
    sub = p.add_subparsers(dest="cmd", required=True)
    i = sub.add_parser("install", help="build (or reuse) and install one level's wheel")
    i.add_argument("--level", default="portable")
    for name, text in (("probe", "probe the installed build"),
                       ("auto", "try the faster levels the CPU reports; keep the fastest that runs"),
                       ("try", "try these levels in order; install the first that runs (exit 1 if none)")):
        q = sub.add_parser(name, help=text)
        if name == "try":
            q.add_argument("levels", nargs="+")
        q.add_argument("--model", default="smollm2-135m")
        q.add_argument("--timeout", type=float, default=300)
    sub.add_parser("levels", help="the levels for this machine and which the CPU reports")
    c = sub.add_parser("_probe-child")
    c.add_argument("model")
    c.add_argument("prompt_tokens", type=int)
    c.add_argument("decode_tokens", type=int)
    c.add_argument("threads", type=int)
    args = p.parse_args(argv)
    if args.cmd == "_probe-child":
        _probe_child(args.model, args.prompt_tokens, args.decode_tokens, args.threads)
        return 0
    if args.cmd == "levels":
        reported = {lv.name for lv in reported_levels()}
        for lv in levels_for():
            print(f"{lv.name:<9} {'reported' if lv.name in reported else 'not reported':<13} {lv.description}")
        return 0
    return {"install": _cmd_install, "probe": _cmd_probe, "auto": _cmd_try, "try": _cmd_try}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
