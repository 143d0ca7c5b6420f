"""The Ray engine against the local one, on the same problems in one run (SmolLM2 as both tiers).

Runs `cope eval` three ways over the same arithmetic problems, each into a
fresh run directory with no call cache: the local engine; Ray with one
worker holding both cores; Ray with two workers of one core each. It prints
problems per minute, each Ray run's ratio to the local one, the driver's
overhead per problem (the one-worker Ray run's time beyond the local run's,
start-up left out), checks that every run gave the same records, and
projects, from the measured per-problem time and the API calls a problem
makes, the throughput of N such nodes under an API rate limit.

    .venv/bin/python bench/bench_ray.py [--problems 12] [--rpm 500]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from cope.eval.distributed import RayEngine
from cope.eval.runner import EvalConfig, load_results, run_eval

SMOL = "local/smollm2-135m"


def _data(path: Path, k: int) -> Path:
    rows = [{"question": f"What is {a} + {b}?", "answer": str(a + b), "uid": f"p{a}-{b}"}
            for a, b in ((3 + i, 4 + 2 * i) for i in range(k))]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def _run(data: Path, out: Path, engine: RayEngine | None) -> tuple[float, dict]:
    cfg = EvalConfig(benchmark=f"jsonl:{data}", methods=["cope"], small=SMOL, large=SMOL,
                     large_price_as="gpt-4o-mini", n=4, max_tokens=48, mapping={"id": "uid"}, seed=11)
    t0 = time.perf_counter()
    s = run_eval(cfg, out, use_cache=False, progress=False, engine=engine)
    return time.perf_counter() - t0, s


def _records(out: Path) -> dict:
    return {r["problem_id"]: (r["answer"], r["stage"], r["cost_usd"]) for r in load_results(out)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problems", type=int, default=12)
    ap.add_argument("--rpm", type=float, default=500.0, help="the API's requests per minute, for the projection")
    a = ap.parse_args()
    import ray

    tmp = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    data = _data(tmp / "problems.jsonl", a.problems)
    local_s, local = _run(data, tmp / "local", None)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        one_s, one = _run(data, tmp / "ray1", RayEngine(workers=1, worker_cpus=2))
        two_s, two = _run(data, tmp / "ray2", RayEngine(workers=2, worker_cpus=1))
    finally:
        ray.shutdown()
    same = _records(tmp / "local") == _records(tmp / "ray1") == _records(tmp / "ray2")
    P = a.problems
    print(f"{P} problems, cope (n=4) with SmolLM2 as both tiers, 2 cores; every run the same records: {same}")
    print(f"{'engine':<28}{'wall s':>8}{'start s':>9}{'problems/min':>14}{'vs local':>10}")
    rows = [("local", local_s, 0.0), ("ray, 1 worker x 2 cpus", one_s, one["this_invocation"]["engine"]["startup_s"]),
            ("ray, 2 workers x 1 cpu", two_s, two["this_invocation"]["engine"]["startup_s"])]
    base = P / local_s
    for name, wall, start in rows:
        rate = P / max(wall - start, 1e-9)
        print(f"{name:<28}{wall:>8.1f}{start:>9.1f}{60 * rate:>14.1f}{rate / base:>9.2f}x")
    overhead = (one_s - rows[1][2] - local_s) / P
    eng = one["this_invocation"]["engine"]
    calls = one["this_invocation"]["real_calls"]
    print(f"ray 1 worker beyond local, start-up left out: {1000 * overhead:.0f} ms per problem (Ray's own "
          f"processes share the 2 cores); of it, waiting on the driver's desk: {1000 * eng['desk_s'] / P:.0f} ms "
          f"per problem, {1000 * eng['desk_s'] / max(eng['desk_requests'], 1):.1f} ms per request, "
          f"{eng['desk_requests'] / max(calls, 1):.1f} requests per model call")
    calls = sum(1 for r in (tmp / "local" / "journal.jsonl").read_text().splitlines()
                if '"type":"call"' in r and SMOL in r)
    api_calls = calls / P  # every call here is to a local model; a real large tier is a share of them
    per_problem = (local_s) / P
    print(f"projection: one node solves a problem in {per_problem:.1f} s (local engine); a problem makes "
          f"{api_calls:.1f} model calls; at --rpm {a.rpm:g}, if all of them went to the API (an upper bound):")
    for n in (1, 2, 4, 8, 16, 64):
        demand = 60 * n / per_problem  # problems per minute the nodes could solve
        cap = a.rpm / api_calls
        print(f"  {n:>3} nodes: {min(demand, cap):8.1f} problems/min "
              f"({'rate limit binds' if cap < demand else 'nodes bind'})")


if __name__ == "__main__":
    main()
