"""`cope doctor` on this machine: real probes in child processes, real files, names of keys only."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from cope import doctor
from cope.models import build

SECRET = "sk-test-never-printed-4242"


def run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "cope", "doctor", *args], capture_output=True, text=True,
                          timeout=300, env=env)


def test_doctor_json_on_this_machine():
    env = dict(os.environ, OPENAI_API_KEY=SECRET)
    p = run("--json", "--model", "smollm2-135m", env=env)
    assert SECRET not in p.stdout + p.stderr
    d = json.loads(p.stdout)
    checks = {c["name"]: c for c in d["checks"]}
    assert set(checks) == {"python", "packages", "llama_build", "local_models", "sandbox", "caches", "api_keys"}
    assert checks["packages"]["details"]["versions"]["llama-cpp-python"] == build.VERSION
    b = checks["llama_build"]
    assert b["status"] in ("ok", "warn"), b["summary"]
    assert b["details"]["compiled_features"] and b["details"]["unreported_features"] == []
    flags = build.cpu_flags()
    assert all(doctor.GGML_TO_CPUINFO[f] in flags for f in b["details"]["compiled_features"])
    smol = next(m for m in checks["local_models"]["details"]["models"] if m["spec"] == "local/smollm2-135m")
    assert smol["hash"] == "verified" and smol["decode"]["prompt_tokens"] >= 100 and smol["decode"]["decode_tok_s"] > 0
    assert checks["sandbox"]["details"]["isolation"] in ("bwrap", "rlimits")
    assert "OPENAI_API_KEY" in checks["api_keys"]["details"]["set"]
    assert set(checks["caches"]["details"]) == {"models", "call_cache", "games", "wheels"}
    assert d["ok"] is (p.returncode == 0)
    assert d["ok"] is not any(c["status"] == "fail" for c in d["checks"])


def test_doctor_fails_when_the_build_faults(tmp_path):
    fake = tmp_path / "fake" / "llama_cpp"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("import os, signal\nos.kill(os.getpid(), signal.SIGILL)\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(fake.parent), os.environ.get("PYTHONPATH", "")]))
    p = run("--model", "smollm2-135m", env=env)
    assert p.returncode == 1
    assert "Traceback" not in p.stderr
    line = next(x for x in p.stdout.splitlines() if "llama_build" in x)
    assert line.startswith("FAIL") and "SIGILL" in line


def test_features_the_cpu_does_not_report_are_caught():
    info = "CPU : SSE3 = 1 | AVX = 1 | AVX2 = 1 | AVX512 = 1 | AMX_INT8 = 1 | LLAMAFILE = 1 |"
    feats = doctor.compiled_features(info)
    assert feats == ["AMX_INT8", "AVX", "AVX2", "AVX512", "SSE3"]
    assert doctor.unreported_features(feats, {"pni", "avx", "avx2", "avx512f"}) == ["AMX_INT8"]


def test_a_failed_decode_of_a_main_model_fails_the_check():
    bad = build.ProbeResult(False, "died of SIGILL", -4, "SIGILL")
    c = doctor.check_models({"qwen2.5-coder-0.5b": bad})
    assert c.status == "fail" and "SIGILL" in c.summary
    assert doctor.report([c])["ok"] is False


def test_an_unknown_model_is_one_line():
    p = run("--model", "no-such-model")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines()[-1].startswith("cope: error: unknown local model 'no-such-model'")
