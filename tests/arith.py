"""Small arithmetic benchmarks for eval runs on SmolLM2: a jsonl file and the run config over it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

SMOL = "local/smollm2-135m"


def write_problems(path: Path, problems: Sequence[tuple[str, str]]) -> Path:
    """One ``{"question", "answer", "uid": "qI"}`` object per line."""
    path.write_text("\n".join(json.dumps({"question": q, "answer": a, "uid": f"q{i}"})
                              for i, (q, a) in enumerate(problems)) + "\n")
    return path


def smol_config(data: Path, defaults: dict[str, Any], **kw: Any):
    """An EvalConfig over ``data`` with SmolLM2 as both tiers (the large one priced), ``defaults``
    and then ``kw`` on top."""
    from cope.eval.runner import EvalConfig

    base = dict(benchmark=f"jsonl:{data}", small=SMOL, large=SMOL, large_price_as="gpt-4o-mini",
                mapping={"id": "uid"})
    base.update(defaults)
    base.update(kw)
    return EvalConfig(**base)
