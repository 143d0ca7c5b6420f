"""The house's shape: no import circles, no probing of a task's protocol, registries that name everything.

These read the source (AST), so they fail the moment a module starts
importing one that imports it back, even through a function-level import.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"


def _modules() -> dict[str, Path]:
    out = {}
    for p in (SRC / "cope").rglob("*.py"):
        parts = p.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = p
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every cope module ``name`` imports, at any depth of its code (not its own parent packages)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        for t in targets:
            while t and t not in modules:
                t = t.rpartition(".")[0]
            if t.startswith("cope") and t != name and not name.startswith(t + "."):
                found.add(t)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_circle_even_through_function_level_imports():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert graph["cope.eval.runner"], "the import reader found nothing: it is broken, not the code clean"
    assert _cycles(graph) == []


def test_the_circle_check_sees_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_probes_a_task_with_getattr():
    """Task declares every attribute the engine reads; probing with getattr hides a missing one."""
    offenders = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr")
                    and node.args and "task" in ast.unparse(node.args[0]).lower()):
                offenders.append(f"{name}:{node.lineno} {ast.unparse(node)}")
    assert offenders == []


def test_cli_help_is_generated_from_the_registries():
    from cope.benchmarks.registry import BENCHMARKS, PREFIXES
    from cope.methods import METHODS, register

    out = subprocess.run([sys.executable, "-m", "cope", "eval", "--help"], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    text = " ".join(out.split())
    for name in METHODS:
        assert name in text
    for entry in [*BENCHMARKS.values(), *PREFIXES.values()]:
        assert entry.usage in text
    with pytest.raises(ValueError, match="registered twice"):
        register("cope")(lambda: None)  # type: ignore[arg-type, return-value]


def test_a_method_entry_declares_what_its_run_needs(tmp_path):
    from cope.errors import ConfigError
    from cope.eval.runner import EvalConfig, run_eval
    from cope.methods import METHODS

    assert set(METHODS["frugal"].needs) == {"frugal_train"} and METHODS["frugal"].wraps_task
    assert not METHODS["cope"].needs and METHODS["cope"].wraps_task is None
    with pytest.raises(ConfigError, match="--frugal-train"):
        run_eval(EvalConfig(benchmark="gsm", methods=["frugal"], limit=1), tmp_path / "r", progress=False)


def test_every_relative_import_names_a_module_that_exists():
    """A function-level import runs only when its code does: a moved module's stale one hides until then."""
    modules = _modules()
    missing = []
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
                if base not in modules:
                    missing.append(f"{name}:{node.lineno} {base}")
    assert missing == []


def test_every_plugin_reference_loads():
    from cope.errors import ConfigError
    from cope.methods import METHODS, REPLAYS
    from cope.plugins import resolve
    from cope.tasks import TASKS, get_task

    refs = [m.wraps_task for m in METHODS.values() if m.wraps_task] + [
        get_task(t).driver for t in TASKS if get_task(t).driver] + [r.build for r in REPLAYS.values()]
    assert len(refs) >= 4 and all(callable(resolve(r)) for r in refs)
    with pytest.raises(ConfigError, match="cannot be loaded"):
        resolve("cope.methods:no_such_function")


def test_every_declared_marker_is_used():
    import tomllib

    root = SRC.parent
    markers = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["markers"]
    text = "\n".join(p.read_text(encoding="utf-8") for p in (root / "tests").rglob("test_*.py"))
    for line in markers:
        name = line.split(":", 1)[0].strip()
        assert f"pytest.mark.{name}" in text, f"marker '{name}' is declared in pyproject.toml but no test uses it"
