"""A small real SmolLM2 run shared by the tests that read one (cope show, the report's explorer)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

SMOL = "local/smollm2-135m"


@pytest.fixture(scope="session")
def small_run(tmp_path_factory) -> Path:
    """Two arithmetic problems, COPE (n = 2) and the large model alone, SmolLM2 as both tiers."""
    from cope.eval.runner import EvalConfig, run_eval

    tmp = tmp_path_factory.mktemp("small-run")
    data = tmp / "arith.jsonl"
    data.write_text("\n".join(json.dumps({"question": q, "answer": a, "uid": f"q{i}"}) for i, (q, a) in
                              enumerate([("What is 3 + 4?", "7"), ("What is 10 - 6?", "4")])) + "\n")
    out = tmp / "run"
    cfg = EvalConfig(benchmark=f"jsonl:{data}", methods=["cope", "large"], small=SMOL, large=SMOL,
                     large_price_as="gpt-4o-mini", n=2, max_tokens=32, mapping={"id": "uid"}, seed=3, tau1=1.0)
    run_eval(cfg, out, use_cache=False, progress=False)
    return out
