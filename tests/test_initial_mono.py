"""The layer sweep's initial-monosemanticity section (reports/initial_mono.py) on fabricated sweep results: the
base model's measures at the swept layers, the sentence's rho equal to scipy's over the layers, a verdict
only with enough layers, the figure; and `decpo sweep --layers` probing sparse concepts at every swept layer."""

from __future__ import annotations

import numpy as np
from scipy import stats

from decpo.config import load_config
from decpo.experiment import recipes
from decpo.reports.initial_mono import base_at_layers, initial_mono_section, initial_mono_sentence
from decpo.reports.stats import Estimate
from decpo.reports.sweep_points import SweepPoint

from conftest import REPO

SITE = "mlp.up_proj"
LAYERS = list(range(10))
RNG = np.random.default_rng(1)
DEC = {L: 0.2 + 0.05 * L + float(RNG.normal(0, 0.01)) for L in LAYERS}
NEED = {L: float(32 - 3 * L + RNG.integers(0, 2)) for L in LAYERS}
# the effect grows with the base model's decorrelation
EFFECT = {L: 0.01 * L + float(RNG.normal(0, 0.005)) for L in LAYERS}


def _rows() -> list[dict]:
    rows = []
    for L in LAYERS:
        for model in ("base", "dpo-s0"):
            shift = 0.0 if model == "base" else 0.3  # not the base: never read
            rows.append(
                {
                    "model": model,
                    "layer": str(L),
                    "site": SITE,
                    "probe": "decorrelation",
                    "value": str(DEC[L] + shift),
                }
            )
        rows.append(
            {
                "model": "base",
                "layer": str(L),
                "site": SITE,
                "probe": "sparse_probe/neurons_needed/c",
                "value": str(NEED[L]),
            }
        )
        rows.append(
            {"model": "base", "layer": str(L), "site": "resid_post", "probe": "decorrelation", "value": "9"}
        )
    return rows


def _points(layers) -> list[SweepPoint]:
    return [
        SweepPoint(
            L,
            "reading: acc",
            "reading",
            Estimate(0.5, 0.4, 0.6, 3, "seeds"),
            Estimate(EFFECT[L], EFFECT[L] - 0.02, EFFECT[L] + 0.02, 3, "seeds x items"),
            "seeds x items",
        )
        for L in layers
    ]


def test_base_measures_at_the_swept_layers_only():
    base = base_at_layers(_rows(), SITE, [2, 5])
    assert base == {"decorrelation": {2: DEC[2], 5: DEC[5]}, "neurons needed (c)": {2: NEED[2], 5: NEED[5]}}


def test_the_sentence_gives_spearmans_rho_over_the_layers_and_a_verdict():
    effects = {p.value: p.vs_ref for p in _points(LAYERS)}
    sentence = initial_mono_sentence("decorrelation", DEC, effects, "reading: acc")
    rho = stats.spearmanr([DEC[L] for L in LAYERS], [EFFECT[L] for L in LAYERS]).statistic
    assert sentence.startswith(
        f"DecPO(L) - DPO on reading: acc against the base model's decorrelation at L: Spearman {rho:.2f} ["
    )
    assert sentence.endswith("over 10 layers: the effect depends on it.")
    few = initial_mono_sentence("decorrelation", {L: DEC[L] for L in LAYERS[:4]}, effects, "reading: acc")
    assert few.endswith("over 4 layers, too few layers to judge (fewer than 8).")


def test_the_section_and_its_figure_from_fabricated_sweep_results(tmp_path):
    lines = initial_mono_section(tmp_path, _rows(), SITE, LAYERS, _points(LAYERS))
    text = "\n".join(lines)
    assert (tmp_path / "layers_initial.png").stat().st_size > 0
    assert "![initial monosemanticity](layers_initial.png)" in text
    rho_need = stats.spearmanr([NEED[L] for L in LAYERS], [EFFECT[L] for L in LAYERS]).statistic
    assert f"base model's neurons needed (c) at L: Spearman {rho_need:.2f}" in text
    # no base probes at the swept layers: said, not a crash
    empty = initial_mono_section(tmp_path / "e", [], SITE, LAYERS, _points(LAYERS))
    assert "n/a: no probe of the base model at the swept layers" in "\n".join(empty)
    assert initial_mono_section(tmp_path / "n", _rows(), SITE, LAYERS, []) == []


def test_the_layer_sweep_probes_sparse_concepts_at_every_swept_layer(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(recipes, "_add_probes", lambda plan, cfg, *a, **k: seen.append(cfg))
    monkeypatch.setattr(recipes, "add_evals", lambda *a, **k: None)
    monkeypatch.setattr(recipes, "_run", lambda *a, **k: None)
    monkeypatch.setattr(recipes, "write_layers", lambda *a, **k: None)
    cfg = load_config(str(REPO / "configs" / "smoke.yaml"))
    recipes.sweep_layers(cfg, tmp_path / "a", [0, 1])
    assert seen[-1].experiment.sparse_probing_layers == [0, 1]
    off = cfg.replace(**{"experiment.sparse_probing_layers": []})
    recipes.sweep_layers(off, tmp_path / "b", [0, 1])
    assert seen[-1].experiment.sparse_probing_layers == []  # off stays off


def test_neurons_needed_spanning_decades_gets_a_log_axis(tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    from decpo.reports.initial_mono import plot_initial_mono

    scales = []
    monkeypatch.setattr(Axes, "set_xscale", lambda self, value, **kw: scales.append(value))
    effects = {L: Estimate(0.1 * L, 0.1 * L - 0.05, 0.1 * L + 0.05, 2, "seeds") for L in (0, 1, 2)}
    base = {"decorrelation": {0: 0.01, 1: 0.02, 2: 0.03}, "neurons needed (c)": {0: 1.0, 1: 16.0, 2: 1536.0}}
    assert plot_initial_mono(base, effects, "acc", tmp_path / "f.png").stat().st_size > 0
    assert scales == ["log"]  # the neurons-needed panel only
