"""The ``cope`` command: argument parsing and display only; work is in the library."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

from .errors import CopeError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + traceback
        sys.stderr.write(f"{self.prog}: error: {message} (see '{self.prog} --help')\n")
        sys.exit(2)


def _build_parser() -> argparse.ArgumentParser:
    from .api import DEFAULT_LARGE, DEFAULT_SMALL

    p = _Parser(prog="cope", description="A small and a large LLM collaborating through plans (COPE).")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    s = sub.add_parser("solve", help="solve one problem with the cascade")
    s.add_argument("problem", help="problem text, '@FILE' to read a file, or '-' for stdin")
    s.add_argument("--task", default="math", help="task family (default: math)")
    s.add_argument("--small", default=DEFAULT_SMALL, help=f"small model spec (default: {DEFAULT_SMALL})")
    s.add_argument("--large", default=DEFAULT_LARGE, help=f"large model spec (default: {DEFAULT_LARGE})")
    s.add_argument("--method", default="cope", help="cascade preset: cope, large, small (default: cope)")
    s.add_argument("--n", type=int, default=8, help="samples per voting stage (default: 8)")
    s.add_argument("--tau1", type=float, default=0.75, help="stage-1 consensus threshold (default: 0.75)")
    s.add_argument("--tau2", type=float, default=0.5, help="stage-2 consensus threshold (default: 0.5)")
    s.add_argument("--seed", type=int, default=None, help="seed for every sampling call")
    s.add_argument("--max-tokens", type=int, default=512, help="cap per executor sample (default: 512)")
    s.add_argument("--prices", default=None, help="a TOML price file that overrides or adds prices")
    s.add_argument("--small-price-as", default=None, help="charge the small model at this model's price")
    s.add_argument("--large-price-as", default=argparse.SUPPRESS,
                   help="charge the large model at this model's price (default large: gpt-4o-mini)")
    s.add_argument("--base-url", default=None, help="base URL for openai/ models (else $OPENAI_BASE_URL)")
    s.add_argument("--threads", type=int, default=None, help="CPU threads for local models")
    s.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    s.add_argument("--quiet", action="store_true", help="no live progress on stderr")

    m = sub.add_parser("models", help="list the named local models and the price table")
    m.add_argument("--prices", default=None, help="a TOML price file that overrides or adds prices")
    m.add_argument("--json", action="store_true", help="print JSON")
    return p


def _cmd_solve(args: argparse.Namespace) -> int:
    from .api import Cope, read_problem
    from .progress import Progress

    kwargs = {}
    if hasattr(args, "large_price_as"):
        kwargs["large_price_as"] = args.large_price_as or None
    c = Cope(
        small=args.small, large=args.large, n=args.n, tau1=args.tau1, tau2=args.tau2,
        method=args.method, max_tokens=args.max_tokens, small_price_as=args.small_price_as,
        prices=args.prices, base_url=args.base_url, n_threads=args.threads, **kwargs,
    )
    problem = read_problem(args.problem)
    with Progress(enabled=not args.quiet, notes=c.pricing_notes) as progress:
        result = c.solve(problem, task=args.task, seed=args.seed, on_event=progress.on_event)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        from .display import print_result

        print_result(result, n_stages=len(c.config.stages))
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


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    args = _build_parser().parse_args(argv)
    try:
        if args.command == "solve":
            return _cmd_solve(args)
        return _cmd_models(args)
    except CopeError as exc:
        sys.stderr.write(f"cope: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("cope: interrupted\n")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
