"""Validators for option values, used as typer callbacks (a bad value is a usage error, exit 2).

Integers with a plain lower bound use typer's own ``min=``; these callbacks cover what ``min=``
cannot: floats that must be finite (``nan`` passes every comparison), seeds, and lists of names.

Examples
--------
>>> positive_hours(12.0)
12.0
>>> try:
...     positive_hours(float("nan"))
... except typer.BadParameter as exc:
...     print(exc)
must be a positive, finite number of hours, got nan
>>> model_names("cpn, gbdt", ("cpn", "gbdt"))
('cpn', 'gbdt')
"""

from __future__ import annotations

import math

import typer

__all__ = ["positive_hours", "fraction", "learning_rate", "seed", "model_names", "choice", "MAX_SEED"]

MAX_SEED = 2**32 - 1  # numpy's SeedSequence takes any non-negative int; LightGBM/XGBoost take 32 bits


def positive_hours(value: float | None) -> float | None:
    """A horizon, window or silencing period: finite and > 0 (None passes: the option is unset)."""
    if value is not None and not (math.isfinite(value) and value > 0):
        raise typer.BadParameter(f"must be a positive, finite number of hours, got {value:g}")
    return value


def fraction(value: float | None) -> float | None:
    """A fraction in [0, 1)."""
    if value is not None and not (math.isfinite(value) and 0 <= value < 1):
        raise typer.BadParameter(f"must be a fraction in [0, 1), got {value:g}")
    return value


def learning_rate(value: float | None) -> float | None:
    """A learning rate: finite, in (0, 10]."""
    if value is not None and not (math.isfinite(value) and 0 < value <= 10):
        raise typer.BadParameter(f"must be a positive, finite learning rate up to 10, got {value:g}")
    return value


def seed(value: int | None) -> int | None:
    """A random seed: 0 to 2**32 - 1 (what every engine accepts)."""
    if value is not None and not 0 <= value <= MAX_SEED:
        raise typer.BadParameter(f"must be between 0 and {MAX_SEED}, got {value}")
    return value


def model_names(text: str, known, option: str = "--models") -> tuple[str, ...]:
    """Comma-separated names, each one of ``known``, at least one, none repeated."""
    names = tuple(m.strip() for m in text.split(",") if m.strip())
    unknown = [m for m in names if m not in known]
    if unknown:
        raise typer.BadParameter(f"unknown model(s) {', '.join(map(repr, unknown))}; choose from "
                                 f"{', '.join(known)}", param_hint=option)
    if not names:
        raise typer.BadParameter(f"name at least one of {', '.join(known)}", param_hint=option)
    if len(set(names)) != len(names):
        raise typer.BadParameter(f"a model is named twice in {text!r}", param_hint=option)
    return names


def choice(value: str, allowed, option: str) -> str:
    """``value`` if it is one of ``allowed``, else a usage error listing them."""
    if value not in allowed:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(allowed)}", param_hint=option)
    return value
