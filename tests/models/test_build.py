"""The portable build: CPU levels, flag-keyed wheel cache, and the probe that rejects a build that faults."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from cope.models import build

REPO = Path(__file__).resolve().parents[2]


def child(code: str) -> list[str]:
    return [sys.executable, "-c", code]


SIGILL_CHILD = child("import os, signal; os.kill(os.getpid(), signal.SIGILL)")
OK_CHILD = child("import json; print(json.dumps({'prompt_tok_s': 10.0, 'decode_tok_s': 5.0}))")


def test_every_level_states_every_switch_and_never_native():
    for lv in build.LEVELS:
        args = lv.cmake_args()
        assert "-DGGML_NATIVE=OFF" in args
        assert not any("march=native" in a for a in args)
        if lv.arch == "x86_64":
            assert {a.split("=")[0] for a in args} >= {f"-DGGML_{s}" for s in build._X86_SWITCHES}
    portable = build.level("portable", "x86_64").cmake_args()
    assert "-DGGML_AVX2=ON" in portable and "-DGGML_FMA=ON" in portable and "-DGGML_F16C=ON" in portable
    assert "-DGGML_AVX512=OFF" in portable and "-DGGML_AMX_TILE=OFF" in portable
    assert "-DGGML_CPU_ARM_ARCH=armv8-a" in build.level("portable", "aarch64").cmake_args()


def test_install_script_builds_through_the_level_path():
    text = (REPO / "install.sh").read_text()
    assert "march=native" not in text.replace("never with\n# -march=native", "")
    assert "cope.models.build install --level portable" in text
    assert "cope.models.build probe" in text


def test_wheel_folders_are_keyed_by_flags(tmp_path, monkeypatch):
    monkeypatch.setenv("COPE_WHEEL_CACHE", str(tmp_path))
    a, b = build.level("portable", "x86_64"), build.level("avx512", "x86_64")
    assert build.build_key(a) == build.build_key(a)
    assert build.build_key(a) != build.build_key(b)
    assert build.wheel_dir(a) != build.wheel_dir(b)
    assert build.wheel_dir(a).parent == tmp_path
    # a wheel cached for one level is found for that level only
    build.wheel_dir(b).mkdir(parents=True)
    (build.wheel_dir(b) / "llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl").write_bytes(b"")
    assert build.find_wheel(a) is None
    assert build.find_wheel(b) is not None


def test_reported_levels_follow_the_cpu_claims():
    v3 = set(build._V3_FLAGS)
    assert [lv.name for lv in build.reported_levels(v3, "x86_64")] == ["portable", "compat"]
    both = v3 | set(build._AVX512_FLAGS)
    assert [lv.name for lv in build.reported_levels(both, "x86_64")][0] == "avx512"
    assert build.reported_levels({"sse4_2"}, "x86_64")[0].name == "compat"


def test_a_build_that_dies_of_sigill_is_rejected_and_the_next_chosen():
    cands = [build.Candidate("amx", command=SIGILL_CHILD), build.Candidate("portable", command=OK_CHILD)]
    chosen, verdicts = build.choose(cands, log=lambda m: None)
    assert chosen is not None and chosen.level == "portable"
    assert not verdicts["amx"].ok and verdicts["amx"].signal == "SIGILL"
    assert "illegal instruction" in verdicts["amx"].reason
    assert verdicts["portable"].ok and verdicts["portable"].metrics["decode_tok_s"] == 5.0


def test_probe_rejects_hangs_errors_and_silence():
    assert "no answer" in build.run_probe(child("import time; time.sleep(30)"), timeout=1).reason
    bad = build.run_probe(child("import sys; sys.exit('llama broke')"))
    assert not bad.ok and bad.returncode == 1 and "llama broke" in bad.reason
    assert "printed no result" in build.run_probe(child("pass")).reason
    chosen, verdicts = build.choose([build.Candidate("x", command=SIGILL_CHILD)], log=lambda m: None)
    assert chosen is None and set(verdicts) == {"x"}


def test_probe_of_the_installed_build_decodes_a_long_prompt():
    res = build.run_probe(build.probe_command("smollm2-135m", decode_tokens=8))
    assert res.ok, res.reason
    assert res.metrics["prompt_tokens"] >= 100  # past the batched-matmul threshold that crashed
    assert res.metrics["decode_tok_s"] > 0
    if build.machine() == "x86_64":
        assert "AVX2 = 1" in res.metrics["system_info"]


def test_the_installed_build_was_recorded_by_install_sh():
    rec = build.read_record()
    if rec is None:
        pytest.skip("llama-cpp-python in this environment was not installed by install.sh")
    assert rec["level"] in {lv.name for lv in build.levels_for()}
    assert "-DGGML_NATIVE=OFF" in rec["cmake_args"]
    assert rec["key"] == build.build_key(build.level(rec["level"]))
    assert rec["probe"] and rec["probe"]["ok"]


def test_levels_command_lists_this_machine(capsys):
    assert build.main(["levels"]) == 0
    out = capsys.readouterr().out
    portable = next(line for line in out.splitlines() if line.startswith("portable"))
    assert "not reported" not in portable  # every CPU this runs on claims the portable level
