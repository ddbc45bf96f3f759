"""Names shared by several layers: activation sites, block lists as written, the label of the untrained model
and of a seed's model, and the "did you mean" of a name the user chose among several."""

import difflib
import re
from collections.abc import Iterable

# the output of the MLP's up projection: the paper's regularized and probed site
MLP_UP_PROJ = "mlp.up_proj"
# every activation site decpo can hook (see `decpo.models.hooks.site_module`)
SITES = (MLP_UP_PROJ, "mlp.hidden", "mlp.out", "resid_post")
# the label of the base (untrained) model in experiments, probes and reports
BASE = "base"
# the decorrelation penalty's forms and token selections (`decpo.functional` computes them)
DECORRELATION_FORMS = ("cosine", "paper", "code_literal")
TOKEN_SELECTIONS = ("last", "prompt_last", "completion_mean")


def split_label(label: str) -> tuple[str, int | None]:
    """A model's label as experiments write it, ``<method>-s<seed>``, split into method and seed: ``"dpo-s2"`` ->
    ``("dpo", 2)``, ``"decpo-w0.3-s0"`` -> ``("decpo-w0.3", 0)``, ``"base"`` -> ``("base", None)``."""
    head, sep, tail = label.rpartition("-s")
    if sep and head and tail.isdigit():
        return head, int(tail)
    return label, None


# one item of a block list: a block (negative from the end), or a range lo-hi with an optional :step
_LAYER_ITEM = re.compile(r"(-?\d+)(?:\s*-\s*(-?\d+)(?::(\d+))?)?")


def layer_items(spec: str) -> list[int]:
    """The blocks of ``"3,15,27"``, ``"0-29"``, ``"0-29:4"`` (every 4th) or ``"-1"`` as written (negative ones
    unresolved; `decpo.models.hooks.parse_layers` resolves them against a model); ValueError on other text."""
    layers: list[int] = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        match = _LAYER_ITEM.fullmatch(part)
        if match is None:
            raise ValueError(
                f"layers must be 'all' or comma-separated integers or ranges (0-29, 0-29:4), got {spec!r}"
            )
        lo, hi, step = match.groups()
        layers += [int(lo)] if hi is None else list(range(int(lo), int(hi) + 1, int(step or 1)))
    if not layers:
        raise ValueError(f"no layers in {spec!r}")
    return layers


def closest(name: object, choices: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The choice closest to ``name`` (difflib's ratio at least ``cutoff``), or None: the one place that
    picks the suggestion of every "did you mean"."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=cutoff)
    return close[0] if close else None


def did_you_mean(name: object, choices: Iterable[str], cutoff: float = 0.6) -> str:
    """``"; did you mean 'dpo'?"`` for the choice closest to ``name``, else ``""``: the tail of an error that
    names a choice the user got wrong."""
    match = closest(name, choices, cutoff)
    return f"; did you mean {match!r}?" if match is not None else ""
