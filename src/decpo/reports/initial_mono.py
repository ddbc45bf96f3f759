"""The seed's question on initial monosemanticity, from a layer sweep (`decpo sweep --layers`): does DecPO's
effect on the primary outcome at a regularized layer L (DecPO(L) - DPO, paired) depend on how monosemantic
the base model already is at L (its decorrelation, and sparse probing's neurons needed per concept)?

Pure apart from the figure: `base_at_layers` reads the base model's measures from the probe rows,
`initial_mono_lines` gives, per measure, Spearman's rho between it and the effect over the swept layers with
a 95% percentile bootstrap interval over the layers (`decpo.probes.proxy_check.proxy_tracking`, the same
statistic as the proxy-validity sentences), and `plot_initial_mono` draws the effect (with its interval)
against each measure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from decpo.names import BASE
from decpo.probes.plots import axis_scale
from decpo.probes.proxy_check import MIN_VERDICT, proxy_tracking
from decpo.reports.stats import Estimate
from decpo.reports.style import pyplot

NEEDED = "sparse_probe/neurons_needed/"
EFFECT = "effect"


def base_at_layers(rows: Sequence[Mapping], site: str, layers: Sequence[int]) -> dict[str, dict[int, float]]:
    """``{measure name: {layer: value}}`` of the base model at ``layers`` of ``site``: decorrelation and each
    concept's neurons needed (measures with no value at any of the layers are left out)."""
    out: dict[str, dict[int, float]] = {}
    for r in rows:
        if r["model"] != BASE or r["site"] != site or int(r["layer"]) not in layers:
            continue
        probe = r["probe"]
        if probe == "decorrelation":
            name = "decorrelation"
        elif probe.startswith(NEEDED):
            name = f"neurons needed ({probe[len(NEEDED) :]})"
        else:
            continue
        value = float(r["value"])
        if math.isfinite(value):
            out.setdefault(name, {})[int(r["layer"])] = value
    return out


def _tracking(measure: Mapping[int, float], effects: Mapping[int, Estimate]):
    """Spearman's rho of the effect against ``measure`` over the layers holding both."""
    rows = []
    for layer, value in measure.items():
        if layer in effects and math.isfinite(effects[layer].mean):
            rows.append({"model": BASE, "layer": layer, "site": "", "probe": "x", "value": value})
            rows.append(
                {"model": BASE, "layer": layer, "site": "", "probe": EFFECT, "value": effects[layer].mean}
            )
    return proxy_tracking(rows, EFFECT, proxy="x")


def initial_mono_sentence(
    name: str, measure: Mapping[int, float], effects: Mapping[int, Estimate], outcome: str
) -> str:
    """One sentence: the effect on ``outcome`` against the base model's ``name`` over the swept layers."""
    t = _tracking(measure, effects)
    head = f"DecPO(L) - DPO on {outcome} against the base model's {name} at L"
    if not math.isfinite(t.rho):
        return f"{head}: no correlation ({t.n_points} layer(s) with both, or one side constant)."
    text = f"{head}: Spearman {t.rho:.2f} [{t.lo:.2f}, {t.hi:.2f}] over {t.n_points} layers"
    if t.n_points < MIN_VERDICT:
        return f"{text}, too few layers to judge (fewer than {MIN_VERDICT})."
    return f"{text}: " + (
        "the effect depends on it." if t.tracks else "no clear dependence (interval includes 0)."
    )


def initial_mono_lines(
    base: Mapping[str, Mapping[int, float]], effects: Mapping[int, Estimate], outcome: str, figure: str | None
) -> list[str]:
    """The section of ``layers.md``; nothing without effects."""
    if not effects:
        return []
    lines = [
        "## Does the effect depend on the base model's initial monosemanticity?",
        "",
        "The seed's open question: at each swept layer L, DecPO(L) - DPO on the primary outcome (as in the "
        "sections above, paired by seed and item) against how monosemantic the base model already is at L: "
        "its decorrelation (higher: more monosemantic) and sparse probing's neurons needed per concept "
        "(fewer: more monosemantic), on the held-out prompts. Spearman's rho over the layers with a 95% "
        "percentile bootstrap interval over them (the interval of each effect is not propagated: a rough "
        "guide).",
        "",
    ]
    if figure:
        lines += [f"![initial monosemanticity]({figure})", ""]
    if not base:
        return [*lines, "n/a: no probe of the base model at the swept layers (`probes/probes.csv`).", ""]
    lines += [f"- {initial_mono_sentence(name, m, effects, outcome)}" for name, m in base.items()]
    return [*lines, ""]


def plot_initial_mono(
    base: Mapping[str, Mapping[int, float]], effects: Mapping[int, Estimate], outcome: str, path: Path
) -> Path | None:
    """One panel per measure: the effect (with its interval) against the base model's value, each point
    labelled with its layer; None when there is nothing to draw."""
    names = [n for n, m in base.items() if any(L in effects for L in m)]
    if not names:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        layers = sorted(L for L in base[name] if L in effects)
        xs, ests = [base[name][L] for L in layers], [effects[L] for L in layers]
        lows = [e.mean - e.low if e.has_interval else 0.0 for e in ests]
        highs = [e.high - e.mean if e.has_interval else 0.0 for e in ests]
        ax.errorbar(xs, [e.mean for e in ests], yerr=[lows, highs], fmt="o", capsize=3)
        for x, e, L in zip(xs, ests, layers, strict=True):
            ax.annotate(f"L{L}", (x, e.mean), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.axhline(0.0, color="grey", lw=0.8, ls=":")
        if axis_scale(xs) == "log":  # neurons needed runs from 1 to the layer's width
            ax.set_xscale("log")
        ax.set_xlabel(f"base model's {name} at L")
        ax.set_ylabel(f"DecPO(L) - DPO, {outcome}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def initial_mono_section(
    output_dir: Path, rows: Sequence[Mapping], site: str, layers: Sequence[int], outcomes
) -> list[str]:
    """The section of ``layers.md`` and its figure ``layers_initial.png``, from the probe rows and the layer
    sweep's primary-outcome points (`decpo.reports.sweep_points.SweepPoint`, ``value`` the layer)."""
    effects = {int(p.value): p.vs_ref for p in outcomes if p.vs_ref is not None}
    outcome = outcomes[0].measure if outcomes else ""
    base = base_at_layers(rows, site, layers)
    png = plot_initial_mono(base, effects, outcome, output_dir / "layers_initial.png")
    return initial_mono_lines(base, effects, outcome, png.name if png else None)
