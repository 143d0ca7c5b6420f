"""Replay speed: 100 threshold pairs x 500 recorded problems, vectorized vs a Python loop.

The recorded arrays are synthetic (random confidences, correctness and
costs with the shapes a 3-stage recording has); the code timed is the
replay used by `cope calibrate`. Target: the sweep in under 1 second.

    .venv/bin/python bench/bench_replay.py [--problems 500] [--grid 10]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from cope.eval.replay import Recorded, sweep


def loop_replay(rec: Recorded, t1s, t2s):
    out = np.zeros((len(t1s), len(t2s)))
    for i, t1 in enumerate(t1s):
        for j, t2 in enumerate(t2s):
            total = 0.0
            for p in range(len(rec.ids)):
                if rec.conf[p, 0] >= t1:
                    total += rec.correct[p, 0]
                elif rec.conf[p, 1] >= t2:
                    total += rec.correct[p, 1]
                else:
                    total += rec.correct[p, 2]
            out[i, j] = total / len(rec.ids)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problems", type=int, default=500)
    ap.add_argument("--grid", type=int, default=10)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    P = a.problems
    rec = Recorded(ids=[str(i) for i in range(P)], conf=rng.integers(0, 9, size=(P, 3)) / 8,
                   correct=rng.random((P, 3)) < 0.6, cost=rng.random((P, 3)) * 1e-4,
                   plan_cost=np.zeros((P, 3)), n=8)
    grid = np.linspace(0, 1, a.grid)
    t0 = time.perf_counter()
    res = sweep(rec, grid, grid)
    t_vec = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = loop_replay(rec, grid, grid)
    t_loop = time.perf_counter() - t0
    assert np.allclose(ref, res["accuracy"])
    print(f"{a.grid * a.grid} threshold pairs x {P} problems")
    print(f"  vectorized sweep : {t_vec * 1000:8.2f} ms (target < 1000 ms)")
    print(f"  python loop      : {t_loop * 1000:8.2f} ms")
    print(f"  speed-up         : {t_loop / t_vec:8.1f}x")


if __name__ == "__main__":
    main()
