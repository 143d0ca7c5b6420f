"""`cope solve` with the default pair vs the large model alone, on GSM-style problems.

For each problem: wall time, large-model tokens (prompt / completion) and cost
at the large model's price, for COPE and for the large model solving alone
(greedy, no plan), run side by side in this process. Prints per-problem rows
and the totals' ratios. The problems are GSM8K-style word problems written
for this benchmark (answers checked by hand).

    .venv/bin/python bench/bench_solve.py [--problems 3] [--n 8] [--seed 1]
"""

from __future__ import annotations

import argparse
import time

from cope.api import Cope

PROBLEMS = [
    ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
     "How many clips did Natalia sell altogether in April and May?", "72"),
    ("A library has 5 shelves with 34 books each. It lends out 48 books and receives a donation of "
     "27 books. How many books does the library have now?", "149"),
    ("Sam buys 3 notebooks at $4 each and 2 pens at $1.50 each. He pays with a $20 bill. "
     "How much change does he get, in dollars?", "5"),
    ("A train travels 60 miles per hour for 2.5 hours and then 45 miles per hour for 2 hours. "
     "How many miles does it travel in total?", "240"),
    ("Lena reads 18 pages a day. Her book has 300 pages and she has already read 84 pages. "
     "How many more days does she need to finish the book?", "12"),
    ("A baker makes 4 trays of 15 cookies. He sells 70% of them and gives away 6. "
     "How many cookies are left?", "12"),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problems", type=int, default=3)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()

    from cope.tasks.math import MathTask

    task = MathTask()
    cope_ = Cope(n=a.n)
    alone = Cope(method="large")
    rows = []
    for i, (problem, ref) in enumerate(PROBLEMS[: a.problems], start=1):
        res = {}
        for name, c in (("cope", cope_), ("large", alone)):
            t0 = time.perf_counter()
            r = c.solve(problem, seed=a.seed)
            dt = time.perf_counter() - t0
            tok = r.tokens(who="large")
            res[name] = (r, dt, tok)
        rc, dc, tc = res["cope"]
        rl, dl, tl = res["large"]
        rows.append((dc, dl, tc, tl, rc.cost_usd, rl.cost_usd, task.is_correct(rc.answer, ref),
                     task.is_correct(rl.answer, ref)))
        print(f"#{i} ref {ref}: cope -> {rc.answer} (stage {rc.stage}, {dc:.0f} s, large tok "
              f"{tc['prompt']}+{tc['completion']}, ${rc.cost_usd:.6f}) | large alone -> {rl.answer} "
              f"({dl:.0f} s, large tok {tl['prompt']}+{tl['completion']}, ${rl.cost_usd:.6f})", flush=True)
    dc = sum(r[0] for r in rows)
    dl = sum(r[1] for r in rows)
    tc = sum(r[2]["prompt"] + r[2]["completion"] for r in rows)
    tl = sum(r[3]["prompt"] + r[3]["completion"] for r in rows)
    cc, cl = sum(r[4] for r in rows), sum(r[5] for r in rows)
    print(f"\n{len(rows)} problems; large model {alone.models['large'].spec}, "
          f"{'; '.join(cope_.pricing_notes) or 'list prices'}")
    print(f"  correct         : cope {sum(r[6] for r in rows)}/{len(rows)}, large alone {sum(r[7] for r in rows)}/{len(rows)}")
    print(f"  wall time       : cope {dc:.0f} s, large alone {dl:.0f} s, ratio {dc / dl:.2f}x")
    print(f"  large tokens    : cope {tc}, large alone {tl}, ratio {tc / max(tl, 1):.2f}x")
    print(f"  large cost (USD): cope {cc:.6f}, large alone {cl:.6f}, ratio {cc / cl if cl else float('nan'):.2f}x")


if __name__ == "__main__":
    main()
