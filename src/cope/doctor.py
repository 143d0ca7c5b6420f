"""`cope doctor`: what this install is, and whether the main job can run here.

One command for a user (or a bug report): versions, how llama.cpp was built
and which CPU features it uses against what the CPU reports, a timed
long-prompt decode per installed local model (each in a child process, so a
build that faults is reported rather than fatal), the sandbox level, model
files and their hashes, caches, and which API keys are set (names only).
A check is ``ok``, ``warn`` (works, but worse than it could) or ``fail``
(the main job is broken); any ``fail`` makes the exit code non-zero.
"""

from __future__ import annotations

import os
import platform
import re
import sys
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from .models import build
from .models.local_files import NAMED_MODELS, cache_dir, is_installed, model_path

# The models `cope solve` runs by default: a failure of either is a failure of the main job.
MAIN_MODELS = ("qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b")
PACKAGES = ("cope", "llama-cpp-python", "numpy", "openai", "math-verify", "sympy", "rich", "matplotlib",
            "fastapi", "uvicorn", "pydantic", "textworld", "jericho", "reasoning-gym", "pytest")
NEEDED_PACKAGES = {"cope", "llama-cpp-python", "numpy", "openai", "math-verify", "sympy"}

# ggml's names for CPU features (llama_print_system_info) -> the kernel's /proc/cpuinfo flags.
GGML_TO_CPUINFO = {
    "SSE3": "pni", "SSSE3": "ssse3", "AVX": "avx", "AVX2": "avx2", "F16C": "f16c", "FMA": "fma",
    "BMI2": "bmi2", "AVX_VNNI": "avx_vnni", "AVX512": "avx512f", "AVX512_VBMI": "avx512vbmi",
    "AVX512_VNNI": "avx512_vnni", "AVX512_BF16": "avx512_bf16", "AMX_INT8": "amx_int8",
    "NEON": "asimd", "ARM_FMA": "asimd", "FP16_VA": "asimdhp", "DOTPROD": "asimddp",
    "MATMUL_INT8": "i8mm", "SVE": "sve", "SME": "sme",
}


@dataclass
class Check:
    name: str
    status: str  # ok | warn | fail
    summary: str
    details: dict[str, Any] = field(default_factory=dict)


def compiled_features(system_info: str) -> list[str]:
    """The CPU features a llama.cpp build uses, from its system-info line ("AVX2 = 1 | ...")."""
    cpu_part = system_info.split("CPU :", 1)[-1]
    return sorted({m.group(1) for m in re.finditer(r"([A-Z0-9_]+) = 1", cpu_part)} & set(GGML_TO_CPUINFO))


def unreported_features(features: list[str], flags: set[str]) -> list[str]:
    """Features the build uses that the CPU does not even claim: certain to fault."""
    return [f for f in features if GGML_TO_CPUINFO[f] not in flags]


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def _dir_size(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += (Path(root) / f).stat().st_size
            except OSError:
                pass
    return total


def check_python() -> Check:
    v = sys.version_info
    return Check("python", "ok" if v >= (3, 11) else "fail", platform.python_version(),
                 {"version": platform.python_version(), "executable": sys.executable, "prefix": sys.prefix})


def check_packages() -> Check:
    versions = {p: _version(p) for p in PACKAGES}
    missing = sorted(p for p, v in versions.items() if v is None and p in NEEDED_PACKAGES)
    optional = sorted(p for p, v in versions.items() if v is None and p not in NEEDED_PACKAGES)
    status = "fail" if missing else "ok"
    summary = f"missing: {', '.join(missing)} (run ./install.sh)" if missing else \
        f"llama-cpp-python {versions['llama-cpp-python']}, openai {versions['openai']}"
    if optional and not missing:
        summary += f"; not installed (optional): {', '.join(optional)}"
    return Check("packages", status, summary, {"versions": versions})


def check_build(probe: build.ProbeResult | None) -> Check:
    """How llama.cpp was built, and whether it uses a CPU feature the CPU does not report."""
    rec = build.read_record()
    flags = build.cpu_flags()
    reported = [lv.name for lv in build.reported_levels(flags)]
    details: dict[str, Any] = {"record": rec, "cpu_reports_levels": reported, "machine": build.machine(),
                               "cpu_model": _cpu_model()}
    if probe is None or not probe.ok:
        why = probe.reason if probe else "no probe"
        return Check("llama_build", "fail", f"llama.cpp does not run here: {why}; rebuild with ./install.sh",
                     {**details, "probe": probe.to_dict() if probe else None})
    info = str(probe.metrics.get("system_info", ""))
    feats = compiled_features(info)
    bad = unreported_features(feats, flags)
    details.update({"system_info": info, "compiled_features": feats, "unreported_features": bad,
                    "cpu_flags_relevant": sorted(f for f in set(GGML_TO_CPUINFO.values()) if f in flags)})
    level = rec.get("level") if rec else None
    if bad:
        return Check("llama_build", "fail",
                     f"the build uses {', '.join(bad)}, which this CPU does not report; rebuild with ./install.sh",
                     details)
    if not rec:
        return Check("llama_build", "warn",
                     "llama-cpp-python was not installed by install.sh: its flags are unknown (pip's default "
                     "is -march=native, which breaks when the venv moves); run ./install.sh", details)
    order = [lv.name for lv in build.levels_for()]
    faster = [n for n in reported if level in order and order.index(n) > order.index(level)]
    summary = f"level '{level}': {', '.join(feats) or 'generic'}"
    if faster:
        summary += f" (the CPU reports '{faster[0]}': ./install.sh --cpu auto tries it)"
    return Check("llama_build", "ok", summary, details)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.split(":")[0].strip() in ("model name", "Model"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def check_models(probes: dict[str, build.ProbeResult]) -> Check:
    rows, status = [], "ok"
    for m in NAMED_MODELS.values():
        row: dict[str, Any] = {"spec": f"local/{m.name}", "installed": is_installed(m), "size_bytes": m.size}
        if row["installed"]:
            try:
                row["path"] = str(model_path(m))
                row["hash"] = "verified"
            except Exception as exc:  # ModelFileError: the message says what to reinstall
                row["hash"] = f"FAILED: {exc}"
                status = "fail"
        else:
            row["hash"] = "not installed"
            if m.name in MAIN_MODELS:
                status = "fail"
        p = probes.get(m.name)
        if p is not None:
            row["decode"] = p.metrics if p.ok else {"error": p.reason}
            if not p.ok and m.name in MAIN_MODELS:
                status = "fail"
        rows.append(row)
    parts = []
    for r in rows:
        d = r.get("decode") or {}
        speed = (f"prompt {d['prompt_tok_s']} tok/s, decode {d['decode_tok_s']} tok/s" if "decode_tok_s" in d
                 else d.get("error", r["hash"]))
        parts.append(f"{r['spec'].split('/', 1)[1]}: {speed}")
    return Check("local_models", status, "; ".join(parts), {"models": rows})


def check_sandbox() -> Check:
    from .sandbox import Sandbox

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            sb = Sandbox()
        except Exception as exc:  # ConfigError: e.g. root with neither isolation
            return Check("sandbox", "fail", str(exc))
    why = sb._bwrap_problem()
    notes = [str(w.message) for w in caught]
    from .sandbox import landlock_abi
    from .sandbox.host import _is_root

    layers = {"isolation": sb.isolation, "guard": sb.guard, "landlock_abi": landlock_abi() if sb.landlock else 0,
              "seccomp": sb.seccomp, "runs_as_root": _is_root() and not sb._drop,
              "interpreter_view": sb._view is not None}
    if sb.isolation == "bwrap":
        return Check("sandbox", "ok", "bubblewrap namespaces", layers)
    wall = f"Landlock ABI {layers['landlock_abi']} (files, TCP, signals)" if sb.landlock else "no Landlock"
    wall += ", seccomp (no sockets but AF_UNIX)" if sb.seccomp else ", no seccomp"
    root = ("; programs run as root" if layers["runs_as_root"] else
            "; programs run as nobody, through a read-only view of the interpreter" if layers["interpreter_view"] else "")
    return Check("sandbox", "warn", f"resource limits, guard and {wall}{root}; bubblewrap: {why}",
                 {**layers, "why_not_bwrap": why, "warnings": notes})


def check_caches() -> Check:
    root = cache_dir().parent
    places = {"models": cache_dir(), "call_cache": root / "calls.sqlite", "games": root / "games",
              "wheels": build.wheel_cache()}
    details = {}
    for name, path in places.items():
        exists = path.exists()
        size = (_dir_size(path) if path.is_dir() else path.stat().st_size) if exists else 0
        details[name] = {"path": str(path), "exists": exists, "size_bytes": size}
    wheels = sorted(p.name for p in build.wheel_cache().glob(f"{build.PACKAGE}-*")) if places["wheels"].is_dir() else []
    details["wheels"]["builds"] = wheels
    summary = ", ".join(f"{k} {v['size_bytes'] / 2**20:.0f} MiB" for k, v in details.items())
    return Check("caches", "ok", summary, details)


KEY_VARS = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "COPE_API_KEYS", "ANTHROPIC_API_KEY", "GEMINI_API_KEY")


def check_keys() -> Check:
    names = sorted({k for k in os.environ if k in KEY_VARS or k.endswith("_API_KEY")})
    return Check("api_keys", "ok", ", ".join(names) if names else "none set (the embedded default needs none)",
                 {"set": names})


def run_checks(models: list[str] | None = None, *, timeout: float = 300,
               on_step: Callable[[str], None] | None = None) -> list[Check]:
    """Every check; ``models`` limits the timed decodes (default: every installed local model)."""
    step = on_step or (lambda s: None)
    from .errors import ConfigError

    unknown = [m for m in models or [] if m not in NAMED_MODELS]
    if unknown:
        raise ConfigError(f"unknown local model '{unknown[0]}'; named models: {', '.join(NAMED_MODELS)}")
    installed = [m.name for m in NAMED_MODELS.values() if is_installed(m)]
    names = [m for m in (models or installed) if m in installed]
    checks = [check_python(), check_packages()]
    probes: dict[str, build.ProbeResult] = {}
    if _version("llama-cpp-python"):
        for name in names:
            step(f"decoding a long prompt with local/{name}")
            probes[name] = build.run_probe(build.probe_command(name), timeout=timeout)
    first_ok = next((p for p in probes.values() if p.ok), next(iter(probes.values()), None))
    checks.append(check_build(first_ok))
    step("checking model files and the sandbox")
    checks += [check_models(probes), check_sandbox(), check_caches(), check_keys()]
    return checks


def report(checks: list[Check]) -> dict[str, Any]:
    return {"ok": not any(c.status == "fail" for c in checks), "checks": [asdict(c) for c in checks]}
