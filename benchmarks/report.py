"""Shared output of the benchmarks: ratios as min / median / max, and the markdown block."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def spread(values: Sequence[float]) -> str:
    """``min / median / max`` of ratios over rounds, 3 decimals."""
    return f"{min(values):.3f} / {statistics.median(values):.3f} / {max(values):.3f}"


def emit(lines: list[str], write: str | None) -> None:
    """Print the markdown block; append it to ``write`` when given (e.g. benchmarks/RESULTS.md)."""
    text = "\n".join(lines) + "\n"
    print(text)
    if write:
        with open(write, "a", encoding="utf-8") as f:
            f.write("\n" + text)
