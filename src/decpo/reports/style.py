"""One colour per method across every figure of a report (and helpers shared by the figures)."""

from __future__ import annotations

from decpo.names import BASE

METHOD_COLORS = {
    BASE: "#555555",
    "dpo": "#1f77b4",
    "decpo": "#d62728",
    "l1": "#2ca02c",
    "sft": "#9467bd",
    "simpo": "#ff7f0e",
}
DIFF_COLORS = {"dpo - base": "#1f77b4", "decpo - dpo": "#d62728"}
_EXTRA = ("#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f")


def method_color(method: str) -> str:
    """The method's fixed colour; a sweep label ``decpo-w0.1`` takes its method's; others a stable extra."""
    if method in METHOD_COLORS:
        return METHOD_COLORS[method]
    head = method.split("-", 1)[0]
    if head in METHOD_COLORS and head != method:
        return METHOD_COLORS[head]
    return _EXTRA[sum(map(ord, method)) % len(_EXTRA)]


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display)."""
    import matplotlib  # lazy: matplotlib loads slowly, and only figures need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: as above

    return plt
