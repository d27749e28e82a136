"""Value types of the command line (argparse `type=` callables): non-negative and positive numbers.

Shared by `apt/cli.py` and the options dataclasses that declare their own flags
(`apt/training/options.py`), so both reject bad values with the same message.
"""

from __future__ import annotations

import argparse
from typing import Any, Callable


def _non_negative(text: str, cast: Callable[[str], Any], what: str) -> Any:
    try:
        value = cast(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not value >= 0:  # also rejects nan
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def non_negative_int(text: str) -> int:
    return _non_negative(text, int, "an integer")


def non_negative_float(text: str) -> float:
    return _non_negative(text, float, "a number")


def positive_int(text: str) -> int:
    value = non_negative_int(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be >= 1, got 0")
    return value
