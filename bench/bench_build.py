"""The portable llama.cpp build against faster CPU levels, side by side in one run.

    .venv/bin/python bench/bench_build.py [--model qwen2.5-coder-0.5b] [--rounds 5] [--build]

For each CPU level this machine reports (portable, and avx512/amx where the
CPU claims them), the level's wheel is taken from the flag-keyed wheel cache
(``--build`` compiles a missing one: minutes), unpacked into a temporary
folder and probed with SmolLM2 in a child process; a level that faults is
reported and left out. The accepted levels are then timed on ``--model``:
prompt tok/s (a 256-token prompt through the batched path) and decode tok/s
(64 greedy tokens), alternating levels round by round so the machine's noise
falls on all of them alike. Printed: medians and each level's ratio to the
fastest accepted one. The target: the portable build within 15% of the
fastest at decode.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from cope.models import build


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--levels", nargs="+", default=None, help="default: every level the CPU reports")
    ap.add_argument("--build", action="store_true", help="compile the wheels that are not cached")
    a = ap.parse_args()
    names = a.levels or [lv.name for lv in reversed(build.reported_levels()) if lv.name != "compat"]
    with tempfile.TemporaryDirectory(prefix="bench-build-") as tmp:
        paths: dict[str, str] = {}
        for name in names:
            lv = build.level(name)
            wheel = build.ensure_wheel(lv, log=lambda m: print(m, file=sys.stderr)) if a.build else build.find_wheel(lv)
            if wheel is None:
                print(f"{name:<9} no cached wheel (rerun with --build to compile it)")
                continue
            dest = build.unpack(wheel, Path(tmp) / name)
            verdict = build.run_probe(build.probe_command("smollm2-135m"), pythonpath=str(dest))
            if not verdict.ok:
                print(f"{name:<9} rejected by the probe: {verdict.reason}")
                continue
            paths[name] = str(dest)
        if not paths:
            print("no level to measure")
            return 1
        runs: dict[str, dict[str, list[float]]] = {n: {"prompt": [], "decode": []} for n in paths}
        cmd = build.probe_command(a.model, prompt_tokens=256, decode_tokens=64, threads=a.threads)
        for r in range(a.rounds):
            order = list(paths) if r % 2 == 0 else list(reversed(paths))
            for name in order:
                res = build.run_probe(cmd, pythonpath=paths[name], timeout=600)
                if not res.ok:
                    print(f"{name}: {res.reason}")
                    return 1
                runs[name]["prompt"].append(float(res.metrics["prompt_tok_s"]))
                runs[name]["decode"].append(float(res.metrics["decode_tok_s"]))
    med = {n: {k: statistics.median(v) for k, v in d.items()} for n, d in runs.items()}
    best = {k: max(m[k] for m in med.values()) for k in ("prompt", "decode")}
    print(f"\n{a.model}, {a.rounds} alternating rounds, medians (tok/s) and ratio to the fastest accepted level")
    print(f"{'level':<9} {'prompt':>8} {'ratio':>6} {'decode':>8} {'ratio':>6}")
    for n, m in med.items():
        print(f"{n:<9} {m['prompt']:>8.1f} {m['prompt'] / best['prompt']:>6.2f} "
              f"{m['decode']:>8.1f} {m['decode'] / best['decode']:>6.2f}")
    if "portable" in med:
        slow = 1 - med["portable"]["decode"] / best["decode"]
        print(f"portable decode is {100 * slow:.1f}% below the fastest accepted level (target: at most 15%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
