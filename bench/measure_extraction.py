"""How the math reader treats samples that state no explicit answer, counted on a recording.

A sample with no ``\\boxed{}``, no ``#### X`` and no "answer is X" phrase
used to be answered by the last number anywhere in its text. The reader now
takes only a number that ends the text's last line (see
``cope.tasks.math_answers.extract_answer``). This counts, over every
executor sample in a run's journal (plans are capped lower and never read as answers), the samples that reach that fallback, how many of
them now get no answer, and how many of those were cut off at the token limit.
No model is called.

    .venv/bin/python bench/measure_extraction.py results/gsm
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from cope.eval.journal import read_journal
from cope.eval.rundir import load_config
from cope.tasks.math_answers import _GSM_RE, _after_last_marker, _last_box, extract_answer

_ANY_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def main(run: str) -> int:
    fallback = none = cut = 0
    executor_tokens = load_config(Path(run)).max_tokens  # plans (goals, guidelines) are capped lower
    for rec in read_journal(Path(run) / "journal.jsonl"):
        if rec.get("type") != "call" or rec.get("kind") not in ("generate", "generate_many"):
            continue
        if rec["params"].get("max_tokens") != executor_tokens:  # a plan, never read as an answer
            continue
        for gen in rec["generations"]:
            for c in gen["completions"]:
                text = c["text"]
                if _last_box(text) or _GSM_RE.search(text) or _after_last_marker(text):
                    continue
                if not _ANY_NUMBER.search(text):
                    continue
                fallback += 1
                if extract_answer(text) is None:
                    none += 1
                    cut += c.get("finish_reason") == "length"
    print(f"{run}: {fallback} executor samples fell back to a number; {none} of them get no answer now "
          f"({cut} of those cut off at the token limit)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "results/gsm"))
