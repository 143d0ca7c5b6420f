"""Argument types for the command lines (``cope`` and ``cope serve``): a bad value is one parser error line."""

from __future__ import annotations

import argparse
import math
from typing import Callable


def bounded_int(lo: int, hi: int | None = None, *, message: str | None = None) -> Callable[[str], int]:
    """A whole number in [lo, hi]; ``message`` replaces the out-of-range text (``{v}`` is the value)."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if v < lo or (hi is not None and v > hi):
            if message:
                raise argparse.ArgumentTypeError(message.format(v=v))
            raise argparse.ArgumentTypeError(f"must be {lo}..{hi}, got {v}" if hi is not None
                                             else f"must be at least {lo}, got {v}")
        return v
    parse.__name__ = "int"
    return parse


def bounded_float(lo: float, hi: float | None = None, *, open_lo: bool = False) -> Callable[[str], float]:
    """A finite number in [lo, hi] (or above ``lo`` when ``open_lo``)."""
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(v) or v < lo or (open_lo and v == lo) or (hi is not None and v > hi):
            span = f"in [{lo:g}, {hi:g}]" if hi is not None else (f"above {lo:g}" if open_lo else f"at least {lo:g}")
            raise argparse.ArgumentTypeError(f"must be a finite number {span}, got {text}")
        return v
    parse.__name__ = "float"
    return parse


PORT = bounded_int(0, 65535, message="a port is 0..65535 (0 picks a free one), got {v}")
POSITIVE = bounded_int(1)
