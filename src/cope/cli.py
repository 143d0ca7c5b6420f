"""The ``cope`` command: argument parsing and display only; work is in the library."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Sequence

from .argtypes import POSITIVE, bounded_float, bounded_int
from .errors import ConfigError, CopeError


class _Formatter(argparse.HelpFormatter):
    """Help text wrapped at spaces only: a method name such as cope-s3-noplan stays whole."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        import textwrap

        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # one line, not usage + traceback
        sys.stderr.write(f"cope: error: {message} (see '{self.prog} --help')\n")
        sys.exit(2)


# Largest vote a command line may ask for: each sample is a model call, and a typo (--n 10000) must
# not send thousands of requests to a paid API before anyone notices.
MAX_N = 64


_N = bounded_int(1, MAX_N)
_POS = POSITIVE
_TAU = bounded_float(0.0, 1.0)
_USD = bounded_float(0.0)
_SECONDS = bounded_float(0.0, open_lo=True)


def _add_endpoint_args(p: argparse.ArgumentParser) -> None:
    """Each model's own endpoint: the small one on the user's machine, the large one at an API."""
    for role in ("small", "large"):
        p.add_argument(f"--{role}-base-url", default=None, metavar="URL",
                       help=f"base URL of the {role} model only (wins over --base-url)")
        p.add_argument(f"--{role}-key-env", default=None, metavar="VAR",
                       help=f"environment variable holding the {role} model's API key (its name, not the key)")
    # any other tier a cascade file's stages name (--cascade): its model, and its own endpoint
    p.add_argument("--tier", action="append", default=[], metavar="NAME=SPEC",
                   help="the model of a cascade file's tier NAME (repeat per tier), e.g. medium=openai/gpt-4o-mini")
    p.add_argument("--tier-base-url", action="append", default=[], metavar="NAME=URL",
                   help="base URL of tier NAME only")
    p.add_argument("--tier-key-env", action="append", default=[], metavar="NAME=VAR",
                   help="environment variable holding tier NAME's API key (its name, not the key)")


def _tier_objects(tiers: dict[str, dict[str, str]]) -> dict[str, Any]:
    from .models.endpoint import Endpoint

    return {name: Endpoint(**f) for name, f in tiers.items()}


def _tier_endpoints(args: argparse.Namespace) -> dict[str, dict[str, str]]:
    """``--tier NAME=SPEC`` with its ``--tier-base-url`` / ``--tier-key-env``, as endpoint fields per tier."""
    def pairs(option: str, values: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for v in values:
            name, sep, value = v.partition("=")
            if not sep or not name or not value:
                raise ConfigError(f"{option} takes NAME=VALUE, got '{v}'")
            if name in out:
                raise ConfigError(f"{option}: tier '{name}' is given twice")
            out[name] = value
        return out

    specs = pairs("--tier", args.tier)
    for name in specs:
        if name in ("small", "large"):
            raise ConfigError(f"--tier {name}=...: small and large are --{name}")
    tiers = {name: {"spec": spec} for name, spec in specs.items()}
    for option, key, values in (("--tier-base-url", "base_url", args.tier_base_url),
                                ("--tier-key-env", "key_env", args.tier_key_env)):
        for name, value in pairs(option, values).items():
            if name in ("small", "large"):
                raise ConfigError(f"{option} {name}=...: use --{name}-{option[len('--tier-'):]}")
            if name not in tiers:
                raise ConfigError(f"{option} {name}=...: give the tier's model too (--tier {name}=SPEC)")
            tiers[name][key] = value
    from .models.endpoint import Endpoint

    for name, fields_ in tiers.items():
        Endpoint(**fields_).validate(f"tier {name}")
    return tiers


def _build_parser() -> argparse.ArgumentParser:
    from .api import DEFAULT_LARGE, DEFAULT_SMALL
    from .benchmarks.registry import benchmark_usage
    from .methods import method_names

    p = _Parser(prog="cope", description="A small and a large LLM collaborating through plans (COPE).")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    s = sub.add_parser("solve", help="solve one problem with the cascade")
    s.add_argument("problem", nargs="?", help="problem text, '@FILE' to read a file, or '-' for stdin")
    s.add_argument("--task", default="math",
                   help="task family: math (default), code, open, agent; math-pot, math-exec run math programs")
    s.add_argument("--small", default=DEFAULT_SMALL, help=f"small model spec (default: {DEFAULT_SMALL})")
    s.add_argument("--large", default=DEFAULT_LARGE, help=f"large model spec (default: {DEFAULT_LARGE})")
    s.add_argument("--method", default="cope", help=f"cascade preset (default: cope): {method_names()}")
    s.add_argument("--cascade", default=None, metavar="FILE",
                   help="a cascade file (stages as data; see cope cascade show); replaces --method, --n and the taus")
    s.add_argument("--preset", default=None, metavar="FILE",
                   help="a preset file (from cope calibrate --write-preset); replaces --method, --n and the taus")
    s.add_argument("--n", type=_N, default=8, help=f"samples per voting stage, 1..{MAX_N} (default: 8)")
    s.add_argument("--tau1", type=_TAU, default=None,
                   help="stage-1 confidence threshold (default: the task's; math 0.75, code 1.0)")
    s.add_argument("--tau2", type=_TAU, default=None,
                   help="stage-2 confidence threshold (default: the task's; math 0.5, code 1.0)")
    s.add_argument("--seed", type=int, default=None, help="seed for every sampling call")
    s.add_argument("--max-tokens", type=_POS, default=512, help="cap per executor sample (default: 512)")
    s.add_argument("--prices", default=None, help="a TOML price file that overrides or adds prices")
    s.add_argument("--small-price-as", default=None, help="charge the small model at this model's price")
    s.add_argument("--large-price-as", default=argparse.SUPPRESS,
                   help="charge the large model at this model's price (default large: gpt-4o-mini)")
    s.add_argument("--base-url", default=None, help="base URL for openai/ models (else $OPENAI_BASE_URL)")
    _add_endpoint_args(s)
    s.add_argument("--threads", type=_POS, default=None, help="CPU threads for local models")
    s.add_argument("--timeout", type=_SECONDS, default=None,
                   help="seconds an API request may take before it is retried (default: 120)")
    s.add_argument("--max-perplexity", type=float, default=None,
                   help="open task: perplexity a stage's best candidate must reach at tau 0.5 (default: 1.7, measured)")
    s.add_argument("--tests", default=None, help="code task: visible tests (.py with asserts, or a .json list)")
    s.add_argument("--game", default=None, help="agent task: a TextWorld game SEED, KIND:SEED or FILE.z8")
    s.add_argument("--game-kind", default=None, help="agent task: cooking (default), coin_collector, treasure_hunter")
    s.add_argument("--level", type=_POS, default=None, help="agent task: game level (default: 1)")
    s.add_argument("--max-steps", type=_POS, default=50, help="agent task: step budget (default: 50)")
    s.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    s.add_argument("--quiet", action="store_true", help="no live progress on stderr")
    s.add_argument("--verbose", action="store_true", help="list every plan, near-identical ones too")

    e = sub.add_parser("eval", help="run methods over a benchmark into a run directory")
    e.add_argument("benchmark", help=benchmark_usage())
    e.add_argument("--method", nargs="+", default=None,
                   help=f"methods to run (default: cope): {method_names()}")
    e.add_argument("--cascade", nargs="+", default=[], metavar="FILE",
                   help="cascade files (see cope cascade show) to run as methods, named by their file names")
    e.add_argument("--preset", nargs="+", default=[], metavar="FILE",
                   help="preset files (from cope calibrate --write-preset) to run as methods, by their names")
    e.add_argument("--limit", type=_POS, default=None, help="first N problems")
    e.add_argument("--seed", type=int, default=1234, help="benchmark and sampling seed (default: 1234)")
    e.add_argument("--out", default=None, help="run directory (default: runs/BENCHMARK)")
    e.add_argument("--resume", action="store_true", help="continue the run in --out without repeating calls")
    e.add_argument("--record", action="store_true", help="run every stage for every problem (for calibrate)")
    e.add_argument("--max-usd", type=_USD, default=None, help="stop before the spend would exceed this")
    e.add_argument("--small", default=DEFAULT_SMALL)
    e.add_argument("--large", default=DEFAULT_LARGE)
    e.add_argument("--large-price-as", default=argparse.SUPPRESS)
    e.add_argument("--small-price-as", default=None)
    e.add_argument("--n", type=_N, default=8, help=f"samples per voting stage, 1..{MAX_N} (default: 8)")
    e.add_argument("--tau1", type=_TAU, default=None, help="default: the task's (math 0.75, code 1.0)")
    e.add_argument("--tau2", type=_TAU, default=None, help="default: the task's (math 0.5, code 1.0)")
    e.add_argument("--max-tokens", type=_POS, default=512)
    e.add_argument("--concurrency", type=_POS, default=1, help="problems in flight at once (default: 1)")
    e.add_argument("--prices", default=None)
    e.add_argument("--base-url", default=None, help="base URL for both models when served (else $OPENAI_BASE_URL)")
    _add_endpoint_args(e)
    e.add_argument("--timeout", type=_SECONDS, default=None,
                   help="seconds an API request may take before it is retried (default: 120)")
    e.add_argument("--map", default=None, help="jsonl field mapping, e.g. text=problem,reference=answer,id=uid")
    e.add_argument("--task", default=None,
                   help="task family for jsonl: benchmarks (default: math); math-pot or math-exec for any math one")
    e.add_argument("--max-steps", type=_POS, default=50, help="textworld: step budget per episode (default: 50)")
    e.add_argument("--frugal-train", default=None, help="run directory to train the frugal method's scorer on")
    e.add_argument("--no-cache", action="store_true", help="do not use the cross-run call cache")
    e.add_argument("--rpm", type=_SECONDS, default=None, help="at most this many requests per minute to each API model")
    e.add_argument("--tpm", type=_SECONDS, default=None,
                   help="at most this many tokens per minute to each API model (prompt plus max tokens)")
    e.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: this process (default); ray: problems spread over Ray workers (the [ray] extra)")
    e.add_argument("--address", default=None,
                   help="ray: the cluster to join (auto, HOST:PORT, ray://HOST:PORT; default: start one here)")
    e.add_argument("--workers", type=_POS, default=None, help="ray: solving workers (default: CPUs / --worker-cpus)")
    e.add_argument("--worker-cpus", type=_SECONDS, default=1.0, help="ray: CPUs each worker holds (default: 1)")
    e.add_argument("--quiet", action="store_true")

    cal = sub.add_parser("calibrate", help="choose thresholds (and stages) from a recorded run")
    cal.add_argument("dir")
    g = cal.add_mutually_exclusive_group(required=True)
    g.add_argument("--target-cost", type=_USD, help="USD per 1M problems")
    g.add_argument("--target-cost-ratio", type=_USD, help="fraction of the run's 'large' cost, e.g. 0.6")
    g.add_argument("--target-accuracy", type=_TAU, help="fraction, e.g. 0.6")
    cal.add_argument("--method", default="cope", help="the recorded three-stage method to replay (default: cope)")
    cal.add_argument("--n", type=_N, default=None, help="replay with the first N samples per stage")
    cal.add_argument("--stages", default=None,
                     help="stage subset ending in the last stage, e.g. 2,3 (default: all); 'auto' chooses among "
                          "every subset (1,2,3 / 1,3 / 2,3 for COPE)")
    cal.add_argument("--write-preset", default=None, metavar="FILE",
                     help="write the chosen setting as a preset file for solve/eval/serve --preset")
    cal.add_argument("--write-cascade", default=None, metavar="FILE",
                     help="write the chosen setting as a cascade file (any number of stages; cope solve --cascade)")
    cal.add_argument("--name", default=None, help="the written preset's name (default: METHOD-calibrated)")
    cal.add_argument("--json", action="store_true")

    jd = sub.add_parser("judge", help="pairwise-judge an open-ended run's answers against a baseline method")
    jd.add_argument("dir")
    jd.add_argument("--judge", required=True, help="judge model spec, e.g. openai/gpt-4o or local/qwen2.5-coder-1.5b")
    jd.add_argument("--baseline", default="large", help="method to compare against (default: large)")
    jd.add_argument("--base-url", default=None)
    jd.add_argument("--threads", type=_POS, default=None)

    rep = sub.add_parser("report", help="Markdown + HTML report with plots from run directories")
    rep.add_argument("dirs", nargs="+")
    rep.add_argument("--out", default=None, help="where to write (default: the first run directory)")
    rep.add_argument("--price-as", default=None, metavar="MODEL",
                     help="what-if: price every tier above small as MODEL, from the recorded tokens")
    rep.add_argument("--traces", action="store_true",
                     help="embed every problem's samples in report.html, replayed from the journal (slower)")

    sh = sub.add_parser("show", help="one problem's trace from a run directory: plans, every sample, votes, costs")
    sh.add_argument("dir", help="a run directory (cope eval --out)")
    sh.add_argument("problem_id", help="the problem's id, as in the journal and the report")
    sh.add_argument("--method", action="append", default=[], help="only this method (repeat for more)")
    sh.add_argument("--full", action="store_true", help="every text in full, not one line each")
    sh.add_argument("--json", action="store_true", help="print one JSON object")

    from .serve.cli import add_arguments as add_serve_arguments

    srv = sub.add_parser("serve", help="serve COPE presets as an OpenAI-compatible endpoint")
    add_serve_arguments(srv)

    ks = sub.add_parser("keys", help="the server's API keys: spend read from its ledger")
    ks_sub = ks.add_subparsers(dest="keys_command", required=True)
    ku = ks_sub.add_parser("usage", help="every key's spend (total, today, this month) and held calls")
    ku.add_argument("--config", default=None, help="the server's TOML config (default: the built-in one)")
    ku.add_argument("--json", action="store_true", help="print one JSON object")

    cs = sub.add_parser("cascade", help="cascades as data: print a method's stages as a cascade file")
    cs_sub = cs.add_subparsers(dest="cascade_command", required=True)
    show = cs_sub.add_parser("show", help="print a method (or check and print a cascade file) as a cascade file")
    show.add_argument("name", help=f"a method ({method_names()}) or a cascade file")
    show.add_argument("--task", default="math", help="the task family whose thresholds it runs (default: math)")
    show.add_argument("--n", type=_N, default=8, help="samples per voting stage (default: 8)")

    d = sub.add_parser("doctor", help="check this install: build, CPU, models, sandbox, caches, keys")
    d.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    d.add_argument("--model", nargs="+", default=None,
                   help="time only these local models (default: every installed one)")
    d.add_argument("--timeout", type=_SECONDS, default=300, help="seconds a model's timed decode may take")

    m = sub.add_parser("models", help="list the named local models and the price table")
    m.add_argument("--prices", default=None, help="a TOML price file that overrides or adds prices")
    m.add_argument("--json", action="store_true", help="print JSON")
    return p


def _cmd_solve(args: argparse.Namespace) -> int:
    from .api import Cope, read_problem
    from .progress import Progress

    from .tasks import get_task

    if args.method == "frugal" and not args.preset:
        raise ConfigError("--method frugal needs a trained scorer, which cope solve cannot load; "
                          "use cope eval --method frugal --frugal-train RUN_DIR")
    task = get_task(args.task)
    if args.max_perplexity is not None:
        if args.task != "open":
            raise ConfigError("--max-perplexity is for --task open")
        from .tasks.open import OpenTask

        task = OpenTask(max_perplexity=args.max_perplexity)
    kwargs = {}
    if hasattr(args, "large_price_as"):
        kwargs["large_price_as"] = args.large_price_as or None
    from .solver import SolverConfig

    # thresholds left unset are the task family's own: the solver configuration resolves them
    c = Cope(
        small=args.small, large=args.large, solver=SolverConfig.from_args(args), small_price_as=args.small_price_as,
        prices=args.prices, base_url=args.base_url, n_threads=args.threads, timeout=args.timeout,
        small_base_url=args.small_base_url, large_base_url=args.large_base_url, small_key_env=args.small_key_env,
        large_key_env=args.large_key_env, tiers=_tier_objects(_tier_endpoints(args)), **kwargs,
    )
    if task.driver is not None:  # an episodic family (agent): a game is played, not a problem solved
        return _play(args, c, Progress)
    if args.game is not None:
        raise ConfigError("--game is for --task agent")
    if args.problem is None:
        raise ConfigError("give the problem text (or @FILE, or - for stdin)")
    if args.tests is not None and args.task != "code":
        raise ConfigError("--tests is for --task code")
    problem = read_problem(args.problem)
    if args.task == "code":
        from .tasks.code import code_problem

        problem = code_problem(problem, tests_file=args.tests)
    with Progress(enabled=not args.quiet, notes=c.pricing_notes) as progress:
        result = c.solve(problem, task=task, seed=args.seed, on_event=progress.on_event)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        from .progress import print_result

        print_result(result, n_stages=len(c.config_for(task).stages), large_price=c.models["large"].price,
                     verbose=args.verbose)
    return 0


def _play(args: argparse.Namespace, c, Progress) -> int:
    """``--task agent``: one TextWorld episode, a cascade per step."""
    from .agent.episode import run_game

    if args.game is None:
        raise ConfigError("--task agent needs --game SEED, KIND:SEED or a game file")
    if args.problem is not None:
        raise ConfigError("--task agent plays --game and takes no problem text")
    with Progress(enabled=not args.quiet, notes=c.pricing_notes) as progress:
        result = run_game(args.game, c, kind=args.game_kind, level=args.level, max_steps=args.max_steps,
                          seed=args.seed, on_event=progress.on_event)
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.summary())
    return 0


def _cmd_cascade(args: argparse.Namespace) -> int:
    """``cope cascade show NAME|FILE``: the stages a method runs for a family, as a file ``--cascade`` reads."""
    from pathlib import Path

    from .cascade_file import dump, load
    from .methods import METHODS
    from .solver import SolverConfig
    from .tasks import get_task

    if args.name in METHODS:
        config = SolverConfig(method=args.name, n=args.n).validate().cascade(get_task(args.task))
        title = f"method {args.name} for the {args.task} family (n = {args.n}); cope solve --cascade FILE runs it"
    elif Path(args.name).suffix == ".toml" or Path(args.name).exists():
        config, title = load(args.name), f"cascade file {args.name}"
    else:
        raise ConfigError(f"'{args.name}' is neither a method ({', '.join(METHODS)}) nor a cascade file")
    print(dump(config, title=title), end="")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from .models.local_files import NAMED_MODELS, is_installed
    from .pricing import PriceTable

    table = PriceTable.load(args.prices)
    local = [
        {"spec": f"local/{m.name}", "installed": is_installed(m), "size_bytes": m.size,
         "license": m.license, "description": m.description, "packages": sorted({c.package for c in m.chunks})}
        for m in NAMED_MODELS.values()
    ]
    prices = [
        {"model": p.model, "input_per_1m": p.input_per_m, "output_per_1m": p.output_per_m,
         "source": p.source, "date": p.date}
        for p in table.prices.values()
    ]
    if args.json:
        print(json.dumps({"local_models": local, "prices": prices, "price_table": table.version}, indent=2))
        return 0
    print("Local models (free to run; tokens are counted):")
    for m in local:
        state = "installed" if m["installed"] else "NOT installed"
        print(f"  {m['spec']:<28} {state:<14} {m['size_bytes'] / 2**20:7.0f} MiB  {m['license']}  {m['description']}")
    print(f"\nPrices, USD per 1M tokens (table {table.version}):")
    for p in prices:
        print(f"  {p['model']:<20} in {p['input_per_1m']:>7.3f}  out {p['output_per_1m']:>7.3f}  ({p['source']}, {p['date']})")
    return 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import report, run_checks

    step = None if args.json else (lambda s: sys.stderr.write(f"doctor: {s} ...\n"))
    result = report(run_checks(args.model, timeout=args.timeout, on_step=step))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for c in result["checks"]:
            print(f"{c['status'].upper():<5} {c['name']:<13} {c['summary']}")
        print("doctor: everything the main job needs works" if result["ok"]
              else "doctor: something the main job needs is broken (FAIL above)")
    return 0 if result["ok"] else 1


def _cmd_eval(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .eval.runner import EvalConfig, run_eval

    mapping = None
    if args.map:
        try:
            mapping = dict(kv.split("=", 1) for kv in args.map.split(","))
        except ValueError:
            raise ConfigError(f"--map expects key=field pairs separated by commas, got '{args.map}'") from None
    # unset: the library's default for the large model (api.default_large_price_as); "": its own price
    price_kw = {"large_price_as": args.large_price_as or None} if hasattr(args, "large_price_as") else {}
    name = args.benchmark.replace("jsonl:", "").replace("/", "_")
    out = Path(args.out or f"runs/{name}")
    from .methods import METHODS, load_preset

    presets = {}
    for path in args.preset:
        preset = load_preset(path)
        if preset.name in presets or preset.name in METHODS:
            raise ConfigError(f"{path}: a method is already named '{preset.name}'; give the preset another name")
        presets[preset.name] = preset.to_dict()
    from .cascade_file import dump, load

    cascades = {}
    for path in args.cascade:
        config, label = load(path), Path(path).stem
        if label in presets or label in cascades or label in METHODS:
            raise ConfigError(f"{path}: a method is already named '{label}'; rename the file")
        cascades[label] = dump(config, title=f"from {Path(path).name}")  # kept in config.json: the run says what ran
    methods = (args.method or ([] if presets or cascades else ["cope"])) + list(presets) + list(cascades)
    cfg = EvalConfig(
        benchmark=args.benchmark, methods=methods, limit=args.limit, seed=args.seed, small=args.small,
        large=args.large, small_price_as=args.small_price_as, n=args.n, **price_kw,
        tau1=args.tau1, tau2=args.tau2, max_tokens=args.max_tokens, record=args.record,
        concurrency=args.concurrency, max_usd=args.max_usd, prices=args.prices, base_url=args.base_url,
        timeout=args.timeout, small_base_url=args.small_base_url, large_base_url=args.large_base_url,
        small_key_env=args.small_key_env, large_key_env=args.large_key_env, tiers=_tier_endpoints(args) or None,
        mapping=mapping, task=args.task, frugal_train=args.frugal_train, max_steps=args.max_steps,
        rpm=args.rpm, tpm=args.tpm, extra={**({"presets": presets} if presets else {}), **({"cascade_files": cascades} if cascades else {})},
    )
    engine = None
    if args.engine == "ray":
        from .eval.distributed import RayEngine

        engine = RayEngine(address=args.address, workers=args.workers, worker_cpus=args.worker_cpus)
    elif args.address or args.workers:
        raise ConfigError("--address and --workers go with --engine ray")
    summary = run_eval(cfg, out, resume=args.resume, use_cache=not args.no_cache, progress=not args.quiet,
                       engine=engine)
    for m, v in summary["methods"].items():
        if v["accuracy"] is None:
            acc = "accuracy -  (no reference: see cope judge)"
        else:
            lo, hi = v["accuracy_ci95"]
            acc = f"accuracy {100 * v['accuracy']:5.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]"
        print(f"{m:<15} {v['problems']:>4} problems  {acc}  ${v['cost_usd_per_1m']:,.2f} per 1M problems")
    inv = summary["this_invocation"]
    print(f"run directory {out}: {inv['real_calls']} model calls made, {inv['cached_calls']} answered from "
          f"journal/cache, ${inv['spent_usd']:.6f} spent; report: cope report {out}")
    if eng := inv.get("engine"):
        print(f"engine ray: {eng['workers']} workers on {len(eng['nodes'])} node(s), started in "
              f"{eng['startup_s']:.1f} s; {eng['rate_waited_s']:.1f} s waited for rate limits, "
              f"{eng['rate_pauses']} pause(s) for a 429")
    for note in summary["pricing_notes"]:
        print(f"note: {note}")
    if inv.get("unanswered_in_flight"):
        sys.stderr.write(f"cope: {inv['unanswered_in_flight']} priced call(s) were in flight when the run last stopped; "
                         f"the API may have billed them: counted against --max-usd at their worst case "
                         f"(${inv['unanswered_in_flight_usd']:.6f}), and sent again\n")
    if inv.get("failed"):
        first = inv["first_error"]
        sys.stderr.write(f"cope: {inv['failed']} of {inv['attempted']} (method, problem) pairs failed, journaled as "
                         f"errors (--resume tries them again); first: {first['method']} on {first['problem_id']}: "
                         f"{first['error']}\n")
    if "stopped" in summary:
        sys.stderr.write(f"cope: {summary['stopped']}; continue with: cope eval {args.benchmark} --out {out} --resume\n")
        return 3
    if inv.get("attempted") and not inv.get("succeeded"):
        return 4  # nothing succeeded: a script must not read this run as done
    return 0


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .eval.replay import calibrate, preset_from_calibration

    stages: tuple[int, ...] | str | None
    if args.stages is None or args.stages == "auto":
        stages = args.stages
    else:
        try:
            stages = tuple(int(x) for x in args.stages.split(","))
        except ValueError:
            raise ConfigError(f"--stages expects numbers like 1,2,3 or 'auto', got '{args.stages}'") from None
    r = calibrate(Path(args.dir), target_cost=args.target_cost, target_accuracy=args.target_accuracy,
                  target_cost_ratio=args.target_cost_ratio, method=args.method, n=args.n, stages=stages)
    if args.write_preset and "thresholds" in r:
        raise ConfigError(f"a preset file holds a three-stage method; {args.method} has {len(r['policies'][0])} "
                          "stages: use --write-cascade FILE")
    if args.write_cascade:
        from .eval.replay import cascade_from_calibration

        try:
            Path(args.write_cascade).write_text(cascade_from_calibration(r))
        except OSError as exc:
            raise ConfigError(f"cannot write {args.write_cascade}: {exc.strerror or exc}") from None
    if args.write_preset:
        preset = preset_from_calibration(r, args.name or f"{args.method}-calibrated")
        target = next(f"--{k.replace('_', '-')} {v:g}" for k, v in (
            ("target_cost", args.target_cost), ("target_cost_ratio", args.target_cost_ratio),
            ("target_accuracy", args.target_accuracy)) if v is not None)
        command = (f"cope calibrate {args.dir} --method {args.method} --stages {args.stages or '1,2,3'} {target}"
                   + (f" --n {args.n}" if args.n else "") + f" --name {preset.name} --write-preset {args.write_preset}")
        try:
            Path(args.write_preset).write_text(preset.to_toml(
                f"A cascade setting chosen by cope calibrate from a recorded run:\n{command}"))
        except OSError as exc:
            raise ConfigError(f"cannot write {args.write_preset}: {exc.strerror or exc}") from None
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    print(f"frontier over {r['problems']} recorded problems of {r['method']} (n={r['n']}, "
          f"stages {' or '.join(','.join(map(str, p)) for p in r['policies'])}):")
    n_stage = "thresholds" in r  # a cascade of another length: one threshold per deciding stage
    if n_stage:
        print(f"  {'stages':>9} {'thresholds':>17} {'accuracy':>9} {'USD/1M':>10}")
        for p in r["frontier"]:
            taus = ",".join(f"{t:.2f}" for t in p["thresholds"]) or "-"
            print(f"  {','.join(map(str, p['stages'])):>9} {taus:>17} {100 * p['accuracy']:8.1f}% "
                  f"{p['cost_usd_per_1m']:10.2f}")
    else:
        print(f"  {'stages':>6} {'tau1':>5} {'tau2':>5} {'accuracy':>9} {'USD/1M':>10}")
        for p in r["frontier"]:
            print(f"  {','.join(map(str, p['stages'])):>6} {p['tau1']:5.2f} {p['tau2']:5.2f} "
                  f"{100 * p['accuracy']:8.1f}% {p['cost_usd_per_1m']:10.2f}")
    if r["target_cost_usd_per_1m"] is not None:
        print(f"target: at most ${r['target_cost_usd_per_1m']:.2f} per 1M problems")
    lo, hi = r["accuracy_ci95"]
    clo, chi = r["cost_usd_per_1m_ci95"]
    setting = (f"thresholds {','.join(f'{t:.2f}' for t in r['thresholds']) or '-'}" if n_stage
               else f"--tau1 {r['tau1']:.2f} --tau2 {r['tau2']:.2f}")
    print(f"choice: stages {','.join(map(str, r['stages']))} {setting}: "
          f"accuracy {100 * r['accuracy']:.1f}% "
          f"[{100 * lo:.1f}, {100 * hi:.1f}], ${r['cost_usd_per_1m']:.2f} per 1M problems [{clo:.2f}, {chi:.2f}]; "
          f"stops per stage: " + ", ".join(f"{100 * f:.0f}%" for f in r["stop_fraction"]))
    cv = r["cross_validated"]
    if cv:
        lo, hi = cv["accuracy_ci95"]
        clo, chi = cv["cost_usd_per_1m_ci95"]
        print(f"expected on new problems ({cv['folds']}-fold, setting chosen without the scored problems): "
              f"accuracy {100 * cv['accuracy']:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}], "
              f"${cv['cost_usd_per_1m']:.2f} per 1M problems [{clo:.2f}, {chi:.2f}]")
    lg = r.get("large")
    if lg:
        head = f"large alone on these problems: {100 * lg['accuracy']:.1f}% at ${lg['cost_usd_per_1m']:.2f} per 1M"
        if lg["settings_that_beat_it"]:
            c = lg["cheapest_that_beats_it"]
            print(f"{head}; {lg['settings_that_beat_it']} frontier setting(s) reach its accuracy for less "
                  f"(the cheapest: {100 * c['accuracy']:.1f}% at ${c['cost_usd_per_1m']:.2f})")
        else:
            print(f"{head}; no setting reaches its accuracy (the best is {100 * lg['best_accuracy']:.1f}%): "
                  "here the large model alone beats every threshold setting")
    if args.write_preset:
        print(f"wrote {args.write_preset}: use it with cope solve/eval/serve --preset {args.write_preset}")
    if args.write_cascade:
        print(f"wrote {args.write_cascade}: use it with cope solve/eval --cascade {args.write_cascade}")
    return 0


def _cmd_judge(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .eval.judging import judge_run

    r = judge_run(Path(args.dir), args.judge, args.baseline, base_url=args.base_url, n_threads=args.threads)
    for name, w in r["win_rates"].items():
        lo, hi = w["adjusted_ci95"]
        print(f"{name}: {w['wins']}/{w['ties']}/{w['losses']} (win/tie/loss) of {w['n']}; "
              f"ties as half: {100 * w['adjusted_win_rate']:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]")
    print(f"{r['judged_now']} pair(s) judged now; verdicts are in {args.dir}/journal.jsonl")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .eval.report import write_report

    paths = write_report([Path(d) for d in args.dirs], Path(args.out) if args.out else None,
                         price_as=args.price_as, traces=args.traces)
    print(f"wrote {paths['markdown']} and {paths['html']}")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .eval.show import render, trace

    t = trace(Path(args.dir), args.problem_id, args.method or None)
    print(json.dumps(t, indent=2, default=str) if args.json else render(t, full=args.full))
    return 0


def _cmd_keys(args: argparse.Namespace) -> int:
    from .serve import load_config
    from .serve.usage import key_usage, render

    report = key_usage(load_config(args.config))
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from .serve.cli import serve

    return serve(args)


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    args = _build_parser().parse_args(argv)
    import warnings

    # a library warning (sandbox fallback, a repaired journal) is one line on the terminal, not a source excerpt
    warnings.formatwarning = lambda message, category, *_a, **_k: f"cope: warning: {message}\n"
    try:
        handler = {"solve": _cmd_solve, "eval": _cmd_eval, "calibrate": _cmd_calibrate,
                   "report": _cmd_report, "judge": _cmd_judge, "serve": _cmd_serve, "models": _cmd_models, "keys": _cmd_keys,
                   "doctor": _cmd_doctor, "cascade": _cmd_cascade, "show": _cmd_show}[args.command]
        return handler(args)
    except CopeError as exc:
        sys.stderr.write(f"cope: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("cope: interrupted\n")
        return 130
    except OSError as exc:  # the machine, not the input: a full disk, a vanished directory
        where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
        sys.stderr.write(f"cope: error: {exc.strerror or exc}{where}\n")
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
